"""``MILClassifier``: an injected aggregator and an injected loss, trained by Lightning.

The aggregator (any :func:`wsi_ncmi.mil.build_aggregator` model) maps a bag to a
:class:`~wsi_ncmi.mil.MILOutput`. The loss (any :func:`wsi_ncmi.losses.build_loss` loss)
takes the class logits, or the slide embedding when ``loss.output_dim(C)`` is ``None``
(the aggregator is then built with ``class_head=False``). An aggregator whose
:meth:`~wsi_ncmi.mil.Aggregator.auxiliary_loss` returns a loss (CLAM-SB's instance
clustering) has it added.

The loss is the attribute ``criterion``, where :class:`~wsi_ncmi.losses.callbacks.CentroidUpdate`
and :class:`~wsi_ncmi.losses.callbacks.NCMIDiagnostics` find it; :meth:`loss_inputs` gives
them ``(outputs, targets)`` and ``validation_step`` returns ``{"outputs", "targets"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from wsi_ncmi.errors import ConfigError, NonFiniteError
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.base import ClassificationLoss
from wsi_ncmi.losses.callbacks import NCMIDiagnostics
from wsi_ncmi.losses.decision import fit_prior_rule, log_scores
from wsi_ncmi.mil.base import Aggregator, MILOutput
from wsi_ncmi.optim import OptimizerName, SchedulerName, check_choice, configure_optimization
from wsi_ncmi.vml_warmup import warm_vector_math


def _stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "balanced_accuracy": MulticlassAccuracy(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class MILClassifier(L.LightningModule):
    """Slide classifier from bags of patch features.

    Args:
        aggregator: MIL model; ``forward(features (B, N, D)) -> MILOutput``.
        criterion: A registered loss (see the :mod:`wsi_ncmi.losses` contract).
        num_classes: ``C``.
        optimizer: ``"adamw"`` (default), ``"adam"`` or ``"sgd"`` (momentum).
        lr: Learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        scheduler: ``"cosine"`` (to 0 over ``max_epochs``, after ``warmup_epochs`` of
            linear warm-up), ``"step"`` (× ``step_gamma`` every ``step_epochs``) or ``"none"``.
        warmup_epochs: Linear warm-up epochs of the cosine schedule.
        step_epochs: Period of the step schedule.
        step_gamma: Factor of the step schedule.
        seed: Dropout is reseeded from ``(seed, epoch, batch index)`` before every training
            step, so a resumed run matches an uninterrupted one.
        class_counts: Training count of each class: the prior of the validation-fitted
            decision rule logged as ``val/macro_f1_calibrated`` (and ``val/prior_scale``)
            every epoch (:mod:`wsi_ncmi.losses.decision`); ``None``: uniform.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        criterion: ClassificationLoss,
        num_classes: int = 4,
        *,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: int = 0,
        step_epochs: int = 10,
        step_gamma: float = 0.1,
        seed: int = 0,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_choice("optimizer", optimizer, ("adamw", "adam", "sgd"))
        check_choice("scheduler", scheduler, ("none", "cosine", "step"))
        if lr <= 0:
            raise ConfigError(f"lr must be > 0, got {lr!r}")
        self.save_hyperparameters(ignore=["aggregator", "criterion"])
        self.aggregator = aggregator
        self.criterion = criterion
        self.num_classes = num_classes
        self.val_metrics = _stage_metrics(num_classes, "val/")
        self.test_metrics = _stage_metrics(num_classes, "test/")
        self.class_counts = list(class_counts) if class_counts else [1] * num_classes
        self._val_scores: list[Tensor] = []
        self._val_targets: list[Tensor] = []
        # stage → term → (sum of value × batch size, sum of batch sizes) over the epoch
        self._stage_sums: dict[str, dict[str, tuple[Tensor, int]]] = {}

    def forward(self, features: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Run the aggregator on bags, cast to float32.

        Args:
            features: ``(B, N, D)`` (or ``(N, D)``) patch features.
            mask: Optional ``(B, N)`` bool, ``True`` for real patches (padded batches). An
                all-``True`` mask is dropped, so unpadded steps are exactly unmasked ones.

        Returns:
            The aggregator's output for the ``B`` bags.
        """
        if mask is not None and bool(mask.all()):
            mask = None
        output: MILOutput = self.aggregator(features.float(), mask)
        return output

    def _loss_outputs(self, output: MILOutput) -> Tensor:
        return output.logits if self.criterion.needs_class_head else output.embedding

    def _run(self, batch: dict[str, Tensor]) -> MILOutput:
        return self(batch["features"], batch.get("mask"))

    def loss_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(outputs the loss takes, targets)`` of a batch (used by the Q-step callback)."""
        return self._loss_outputs(self._run(batch)), batch["target"]

    def class_scores(self, outputs: Tensor) -> Tensor:
        """``(B, C)`` class probabilities for AUROC and the predictions file.

        The loss's own probabilities for class heads; for a feature head,
        ``softmax_c(−KL(P ‖ Q_c))`` over the prediction centroids.
        """
        probs = self.criterion.probabilities(outputs)
        state = self.criterion.centroid_state
        if self.criterion.needs_class_head or state is None:
            return probs
        q = state.prediction_centroids.to(probs.dtype)
        return torch.softmax(-LF.pairwise_kl(probs, q), dim=-1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Reseed dropout from ``(seed, epoch, batch)``, so a resumed run matches."""
        torch.manual_seed(int(self.hparams["seed"]) + 1_000_003 * self.current_epoch + batch_idx)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One step of the injected loss (plus the aggregator's auxiliary loss, if any)."""
        output = self._run(batch)
        targets = batch["target"]
        result = self.criterion(self._loss_outputs(output), targets)
        loss = result.loss
        aux = self.aggregator.auxiliary_loss(output, targets)
        if aux is not None:
            loss = loss + aux
            self.log(
                "train/aux",
                aux.detach(),
                on_step=False,
                on_epoch=True,
                batch_size=int(targets.shape[0]),
            )
        if not bool(torch.isfinite(loss)):
            # Policy: stop at once (no step is taken, so the weights and the last
            # checkpoint stay finite), naming the slide(s) of the step.
            raise NonFiniteError(
                f"non-finite training loss {float(loss.detach())} at epoch "
                f"{self.current_epoch}, step {self.global_step}, slide "
                f"{', '.join(self._slide_ids(batch))}; training stopped, the last checkpoint "
                "is intact. Lower the lr or check that slide's features, then resume"
            )
        batch_size = int(targets.shape[0])
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=batch_size)
        self.log_dict(
            {f"train/{k}": v for k, v in result.terms.items()},
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
        )
        return loss

    def _slide_ids(self, batch: dict[str, Tensor]) -> list[str]:
        """Slide ids of a training batch (dataset indices if no datamodule is attached)."""
        indices = [int(i) for i in batch["index"].reshape(-1).tolist()]
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        rows = getattr(datamodule, "rows", {}).get("train", []) if datamodule else []
        return [rows[i].slide_id if i < len(rows) else f"index {i}" for i in indices]

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> dict[str, Tensor]:
        """Update the stage's metrics and its batch-size-weighted sums of the loss terms.

        Nothing is logged per step (Lightning's per-step logging dominated the cost of a
        validation pass of one-slide steps); :meth:`_log_stage_epoch` logs the epoch's
        values, the same weighted means that ``on_epoch`` logging produced.
        """
        outputs, targets = self.loss_inputs(batch)
        result = self.criterion(outputs, targets)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(self.criterion.predict(outputs), targets)
        batch_size = int(targets.shape[0])
        sums = self._stage_sums.setdefault(stage, {})
        for key, value in {"loss": result.loss, **result.terms}.items():
            # As Lightning's on_epoch mean: float32 (or float64) sums of value × batch size.
            value = value.detach()
            if value.dtype not in (torch.float32, torch.float64):
                value = value.to(torch.float32)
            weighted = value * batch_size
            previous = sums.get(key)
            sums[key] = (
                (weighted, batch_size)
                if previous is None
                else (previous[0] + weighted, previous[1] + batch_size)
            )
        return {"outputs": outputs.detach(), "targets": targets}

    def _log_stage_epoch(self, stage: str) -> None:
        """Log the epoch's mean loss terms and metrics of ``stage``, then reset them."""
        sums = self._stage_sums.pop(stage, {})
        callbacks: list[Any] = list(getattr(self._trainer, "callbacks", None) or [])
        # The dataset-level CMI/Γ/NCMI of NCMIDiagnostics keep their names.
        shadowed = {
            f"{cb.prefix}/{key}"
            for cb in callbacks
            if isinstance(cb, NCMIDiagnostics)
            for key in cb.KEYS
        }
        for key, (total, count) in sums.items():
            if f"{stage}/{key}" not in shadowed:
                self.log(f"{stage}/{key}", total / count)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        if sums:
            self.log_dict({k: v.float() for k, v in metrics.compute().items()})
        metrics.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Loss, its terms and macro-F1/accuracy; returns outputs for the diagnostics."""
        result = self._evaluate(batch, "val")
        self._val_scores.append(self.class_scores(result["outputs"]).detach().float().cpu())
        self._val_targets.append(result["targets"].detach().cpu())
        return result

    def on_validation_epoch_start(self) -> None:
        """Start collecting the epoch's validation class scores and loss terms."""
        self._val_scores, self._val_targets = [], []
        self._stage_sums.pop("val", None)
        self.val_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        """Log the macro-F1 of the prior-aware rule fitted on this validation pass.

        Under DDP the scores of every process are gathered first, so all processes fit,
        log and select on the same value.
        """
        self._log_stage_epoch("val")
        if not self._val_scores:
            return
        scores_t, targets_t = torch.cat(self._val_scores), torch.cat(self._val_targets)
        if self.trainer.world_size > 1:
            gathered = [self.all_gather(t.to(self.device)) for t in (scores_t, targets_t)]
            if not all(isinstance(g, Tensor) for g in gathered):
                raise TypeError("all_gather of the validation scores returned no tensor")
            scores_t = cast(Tensor, gathered[0]).reshape(-1, scores_t.shape[1])
            targets_t = cast(Tensor, gathered[1]).reshape(-1)
        scores = log_scores(scores_t.double().cpu().numpy())
        targets = targets_t.cpu().numpy()
        rule = fit_prior_rule(scores, targets, self.class_counts)
        self.log("val/macro_f1_calibrated", rule.val_macro_f1)
        self.log("val/prior_scale", rule.scale)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Loss, its terms and macro-F1/accuracy on the test part."""
        return self._evaluate(batch, "test")

    def on_test_epoch_start(self) -> None:
        """Start the test pass's sums and metrics afresh."""
        self._stage_sums.pop("test", None)
        self.test_metrics.reset()

    def on_test_epoch_end(self) -> None:
        """Log the test pass's loss terms and metrics."""
        self._log_stage_epoch("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Per-batch ``index``/``target``/``pred`` ``(B,)``, ``probs (B, C)``, attention ``(B, N)``.

        Also the slide embeddings ``embedding (B, m)`` that the linear probe reads.
        """
        output = self._run(batch)
        outputs = self._loss_outputs(output)
        return {
            "index": batch["index"].cpu(),
            "target": batch["target"].cpu(),
            "pred": self.criterion.predict(outputs).cpu(),
            "probs": self.class_scores(outputs).float().cpu(),
            "attention": output.attention.float().cpu(),
            "embedding": output.embedding.detach().float().cpu(),
        }

    def setup(self, stage: str) -> None:
        """Warm up oneMKL's vector math (:mod:`wsi_ncmi.vml_warmup`) before the first step."""
        warm_vector_math()

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """The configured optimiser and schedule (stepped per epoch)."""
        hp: Any = self.hparams
        return configure_optimization(
            [p for p in self.parameters() if p.requires_grad],
            optimizer=hp.optimizer,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            momentum=hp.momentum,
            scheduler=hp.scheduler,
            max_epochs=self.trainer.max_epochs if self.trainer is not None else None,
            warmup_epochs=hp.warmup_epochs,
            step_epochs=hp.step_epochs,
            step_gamma=hp.step_gamma,
        )
