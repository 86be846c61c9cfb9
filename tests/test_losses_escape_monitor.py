"""EscapeMonitor in a real Lightning run: class-logit NCMI on labels it cannot learn."""

import warnings

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from wsi_ncmi.losses import SeparationEscapeWarning, build_loss
from wsi_ncmi.losses.callbacks import EscapeMonitor


class _Noise(L.LightningModule):
    def __init__(self, loss_name: str) -> None:
        super().__init__()
        self.net = torch.nn.Linear(6, 4)
        self.criterion = build_loss(loss_name, num_classes=4)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.net(x), y).loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        return {"outputs": self.net(x), "targets": y}

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def _run(loss_name: str) -> tuple[EscapeMonitor, list[warnings.WarningMessage]]:
    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    x = 0.01 * torch.randn(64, 6, generator=g)  # next to no input: one shared output
    y = torch.tensor([0] * 36 + [1] * 6 + [2] * 10 + [3] * 12)  # labels independent of x
    loader = DataLoader(TensorDataset(x, y), batch_size=1, shuffle=True, generator=g)
    monitor = EscapeMonitor(4)
    trainer = L.Trainer(
        max_epochs=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[monitor],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_Noise(loss_name), loader, DataLoader(TensorDataset(x, y), batch_size=16))
    escapes = [w for w in caught if issubclass(w.category, SeparationEscapeWarning)]
    return monitor, escapes


def test_class_logit_ncmi_escapes_and_the_monitor_says_so():
    monitor, escapes = _run("ncmi")
    assert len(monitor.train_gamma) == 8
    assert monitor.train_gamma[-1] > 3 * monitor.train_gamma[0]
    assert all(c == 1.0 for c in monitor.val_classes)  # one shared output, one class
    assert monitor.reason is not None
    assert "ncmi_mil" in monitor.reason
    assert len(escapes) == 1  # warned once, not every epoch


def test_the_monitor_stays_quiet_for_ce():
    monitor, escapes = _run("ce")
    assert monitor.train_gamma == []  # CE keeps no Γ: nothing to watch
    assert monitor.reason is None
    assert not escapes


def test_the_monitor_stays_quiet_for_the_bounded_feature_head():
    # ncmi_mil's scores lie in [-1/T, 1/T]: its outputs cannot escape to a corner, so the
    # same unlearnable labels (one class predicted, Γ moving) are not reported as one.
    monitor, escapes = _run("ncmi_mil")
    assert monitor.train_gamma == []
    assert monitor.reason is None
    assert not escapes
