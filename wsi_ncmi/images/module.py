"""``LossClassifier``: a backbone, an optional linear head and any registered loss."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from wsi_ncmi.losses.base import ClassificationLoss
from wsi_ncmi.optim import check_choice, configure_optimization
from wsi_ncmi.vml_warmup import warm_vector_math


class LossClassifier(L.LightningModule):
    """Classifier trained with an injected loss (see the :mod:`wsi_ncmi.losses` contract).

    The model is ``backbone`` followed by ``Linear(feature_dim, loss.output_dim(C))`` when
    the loss needs a class head, or by nothing (the loss takes the features). The loss is
    the attribute ``criterion``, which the callbacks of :mod:`wsi_ncmi.losses.callbacks`
    find by default; ``validation_step`` returns ``{"outputs", "targets"}`` for them.

    Args:
        backbone: Maps a batch of inputs to ``(N, feature_dim)`` features.
        feature_dim: Backbone output width.
        num_classes: ``C``.
        criterion: A registered loss.
        optimizer: ``"sgd"`` (momentum, the authors' setting) or ``"adamw"``.
        lr: Learning rate.
        momentum: SGD momentum.
        weight_decay: Weight decay.
        cosine_schedule: Cosine-anneal the learning rate over ``trainer.max_epochs``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        criterion: ClassificationLoss,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        cosine_schedule: bool = True,
    ) -> None:
        super().__init__()
        check_choice("optimizer", optimizer, ("sgd", "adamw"))
        self.save_hyperparameters(ignore=["backbone", "criterion"])
        self.backbone = backbone
        self.criterion = criterion
        head_dim = criterion.output_dim(num_classes)
        self.head: nn.Module = (
            nn.Identity() if head_dim is None else nn.Linear(feature_dim, head_dim)
        )
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.test_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")

    def forward(self, x: Tensor) -> Tensor:
        """Outputs the loss takes: ``(N, C)`` logits or ``(N, feature_dim)`` features."""
        return self.head(self.backbone(x))

    def loss_inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(outputs, targets)`` of a batch ``(x, y)`` (used by the Q-step callback)."""
        x, y = batch
        return self(x), y

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One optimisation step of the injected loss; logs ``train/loss`` and its terms."""
        outputs, targets = self.loss_inputs(batch)
        result = self.criterion(outputs, targets)
        self.log("train/loss", result.loss.detach(), prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in result.terms.items()})
        return result.loss

    def _evaluate(self, batch: Any, stage: str) -> dict[str, Tensor]:
        outputs, targets = self.loss_inputs(batch)
        result = self.criterion(outputs, targets)
        predictions = self.criterion.predict(outputs)
        accuracy, f1 = (
            (self.val_accuracy, self.val_f1)
            if stage == "val"
            else (self.test_accuracy, self.test_f1)
        )
        accuracy.update(predictions, targets)
        f1.update(predictions, targets)
        self.log(f"{stage}/loss", result.loss)
        self.log(f"{stage}/accuracy", accuracy)
        self.log(f"{stage}/macro_f1", f1)
        return {"outputs": outputs.detach(), "targets": targets}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Loss, accuracy and macro-F1; returns outputs for the NCMI diagnostics."""
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        """Loss, accuracy and macro-F1 on the test split."""
        return self._evaluate(batch, "test")

    def setup(self, stage: str) -> None:
        """Warm up oneMKL's vector math (:mod:`wsi_ncmi.vml_warmup`) before the first step."""
        warm_vector_math()

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """SGD (or AdamW), cosine-annealed over the run."""
        hp: Any = self.hparams
        return configure_optimization(
            self.parameters(),
            optimizer=hp.optimizer,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            momentum=hp.momentum,
            scheduler="cosine" if hp.cosine_schedule else "none",
            max_epochs=self.trainer.max_epochs,
        )
