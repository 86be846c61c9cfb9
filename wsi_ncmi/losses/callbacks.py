"""Lightning callbacks: the epoch-end Q-step and the CMI/Γ/NCMI diagnostics.

They work on a :class:`~wsi_ncmi.losses.base.LossHost`: a LightningModule whose loss is the
attribute ``criterion`` and whose ``loss_inputs(batch)`` gives ``(outputs, targets)`` for
the Q-step pass. A module that is not a loss host needs a ``criterion`` attribute too, and
gets ``(pl_module(x), y)`` for a batch ``(x, y)``. The diagnostics read what
``validation_step`` returns, which must be a mapping with keys ``"outputs"`` (what the loss
takes) and ``"targets"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.base import ClassificationLoss, LossHost
from wsi_ncmi.losses.centroids import CentroidReport, effective_classes
from wsi_ncmi.losses.diagnostics import NCMIMetric
from wsi_ncmi.losses.epoch import update_centroids
from wsi_ncmi.losses.escape import SeparationEscapeWarning, escape_reason


def _loss_inputs(pl_module: L.LightningModule, batch: Any) -> tuple[Tensor, Tensor]:
    if isinstance(pl_module, LossHost):
        return pl_module.loss_inputs(batch)
    x, y = batch[0], batch[1]
    return pl_module(x), y


def _find_loss(pl_module: L.LightningModule) -> ClassificationLoss:
    loss = getattr(pl_module, "criterion", None)
    if not isinstance(loss, ClassificationLoss):
        raise AttributeError(
            f"{type(pl_module).__name__}.criterion must be a registered loss "
            f"(ClassificationLoss), got {type(loss).__name__}"
        )
    return loss


class CentroidUpdate(L.Callback):
    """Runs the closed-form Q-step over the training set, in eval mode, at each epoch end.

    The Q-step of an epoch runs when its training steps are done and *before* that epoch's
    validation pass (``on_validation_start`` after the epoch's last batch; at
    ``on_train_epoch_end`` when no validation follows). So the state that validation
    scores (weights, centroids, class means, feature centre) is the state the epoch's
    checkpoints hold, and the state a selected checkpoint brings to the test. The next
    epoch trains against the same centroids either way: only what validation sees moved.

    Does nothing for losses with ``needs_epoch_pass = False``, except the collapse check of
    EMA centroids. With ``warmup_epochs = 0`` (literal alternating algorithm) it also runs
    a Q-step before the first epoch. Logs ``centroids/min_distance`` and
    ``centroids/collapsed``; the reports are kept in :attr:`reports`.

    Args:
        num_classes: ``C``.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reports: list[CentroidReport] = []
        self._done_epoch: int | None = None

    def _run_pass(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        loss = _find_loss(pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            batches = (
                _loss_inputs(pl_module, trainer.strategy.batch_to_device(batch))
                for batch in trainer.train_dataloader  # type: ignore[union-attr]
            )
            report = update_centroids(loss, batches, epoch)
        finally:
            pl_module.train(was_training)
        if report is not None:
            self._record(pl_module, report)

    def _record(self, pl_module: L.LightningModule, report: CentroidReport) -> None:
        self.reports.append(report)
        if report.epoch >= 0:
            pl_module.log("centroids/min_distance", report.min_distance)
            pl_module.log("centroids/collapsed", float(report.collapsed))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Q-step before training when the schedule has no warm-up."""
        state = _find_loss(pl_module).centroid_state
        if state is not None and state.needs_initial_pass:
            self._run_pass(trainer, pl_module, epoch=-1)

    def _epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The epoch's Q-step (or EMA collapse check), once per epoch."""
        epoch = trainer.current_epoch
        if self._done_epoch == epoch:
            return
        self._done_epoch = epoch
        loss = _find_loss(pl_module)
        state = loss.centroid_state
        if loss.needs_epoch_pass:
            self._run_pass(trainer, pl_module, epoch)
        elif state is not None and state.mode == "ema":
            self._record(pl_module, state.check(epoch))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The Q-step of a finished training epoch, before its validation pass scores it."""
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.batch_progress.is_last_batch:
            self._epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Epoch-end Q-step when no validation ran after the epoch's last batch."""
        self._epoch_end(trainer, pl_module)


class NCMIDiagnostics(L.Callback):
    """Logs ``val/cmi``, ``val/gamma`` and ``val/ncmi`` every epoch, for any loss.

    ``P`` is ``loss.probabilities(outputs)``: softmax for CE and its relatives, the loss's
    own output map for NCMI. The values are also kept in :attr:`history` (one dict per
    epoch, sanity check excluded).

    Args:
        num_classes: ``C``.
        prefix: Logging prefix.
        direction: Separation direction of Γ.
        normalization: Separation normaliser of Γ.
    """

    def __init__(
        self,
        num_classes: int,
        prefix: str = "val",
        direction: LF.Direction = "centroid_to_output",
        normalization: LF.Normalization = "num_classes",
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.metric = NCMIMetric(num_classes, direction, normalization)
        self.history: list[dict[str, float]] = []

    #: Names this callback logs under ``<prefix>/``: the whole validation set's values,
    #: which take precedence over a loss's per-batch terms of the same name.
    KEYS: tuple[str, ...] = ("cmi", "gamma", "ncmi")

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Reset the accumulated outputs."""
        self.metric = self.metric.to(pl_module.device)
        self.metric.reset()

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Accumulate ``P`` and labels from what ``validation_step`` returned."""
        if not isinstance(outputs, Mapping) or not {"outputs", "targets"} <= outputs.keys():
            raise TypeError(
                "NCMIDiagnostics needs validation_step to return a mapping with keys "
                f"'outputs' and 'targets', got {type(outputs).__name__}"
            )
        loss = _find_loss(pl_module)
        with torch.no_grad():
            self.metric.update(loss.probabilities(outputs["outputs"]), outputs["targets"])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Compute and log the epoch's CMI, Γ and NCMI."""
        values = self.metric.compute()
        for name, value in values.items():
            pl_module.log(f"{self.prefix}/{name}", value)
        if not trainer.sanity_checking:
            record = {name: float(value) for name, value in values.items()}
            self.history.append({"epoch": float(trainer.current_epoch), **record})


class EscapeMonitor(L.Callback):
    """Warns once when a run shows the class-logit escape (see :mod:`wsi_ncmi.losses.escape`).

    Every epoch it records the loss's mean training Γ (``loss.pop_train_gamma()``, not
    ``None`` for NCMI) and the effective number of classes predicted on the validation set,
    for losses on class logits (``needs_class_head``): a bounded feature head cannot escape,
    so its early one-class epochs are not reported as an escape. When
    :func:`~wsi_ncmi.losses.escape.escape_reason` fires it issues a
    :class:`~wsi_ncmi.losses.escape.SeparationEscapeWarning` and logs ``escape/detected``.
    It reads what ``validation_step`` returns (``{"outputs", "targets"}``).

    Args:
        num_classes: ``C``.
        growth: See :func:`~wsi_ncmi.losses.escape.escape_reason`.
        patience: See :func:`~wsi_ncmi.losses.escape.escape_reason`.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        growth: float = 3.0,
        patience: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.growth = growth
        self.patience = patience
        self.train_gamma: list[float] = []
        self.val_classes: list[float] = []
        self.reason: str | None = None
        self._predicted = torch.zeros(num_classes)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Reset the validation prediction histogram."""
        self._predicted = torch.zeros(self.num_classes)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Count the batch's predicted classes."""
        if isinstance(outputs, Mapping) and "outputs" in outputs:
            loss = _find_loss(pl_module)
            with torch.no_grad():
                pred = loss.predict(outputs["outputs"]).cpu()
            self._predicted += torch.bincount(pred, minlength=self.num_classes).float()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch and warn once if the escape shows."""
        loss = _find_loss(pl_module)
        gamma = loss.pop_train_gamma()
        if gamma is None or trainer.sanity_checking or not loss.needs_class_head:
            return
        self.train_gamma.append(gamma)
        seen = float(self._predicted.sum()) > 0
        self.val_classes.append(effective_classes(self._predicted) if seen else float("nan"))
        reason = escape_reason(
            self.train_gamma, self.val_classes, growth=self.growth, patience=self.patience
        )
        if reason is not None and self.reason is None:
            self.reason = reason
            warnings.warn(reason, SeparationEscapeWarning, stacklevel=2)
        pl_module.log("escape/detected", float(self.reason is not None))
