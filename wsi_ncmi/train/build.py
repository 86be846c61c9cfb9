"""Build one fold's model (aggregator and loss from their registries) and its loggers.

The loss gets the run-dependent arguments it accepts (``num_classes``, the training
``class_counts``, the aggregator's embedding width ``feature_dim``); the aggregator always
gets the class count, and a class head only when the loss wants logits.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.store import read_feature_attrs
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
) -> dict[str, Any]:
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
    return int(read_feature_attrs(datamodule.path_of(datamodule.rows["train"][0]))["out_dim"])


def fold_criterion_kwargs(config: TrainConfig, datamodule: BagDataModule) -> dict[str, Any]:
    """:func:`criterion_kwargs` of a fold: the config's loss arguments plus the fold's.

    Args:
        config: The run configuration.
        datamodule: A set-up DataModule (class count, class counts, feature width).

    Returns:
        Every keyword argument the fold's loss is built with.
    """
    num_classes = datamodule.num_classes
    return criterion_kwargs(
        config.loss.name,
        dict(config.loss.kwargs),
        num_classes=num_classes,
        class_counts=datamodule.class_counts(),
        feature_dim=aggregator_embedding_dim(
            config.model.name,
            in_dim=fold_in_dim(datamodule),
            num_classes=num_classes,
            **dict(config.model.kwargs),
        ),
    )


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
        The LightningModule.
    """
    num_classes = datamodule.num_classes
    in_dim = fold_in_dim(datamodule)
    model_kwargs = dict(config.model.kwargs)
    criterion = build_loss(config.loss.name, **fold_criterion_kwargs(config, datamodule))
    L.seed_everything(config.seed, workers=True, verbose=False)
    aggregator = build_aggregator(
        config.model.name,
        in_dim=in_dim,
        num_classes=num_classes,
        class_head=criterion.needs_class_head,
        **model_kwargs,
    )
    optim = config.optim
    return MILClassifier(
        aggregator,
        criterion,
        num_classes,
        optimizer=optim.optimizer,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        scheduler=optim.scheduler,
        warmup_epochs=optim.warmup_epochs,
        seed=config.seed,
        class_counts=datamodule.class_counts(),
    )
