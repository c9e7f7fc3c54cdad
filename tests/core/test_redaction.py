"""The one secret rule (lightning_track.redaction), table-driven: real key names from Hugging Face, Lightning,
W&B, OpenAI and service configs, both directions, as a nested key, inside a list, and on a command line."""

from __future__ import annotations

import pytest

from lightning_track.redaction import (
    KEY_OWNERS,
    REDACTED,
    SECRET_PAIRS,
    SECRET_WORDS,
    TOKENIZER_WORDS,
    Masker,
    command_secrets,
    is_secret_key,
    redact,
    redact_argv,
    redact_command,
    redact_env,
    secret_values,
    strip_url_credentials,
)

SECRETS = [
    # Hugging Face (TrainingArguments, from_pretrained, hub)
    "hub_token", "push_to_hub_token", "hf_token", "token", "use_auth_token", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "hfToken",
    # W&B / SwanLab / Comet / Neptune
    "WANDB_API_KEY", "wandb_key", "api_key", "SWANLAB_API_KEY", "COMET_API_KEY", "NEPTUNE_API_TOKEN",
    # OpenAI and other model APIs
    "OPENAI_API_KEY", "openai_key", "openaiApiKey", "ANTHROPIC_API_KEY", "apiKey", "x-api-key",
    # tokens, passwords, keys of every kind
    "access_token", "auth_token", "refresh_token", "bearer_token", "bearer", "id_token", "github_token", "bot_token",
    "password", "db_password", "passwd", "pwd", "passphrase", "client_secret", "secret", "secret_key",
    "AWS_SECRET_ACCESS_KEY", "aws_access_key_id", "private_key", "ssh_key", "credentials", "google_credentials",
    "authorization", "cookie", "session_id", "slack_webhook", "webhook_url", "sentry_dsn", "connection_string",
]
KEPT = [
    # Hugging Face TrainingArguments / generation / tokenizers
    "max_new_tokens", "max_tokens", "num_tokens", "pad_token_id", "eos_token_id", "bos_token_id", "pad_token",
    "eos_token", "mask_token", "unk_token", "additional_special_tokens", "tokenizer", "tokenizer_name",
    "tokenizer_name_or_path", "max_seq_tokens", "hub_model_id", "hub_strategy", "hub_private_repo", "push_to_hub",
    "model_name_or_path", "output_dir", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
    "max_length", "author", "authors",
    # Lightning
    "max_steps", "accumulate_grad_batches", "precision", "monitor", "save_top_k", "sort_key", "log_every_n_steps",
    # W&B
    "entity", "project", "run_name", "tags", "notes", "group", "job_type",
    # OpenAI
    "organization", "temperature", "top_p", "max_completion_tokens", "model",
    # data
    "text_key", "image_key", "label_key", "key", "keys", "passes", "secretary_count",
]


def test_the_tables_are_large_enough() -> None:
    assert len(SECRETS) >= 40 and len(KEPT) >= 40 and not set(SECRETS) & set(KEPT)


@pytest.mark.parametrize("name", SECRETS)
def test_a_secret_name_is_redacted_nested_in_a_list_and_on_the_command_line(name: str) -> None:
    assert is_secret_key(name)
    value = "s3cr3t-value-1234"
    config = {"outer": {"inner": {name: value, "lr": 0.1}}, "items": [{name: value}, "plain"]}
    assert redact(config) == {"outer": {"inner": {name: REDACTED, "lr": 0.1}}, "items": [{name: REDACTED}, "plain"]}
    option = name.replace("_", "-")
    for argv, shown in [(["--" + option, value], ["--" + option, REDACTED]),
                        ([f"--{name}={value}"], [f"--{name}={REDACTED}"]),
                        ([f"{name}={value}"], [f"{name}={REDACTED}"]),
                        ([f"model.{name}={value}"], [f"model.{name}={REDACTED}"]),
                        ([f"+{name}={value}"], [f"+{name}={REDACTED}"])]:
        assert redact_argv(["train.py", *argv, "--lr", "0.1"]) == ["train.py", *shown, "--lr", "0.1"]
    assert redact_env({name: value, "HOME": "/home/u"}) == {name: REDACTED, "HOME": "/home/u"}
    assert value not in redact_command(f"python train.py --{option} {value} --lr 0.1")


@pytest.mark.parametrize("name", KEPT)
def test_a_hyperparameter_name_is_kept_nested_in_a_list_and_on_the_command_line(name: str) -> None:
    assert not is_secret_key(name)
    config = {"outer": {"inner": {name: "gpt2-abc", "n": 5}}, "items": [{name: 5}]}
    assert redact(config) == config
    option = name.replace("_", "-")
    for argv in (["--" + option, "gpt2-abc"], [f"--{name}=5"], [f"{name}=5"], [f"model.{name}=5"]):
        assert redact_argv(["train.py", *argv]) == ["train.py", *argv]
    assert redact_env({name: "gpt2-abc"}) == {name: "gpt2-abc"}


def test_url_credentials_are_stripped_in_any_value() -> None:
    assert strip_url_credentials("see https://user:pw@host.example/x and ftp://a@b") == \
        "see https://***@host.example/x and ftp://***@b"
    assert redact({"db": "postgres://me:hunter22@db:5432/x", "list": ["https://u:p@h"]}) == \
        {"db": "postgres://***@db:5432/x", "list": ["https://***@h"]}
    assert redact_argv(["--data", "https://u:pw@h/d.json"]) == ["--data", "https://***@h/d.json"]
    assert strip_url_credentials("mail me at a@b.c, https://host/x") == "mail me at a@b.c, https://host/x"


def test_short_options_and_flags_are_not_read_as_secrets() -> None:
    # -p is a port or a patience as often as a password (documented); a secret flag with no value hides nothing
    assert redact_argv(["-p", "8080", "--use-auth-token", "--lr", "0.1"]) == \
        ["-p", "8080", "--use-auth-token", "--lr", "0.1"]


def test_pipeline_commands_keep_their_text_and_lose_their_secrets() -> None:
    cmd = "python train.py --api-key=sk-live-123456 --hf-token hf_abcdefgh --lr 0.1 > \"{a.run_dir}/x\""
    assert redact_command(cmd) == ("python train.py --api-key=***REDACTED*** --hf-token ***REDACTED*** --lr 0.1 > "
                                   "\"{a.run_dir}/x\"")
    nested = "exec lt-run -- \\\n    /bin/sh -c 'python t.py --wandb-key=w4ndb-key-1 --max_new_tokens 5'"
    assert command_secrets(nested) == {"w4ndb-key-1"}
    assert redact_command("python t.py --lr 0.1") == "python t.py --lr 0.1"


def test_secret_values_and_the_masker() -> None:
    found = secret_values({"model": {"hf_token": "hf_secretvalue", "max_new_tokens": 512}, "api_key": None},
                          argv=["t.py", "--wandb-key", "wandbsecret", "--password=abc"],
                          environ={"OPENAI_API_KEY": "sk-envsecret", "PWD": "/home/u", "PATH": "/bin"})
    assert found == {"hf_secretvalue", "wandbsecret", "sk-envsecret"}  # "abc": too short to mask in free text
    mask = Masker(found)
    assert mask("token hf_secretvalue and sk-envsecret, lr 512") == f"token {REDACTED} and {REDACTED}, lr 512"
    assert not Masker([]) and Masker([])("x") == "x"


def test_every_documented_word_compound_and_tokenizer_word_reads_as_documented() -> None:
    for word in SECRET_WORDS:
        assert is_secret_key(word) and is_secret_key(f"my_{word}_value") and is_secret_key(f"MY_{word.upper()}"), word
    for first, second in SECRET_PAIRS:
        assert is_secret_key(f"{first}_{second}") and is_secret_key(f"{first}{second.title()}"), (first, second)
    for owner in KEY_OWNERS:
        assert is_secret_key(f"{owner}_key") and not is_secret_key(f"{owner}_key_name"), owner
    for word in TOKENIZER_WORDS:
        assert not is_secret_key(f"{word}_token") and is_secret_key(f"{word}_auth_token"), word
