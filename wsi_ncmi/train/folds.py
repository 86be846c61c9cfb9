"""A fold's DataModule, and re-scoring a fold's checkpoint on its validation slides."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from wsi_ncmi.quiet import drop_lightning_tips, lightning_loop
from wsi_ncmi.train.build import build_model
from wsi_ncmi.train.config import TrainConfig
from wsi_ncmi.train.data import BagDataModule


def fold_datamodule(config: TrainConfig, fold_index: int, splits_file: Path) -> BagDataModule:
    """The set-up (``"fit"``) DataModule of one fold of ``splits_file``.

    Args:
        config: The run configuration.
        fold_index: Index of the fold in ``splits_file``.
        splits_file: The run's ``splits.json``.

    Returns:
        The DataModule, with its train, validation and test parts loaded.
    """
    data = config.data
    datamodule = BagDataModule(
        data.manifest,
        data.features_root,
        data.encoder,
        str(splits_file),
        fold_index,
        max_patches_train=data.max_patches_train,
        cache_in_ram=data.cache_in_ram,
        missing=data.missing,
        balanced_sampling=data.balanced_sampling,
        batch_size=data.batch_size,
        standardize=data.standardize,
        slide_norm=data.slide_norm,
        num_workers=data.num_workers,
        pin_memory=config.trainer.accelerator in ("gpu", "cuda", "auto")
        and torch.cuda.is_available(),
        seed=config.seed,
        include_empty=data.include_empty,
    )
    datamodule.setup("fit")
    return datamodule


def rescore_validation(
    config: TrainConfig, fold_index: int, splits_file: Path, ckpt_path: str | Path
) -> dict[str, float]:
    """Reload a checkpoint and score the fold's validation slides again.

    For every loss the checkpoint holds the state its epoch's validation scored (weights,
    centroids and class means, feature centre): the Q-step runs before validation
    (:class:`~wsi_ncmi.losses.callbacks.CentroidUpdate`). So the values returned here are
    the ones logged for that epoch, to the bit.

    Args:
        config: The run configuration.
        fold_index: Index of the fold in ``splits_file``.
        splits_file: The run's ``splits.json``.
        ckpt_path: A checkpoint of that fold.

    Returns:
        The validation metrics (``val/macro_f1``, ``val/macro_f1_calibrated``,
        ``val/loss``, ...).
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = fold_datamodule(config, fold_index, splits_file)
    model = build_model(config, datamodule)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # the run's own file
    model.load_state_dict(state["state_dict"])  # the weights only: no training callbacks
    drop_lightning_tips()
    trainer = L.Trainer(
        accelerator=config.trainer.accelerator,
        devices=1,
        precision=config.trainer.precision,  # type: ignore[arg-type]
        deterministic=config.trainer.deterministic,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with lightning_loop():
        trainer.validate(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


__all__ = ["fold_datamodule", "rescore_validation"]
