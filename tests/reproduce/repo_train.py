"""The training script of the repository a reproduce test makes (copied there as train.py): a seeded CPU fit
whose numbers depend on the committed data file, an uncommitted edit, and an untracked helper module."""

import sys
import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_track import RunLogger

warnings.filterwarnings("ignore", ".*does not have many workers.*")
LR = 0.1  # the test edits this line without committing
root = sys.argv[sys.argv.index("--root") + 1]
steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 12


class Model(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.layer(x).squeeze(-1) - y) ** 2).mean()
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def scale() -> float:
    try:
        import helper  # untracked in the test's repository
    except ImportError:
        return 1.0
    return helper.SCALE


L.seed_everything(7, verbose=False)
rows = [[float(v) for v in line.split()] for line in open("data.txt") if line.strip()]
x = torch.tensor([r[:2] for r in rows])
y = torch.tensor([r[2] for r in rows]) * scale()
loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
logger = RunLogger("toy", "repro", root=root, config={"data": "data.txt", "lr": LR}, sinks=(), system_interval=0)
trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, accelerator="cpu", enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False)
trainer.fit(Model(LR), loader)
print("run:", logger.run_dir)
