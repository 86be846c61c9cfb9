"""Build one fold's model (aggregator and loss from their registries) and its loggers.

The loss gets the run-dependent arguments it accepts (``num_classes``, the training
``class_counts``, the aggregator's embedding width ``feature_dim``); the aggregator always
gets the class count, and a class head only when the loss wants logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.store import read_feature_attrs
from wsi_ncmi.jsontypes import JSONObject, as_int
from wsi_ncmi.losses import ClassificationLoss, build_loss, get_loss_factory
from wsi_ncmi.mil import aggregator_embedding_dim, build_aggregator
from wsi_ncmi.train.config import TrainConfig
from wsi_ncmi.train.data import BagDataModule
from wsi_ncmi.train.module import MILClassifier


def build_criterion(
    name: str,
    kwargs: dict[str, Any],
    *,
    num_classes: int,
    class_counts: Sequence[int],
    feature_dim: int,
) -> ClassificationLoss:
    """Build a registered loss, filling in the run-dependent arguments it accepts.

    ``num_classes``, ``class_counts`` and ``feature_dim`` are added unless given in
    ``kwargs`` and only if the loss's constructor has such a parameter.

    Args:
        name: Registered loss name.
        kwargs: Arguments from the config.
        num_classes: ``C``.
        class_counts: Training-set count per class.
        feature_dim: Width of the aggregator's slide embedding.

    Returns:
        The loss.

    Raises:
        ConfigError: Unknown loss or rejected arguments.
    """
    return build_loss(
        name,
        **criterion_kwargs(
            name,
            kwargs,
            num_classes=num_classes,
            class_counts=class_counts,
            feature_dim=feature_dim,
        ),
    )


def criterion_kwargs(
    name: str,
    kwargs: dict[str, Any],
    *,
    num_classes: int,
    class_counts: Sequence[int],
    feature_dim: int,
) -> JSONObject:
    """Every keyword argument :func:`build_criterion` passes to ``build_loss(name, ...)``.

    Returns:
        ``kwargs`` plus the run-dependent arguments the loss's constructor accepts (what
        a model bundle records, so that the loss is rebuilt exactly).

    Raises:
        ConfigError: Unknown loss.
    """
    parameters = inspect.signature(get_loss_factory(name)).parameters
    context = {
        "num_classes": num_classes,
        "class_counts": list(class_counts),
        "feature_dim": feature_dim,
    }
    filled = {k: v for k, v in context.items() if k in parameters and k not in kwargs}
    return {**filled, **kwargs}


def fold_in_dim(datamodule: BagDataModule) -> int:
    """Patch-feature width of a fold (its first training file's ``out_dim``)."""
    return as_int(read_feature_attrs(datamodule.path_of(datamodule.rows["train"][0]))["out_dim"])


@dataclass(frozen=True)
class FoldShape:
    """What a fold's data fixes about its model.

    Attributes:
        in_dim: Patch-feature width ``D``.
        num_classes: ``C``.
        class_counts: Training slides per class (length ``C``).
    """

    in_dim: int
    num_classes: int
    class_counts: tuple[int, ...]


def fold_shape(datamodule: BagDataModule) -> FoldShape:
    """The :class:`FoldShape` of a set-up DataModule."""
    return FoldShape(
        fold_in_dim(datamodule), datamodule.num_classes, tuple(datamodule.class_counts())
    )


def shape_criterion_kwargs(config: TrainConfig, shape: FoldShape) -> JSONObject:
    """:func:`criterion_kwargs` for ``config``'s loss on data of ``shape``."""
    return criterion_kwargs(
        config.loss.name,
        dict(config.loss.kwargs),
        num_classes=shape.num_classes,
        class_counts=shape.class_counts,
        feature_dim=aggregator_embedding_dim(
            config.model.name,
            in_dim=shape.in_dim,
            num_classes=shape.num_classes,
            **dict(config.model.kwargs),
        ),
    )


def fold_criterion_kwargs(config: TrainConfig, datamodule: BagDataModule) -> JSONObject:
    """:func:`criterion_kwargs` of a fold: the config's loss arguments plus the fold's.

    Args:
        config: The run configuration.
        datamodule: A set-up DataModule (class count, class counts, feature width).

    Returns:
        Every keyword argument the fold's loss is built with.
    """
    return shape_criterion_kwargs(config, fold_shape(datamodule))


def build_loggers(kind: str, fold_dir: Path) -> list[Logger]:
    """The CSV logger (the reports read it), plus TensorBoard's when asked for.

    Raises:
        ConfigError: ``tensorboard`` without the package installed, or an unknown kind.
    """
    loggers: list[Logger] = [CSVLogger(fold_dir, name="logs")]
    if kind == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(
                "trainer.logger 'tensorboard' needs the tensorboard package: "
                "pip install 'wsi-ncmi[tensorboard]'"
            )
        loggers.append(TensorBoardLogger(fold_dir, name="tb", default_hp_metric=False))
    elif kind != "csv":
        raise ConfigError(f"trainer.logger must be 'csv' or 'tensorboard', got {kind!r}")
    return loggers


def build_model(config: TrainConfig, datamodule: BagDataModule) -> MILClassifier:
    """Aggregator + loss + LightningModule for one fold (seeded by ``config.seed``).

    Args:
        config: The run configuration.
        datamodule: A set-up DataModule (gives the feature dim and class counts).

    Returns:
        The LightningModule (:func:`build_module` on the fold's :class:`FoldShape`).
    """
    return build_module(config, fold_shape(datamodule))


def build_module(config: TrainConfig, shape: FoldShape) -> MILClassifier:
    """Aggregator + loss + LightningModule for data of ``shape`` (seeded by ``config.seed``).

    The loss is built first (its run-dependent arguments from ``shape``), then the
    random state is seeded and the aggregator built, with a class head only when the loss
    wants logits.

    Args:
        config: The run configuration (model, loss, optimiser, seed).
        shape: Feature width, class count and training class counts.

    Returns:
        The LightningModule.
    """
    criterion = build_loss(config.loss.name, **shape_criterion_kwargs(config, shape))
    L.seed_everything(config.seed, workers=True, verbose=False)
    aggregator = build_aggregator(
        config.model.name,
        in_dim=shape.in_dim,
        num_classes=shape.num_classes,
        class_head=criterion.needs_class_head,
        **dict(config.model.kwargs),
    )
    optim = config.optim
    return MILClassifier(
        aggregator,
        criterion,
        shape.num_classes,
        optimizer=optim.optimizer,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        scheduler=optim.scheduler,
        warmup_epochs=optim.warmup_epochs,
        seed=config.seed,
        class_counts=list(shape.class_counts),
    )
