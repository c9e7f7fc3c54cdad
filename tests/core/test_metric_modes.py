"""Which way is better for a metric, from its name alone: the rule behind ``best`` in summary.json, lt compare's
winner and a sweep's ranking. Pure, one table."""

from __future__ import annotations

import pytest

from lightning_track.derived.digest import infer_mode

MAX = ["acc", "accuracy", "f1", "f1_macro", "auc", "auroc", "precision", "recall", "bleu", "sacrebleu", "rouge1",
       "rougeL", "rougeLsum", "map", "mAP", "map50", "iou", "mIoU", "dice", "r2", "ndcg", "mrr", "reward",
       "episode_reward", "mean_return", "score", "psnr", "ssim", "exact_match", "top1_acc", "acc5", "success_rate",
       "answer_acc", "power_score", "valAcc"]
MIN = ["loss", "losses", "error", "err", "top5_error", "error_rate", "perplexity", "ppl", "mse", "rmse", "mae",
       "wer", "cer", "nll", "bpb", "kl", "cross_entropy", "regret", "distance", "reward_loss", "acc_loss", "trainLoss"]
NONE = ["epoch", "step", "lr", "learning_rate", "lr-Adam", "lr-AdamW/pg1", "grad_norm", "grad_norm_total",
        "time", "step_time", "answer", "power", "stderr_lines", "heatmap_mean", "accelerator_count", "tokens_seen",
        "entropy", "temperature", "cancer_rate", "amount"]
PREFIXES = ["{}", "val/{}", "train/{}", "val_{}", "val_{}_epoch", "train/{}_step", "test/{}_epoch", "val/sub/{}"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_known_word_under_every_prefix(prefix: str) -> None:
    got = {name: infer_mode(prefix.format(name)) for name in MAX + MIN + NONE}
    want = {**dict.fromkeys(MAX, "max"), **dict.fromkeys(MIN, "min"), **dict.fromkeys(NONE)}
    if prefix != "{}":  # "val_epoch", "train/step_step" ... are no longer the bare counters
        got = {k: v for k, v in got.items() if k not in NONE[:10]}
        want = {k: v for k, v in want.items() if k not in NONE[:10]}
    assert {k: v for k, v in got.items() if v != want[k]} == {}


@pytest.mark.parametrize(("name", "mode"), [
    ("loss/val", "min"), ("acc/val", "max"),  # the leaf says nothing: the whole name decides
    ("val/loss/acc", "max"), ("val/acc/loss", "min"),  # the leaf decides first
    ("val/acc_step", "max"), ("train/loss_epoch", "min"), ("val/mAP@0.5", "max"), ("hits@10", "max"),
    ("train/epoch", None), ("trainer/global_step", None), ("lr-SGD", None),
])
def test_leaf_then_whole_name(name: str, mode: str | None) -> None:
    assert infer_mode(name) == mode
