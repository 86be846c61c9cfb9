"""Fit and test a :class:`LossClassifier` with the centroid and diagnostics callbacks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L

from wsi_ncmi._version import __version__
from wsi_ncmi.batch.atomic import write_text_atomic
from wsi_ncmi.images.data import ImageFolderDataModule
from wsi_ncmi.images.models import build_backbone
from wsi_ncmi.images.module import LossClassifier
from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.losses.callbacks import CentroidUpdate, NCMIDiagnostics
from wsi_ncmi.losses.registry import build_loss
from wsi_ncmi.quiet import drop_lightning_tips, lightning_loop


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_classifier` measured.

    Attributes:
        val: Last-epoch validation metrics (``val/<name>``).
        test: Test metrics (``test/<name>``).
        history: Per-epoch validation CMI, Γ and NCMI (with ``epoch``).
        collapsed_epochs: Epochs whose centroid check reported a collapse.
    """

    val: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]]
    collapsed_epochs: list[int]

    def to_json(self) -> JSONObject:
        """``{"val", "test", "history", "collapsed_epochs"}``."""
        return {
            "val": dict(self.val),
            "test": dict(self.test),
            "history": [dict(h) for h in self.history],
            "collapsed_epochs": list(self.collapsed_epochs),
        }


def fit_classifier(
    model: LossClassifier,
    datamodule: L.LightningDataModule,
    num_classes: int,
    *,
    max_epochs: int,
    accelerator: str = "cpu",
    devices: int | str = 1,
    precision: str = "32-true",
    default_root_dir: str | Path | None = None,
    logger: bool = False,
) -> FitResult:
    """Train, then test; return test metrics, diagnostics history and centroid reports.

    Args:
        model: The classifier (its loss is ``model.criterion``).
        datamodule: Provides train/val/test loaders of ``(x, y)`` batches.
        num_classes: ``C``.
        max_epochs: Training epochs.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        precision: Lightning precision (the losses compute in fp32 regardless).
        default_root_dir: Where Lightning writes checkpoints and logs.
        logger: Whether to use Lightning's default logger.

    Returns:
        Last-epoch validation metrics, test metrics, per-epoch validation CMI/Γ/NCMI, and
        the epochs whose centroid check reported a collapse.
    """
    centroids = CentroidUpdate(num_classes)
    diagnostics = NCMIDiagnostics(num_classes)
    drop_lightning_tips()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=accelerator,
        devices=devices,
        precision=precision,  # type: ignore[arg-type]
        callbacks=[centroids, diagnostics],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=default_root_dir,
        num_sanity_val_steps=0,
    )
    with lightning_loop():
        trainer.fit(model, datamodule=datamodule)
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        test = trainer.test(model, datamodule=datamodule, verbose=False)[0]
    return FitResult(
        val=val,
        test={k: float(v) for k, v in test.items()},
        history=diagnostics.history,
        collapsed_epochs=[r.epoch for r in centroids.reports if r.collapsed],
    )


@dataclass
class ImageTrainConfig:
    """Resolved configuration of :func:`train_images` (written next to the results).

    Attributes:
        root: ImageFolder root (``train/``, optional ``val/`` and ``test/``).
        backbone: ``small_cnn``, ``torchvision:<arch>`` or ``timm:<arch>``.
        loss: Registered loss name.
        loss_kwargs: Extra loss arguments (``num_classes`` and, for the feature head,
            ``feature_dim`` are filled in).
        epochs: Training epochs.
        batch_size: Batch size.
        image_size: Image side in pixels.
        lr: Learning rate.
        weight_decay: Weight decay.
        optimizer: ``sgd`` or ``adamw``.
        seed: Global seed.
        accelerator: Lightning accelerator.
        devices: Lightning devices.
        precision: Lightning precision.
        num_workers: DataLoader workers.
        out_dir: Output folder for ``results.json``.
    """

    root: str
    backbone: str = "small_cnn"
    loss: str = "ncmi"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 128
    image_size: int = 32
    lr: float = 0.1
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: str = "32-true"
    num_workers: int = 0
    out_dir: str = "outputs/images"


@dataclass(frozen=True)
class ImageTrainResult:
    """What :func:`train_images` returns and writes to ``<out_dir>/results.json``.

    Attributes:
        fit: The metrics of :func:`fit_classifier`.
        config: The run's configuration.
        classes: Class names, in label order.
        version: Package version.
    """

    fit: FitResult
    config: ImageTrainConfig
    classes: list[str]
    version: str

    def to_json(self) -> JSONObject:
        """``results.json``: the fit's keys, then ``config``, ``classes`` and ``version``."""
        return self.fit.to_json() | {
            "config": asdict(self.config),
            "classes": list(self.classes),
            "version": self.version,
        }


def train_images(config: ImageTrainConfig) -> ImageTrainResult:
    """Train a backbone with a registered loss on an ImageFolder dataset.

    Args:
        config: The run configuration.

    Returns:
        The :func:`fit_classifier` results with the configuration, classes and package
        version (also written to ``<out_dir>/results.json``).
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = ImageFolderDataModule(
        config.root,
        image_size=config.image_size,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        seed=config.seed,
    )
    backbone = build_backbone(config.backbone)
    feature_dim = int(backbone.feature_dim)  # type: ignore[arg-type]
    loss_kwargs = dict(config.loss_kwargs)
    if config.loss in ("ncmi", "cmic"):
        loss_kwargs.setdefault("num_classes", datamodule.num_classes)
    if loss_kwargs.get("head") == "feature":
        loss_kwargs.setdefault("feature_dim", feature_dim)
    criterion = build_loss(config.loss, **loss_kwargs)
    model = LossClassifier(
        backbone,
        feature_dim,
        datamodule.num_classes,
        criterion,
        optimizer=config.optimizer,  # type: ignore[arg-type]
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    out_dir = Path(config.out_dir)
    fit = fit_classifier(
        model,
        datamodule,
        datamodule.num_classes,
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        precision=config.precision,
        default_root_dir=out_dir,
    )
    result = ImageTrainResult(fit, config, list(datamodule.class_names), __version__)
    write_text_atomic(out_dir / "results.json", json.dumps(result.to_json(), indent=2))
    return result
