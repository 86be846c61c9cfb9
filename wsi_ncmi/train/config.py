"""The typed configuration of ``wsi-train``: defaults here, then YAML, then CLI overrides.

``wsi-train --config configs/camelyon17/abmil_ncmi.yaml --trainer.max_epochs 20`` layers a
YAML file and overrides on these defaults (jsonargparse); the resolved configuration is
saved with every run as ``config.yaml`` (CLI) and ``config.json`` (library, with the
package version).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from wsi_ncmi.errors import ConfigError


def require(key: str, value: object, ok: bool, rule: str) -> None:
    """Raise :class:`ConfigError` ``"<key> must be <rule>, got <value>"`` unless ``ok``.

    The sections check their own values when they are built (``__post_init__``), so a
    library caller gets the same errors as the command line.
    """
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


@dataclass
class DataConfig:
    """Where the bags come from.

    Attributes:
        manifest: Slide manifest CSV (slide_id, patient_id, center, label, ...).
        features_root: Extraction output root (``<root>/features/<encoder>/<slide>.h5``).
        encoder: Encoder name of the features.
        slide_dir: Slide root in the CAMELYON layout (``center_K/<slide_id>.tif``), for
            heatmap thumbnails and the synthetic ground truth; optional.
        max_patches_train: Sub-sample training bags to at most this many patches (``null``:
            full bags). Validation and test always use full bags.
        cache_in_ram: Keep loaded bags in memory.
        missing: ``"error"`` or ``"exclude"`` slides without a features file (reported).
        balanced_sampling: Class-balanced sampling of training bags.
        batch_size: Training slides per optimiser step, padded to the longest bag of the
            step with a mask (``1``: one slide per step, exactly the unbatched step). A
            step holds at most ``batch_size × max_patches_train`` patches.
        standardize: Standardise features per dimension with training-split statistics.
        slide_norm: ``"robust"``: first centre each slide's features on their own median
            and scale by their own MAD, which cancels per-slide stain and scanner shifts
            (:mod:`wsi_ncmi.train.slide_norm`); ``"none"``: as stored.
        num_workers: DataLoader workers.
        include_empty: Keep blank slides (no valid patch, tiled as ``no_tissue``) in
            training and evaluation, which then stops with an error naming them; by
            default they are left out before the fold trains and counted in the reports.
    """

    manifest: str = "data_manifests/camelyon17.csv"
    features_root: str = "outputs/camelyon17"
    encoder: str = "resnet50-trunc"
    slide_dir: str | None = None
    max_patches_train: int | None = 8192
    cache_in_ram: bool = False
    missing: Literal["error", "exclude"] = "error"
    balanced_sampling: bool = False
    batch_size: int = 8
    standardize: bool = False
    slide_norm: Literal["none", "robust"] = "none"
    num_workers: int = 0
    include_empty: bool = False

    def __post_init__(self) -> None:
        require("data.batch_size", self.batch_size, self.batch_size >= 1, ">= 1")
        require("data.num_workers", self.num_workers, self.num_workers >= 0, ">= 0")
        require(
            "data.max_patches_train",
            self.max_patches_train,
            self.max_patches_train is None or self.max_patches_train >= 1,
            ">= 1 or null",
        )


SplitKind = Literal["loho", "fixed", "kfold", "none"]
ValScheme = Literal["patients", "hospital"]
#: Named center lists of the ``fixed`` split: ``(train, val, test)``; empty val = carve.
SPLIT_PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {
    "c17_train012_test34": ((0, 1, 2), (), (3, 4)),
    "wilds": ((0, 3, 4), (1,), (2,)),
}


@dataclass
class SplitConfig:
    """How slides are split (see :mod:`wsi_ncmi.train.splits`).

    Attributes:
        kind: ``"loho"``, ``"fixed"``, ``"kfold"`` or ``"none"`` (train the final model
            on every labelled slide: a patient-grouped validation part of
            ``val_fraction`` selects the checkpoint and fits the decision rule, there is
            no test part; use the bundle in ``<out>/all/model/`` with ``wsi-predict``).
        file: Reuse this splits JSON instead of making one.
        preset: ``fixed``: ``"c17_train012_test34"`` or ``"wilds"``.
        train_centers: ``fixed`` without preset: training centers.
        val_centers: ``fixed`` without preset: validation centers (empty: carve).
        test_centers: ``fixed`` without preset: test centers.
        num_folds: ``kfold``: number of folds.
        val_fraction: Share of training patients (per stratum) used for validation.
        val_scheme: ``loho``: ``patients`` (validation patients from every training
            hospital) or ``hospital`` (nested leave-one-hospital-out: a whole training
            hospital validates, so checkpoint selection and the decision rule see a
            hospital shift).
        folds: Fold indices to run (``null``: all).
    """

    kind: SplitKind = "loho"
    file: str | None = None
    preset: str | None = None
    train_centers: list[int] | None = None
    val_centers: list[int] | None = None
    test_centers: list[int] | None = None
    num_folds: int = 5
    val_fraction: float = 0.2
    val_scheme: ValScheme = "patients"
    folds: list[int] | None = None

    def __post_init__(self) -> None:
        """The checks that need no manifest (the others: ``train.splits.make_splits``).

        With a splits ``file`` the folds come from it: the fields that make folds are not
        checked against each other.
        """
        kinds, schemes = get_args(SplitKind), get_args(ValScheme)  # a Python caller's values
        require("split.kind", self.kind, self.kind in kinds, f"one of {list(kinds)}")
        ok = self.val_scheme in schemes
        require("split.val_scheme", self.val_scheme, ok, f"one of {list(schemes)}")
        ok = 0.0 < self.val_fraction < 1.0
        require("split.val_fraction", self.val_fraction, ok, "in (0, 1)")
        ok = self.preset is None or self.preset in SPLIT_PRESETS
        require("split.preset", self.preset, ok, f"one of {sorted(SPLIT_PRESETS)} or null")
        if self.file is not None:
            return
        ok = self.val_scheme == "patients" or self.kind == "loho"
        rule = "'patients' unless kind is loho (val_scheme 'hospital' applies to loho splits)"
        require("split.val_scheme", self.val_scheme, ok, rule)
        if self.kind == "kfold":
            require("split.num_folds", self.num_folds, self.num_folds >= 2, ">= 2")
        if self.kind != "fixed":
            return
        train, val, test = self.train_centers, self.val_centers, self.test_centers
        if self.preset is not None:
            train, val, test = (list(c) for c in SPLIT_PRESETS[self.preset])
        if not train or not test:
            raise ConfigError(
                "fixed splits need a preset or non-empty train_centers and test_centers, "
                f"got preset={self.preset!r}, train_centers={train!r}, test_centers={test!r}"
            )
        lists = [list(train), list(val or []), list(test)]
        flat = [c for group in lists for c in group]
        if len(flat) != len(set(flat)):
            raise ConfigError(f"split: train/val/test centers overlap: {lists}")


@dataclass
class ModelConfig:
    """The aggregator: a :func:`wsi_ncmi.mil.list_aggregators` name and its arguments.

    Attributes:
        name: ``abmil``, ``transmil``, ``dsmil``, ``clam_sb``, ``mean`` or ``max``.
        kwargs: Constructor arguments other than ``in_dim``/``num_classes``.
    """

    name: str = "abmil"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A misspelt name or argument stops here, before any data is read."""
        from wsi_ncmi.mil import check_aggregator

        try:  # in_dim is the features' width, known once they are read
            check_aggregator(self.name, in_dim=1, num_classes=2, **self.kwargs)
        except ConfigError as err:
            raise ConfigError(f"model: {err}") from err


@dataclass
class LossConfig:
    """The loss: a :func:`wsi_ncmi.losses.list_losses` name and its arguments.

    ``num_classes``, ``class_counts`` (training split) and ``feature_dim`` (the
    aggregator's embedding width) are filled in when the loss takes them.

    Attributes:
        name: e.g. ``ncmi_mil`` (NCMI-MIL, the default), ``ncmi`` (class-logit NCMI),
            ``ce``, ``weighted_ce``, ``focal``, ``cmic``.
        kwargs: Constructor arguments.
    """

    name: str = "ncmi_mil"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """A misspelt name or argument stops here, before any data is read (built once)."""
        import torch

        from wsi_ncmi.losses import build_loss
        from wsi_ncmi.manifest import LABELS

        with torch.random.fork_rng(devices=[]):  # the random state is left as it was
            try:
                build_loss(self.name, **{"num_classes": len(LABELS), **self.kwargs})
            except ConfigError as err:
                raise ConfigError(f"loss: {err}") from err


@dataclass
class OptimConfig:
    """Optimiser and schedule (see :class:`wsi_ncmi.train.module.MILClassifier`).

    Attributes:
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        lr: Learning rate.
        weight_decay: Weight decay.
        scheduler: ``cosine``, ``step`` or ``none``.
        warmup_epochs: Linear warm-up epochs (cosine).
    """

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    scheduler: Literal["none", "cosine", "step"] = "cosine"
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        require("optim.lr", self.lr, self.lr > 0, "> 0")
        require("optim.weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")
        require("optim.warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0, ">= 0")


#: The validation values a checkpoint may be selected on (logged for every loss and
#: aggregator), and which way is better.
MONITORS: dict[str, Literal["max", "min"]] = {
    "val/macro_f1_calibrated": "max",
    "val/macro_f1": "max",
    "val/balanced_accuracy": "max",
    "val/accuracy": "max",
    "val/loss": "min",
    "val/ncmi": "min",
    "val/cmi": "min",
}


@dataclass
class TrainerConfig:
    """Lightning Trainer settings and the checkpoint/early-stopping metric.

    Attributes:
        max_epochs: Epoch limit (when ``max_steps`` is null).
        patience: Early-stopping patience in epochs (``0``: no early stopping), when
            ``patience_steps`` is null.
        max_steps: Training budget in optimiser steps (``null``: ``max_epochs`` rules).
            The fold trains ``ceil(max_steps / steps per epoch)`` whole epochs, so the
            budget does not depend on the batch size or the number of training slides:
            every loss of a comparison gets the same number of updates.
        patience_steps: Early-stopping patience in optimiser steps, turned into
            ``ceil(patience_steps / steps per epoch)`` validation epochs (``null``:
            ``patience`` rules; ``0``: no early stopping).
        monitor: Validation metric for checkpointing and early stopping: by default the
            macro-F1 of the prior-aware rule fitted on that validation pass (the same rule
            for every loss; ``val/macro_f1`` is the loss's own rule). One of
            :data:`MONITORS`.
        mode: ``max`` or ``min``: the direction :data:`MONITORS` gives ``monitor``.
        accelerator: ``cpu``, ``gpu`` or ``auto``.
        devices: Lightning devices.
        precision: Lightning precision (the losses compute in float32 regardless).
        deterministic: Deterministic algorithms (same seed → same results on CPU).
        accumulate_grad_batches: Bags per optimiser step.
        gradient_clip_val: Gradient-norm clip (``null``: none).
        progress_bar: Show the progress bar.
        logger: ``csv`` (``<fold>/logs/version_*/metrics.csv``, always written: the
            reports read it) or ``tensorboard`` (also ``<fold>/tb/``, the same per-epoch
            metrics including the NCMI diagnostics; needs ``pip install
            'wsi-ncmi[tensorboard]'``).
    """

    max_epochs: int = 50
    patience: int = 10
    max_steps: int | None = None
    patience_steps: int | None = None
    monitor: str = "val/macro_f1_calibrated"
    mode: Literal["max", "min"] = "max"
    accelerator: str = "auto"
    devices: int | str = 1
    precision: str = "32-true"
    deterministic: bool = True
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    progress_bar: bool = False
    logger: Literal["csv", "tensorboard"] = "csv"

    def __post_init__(self) -> None:
        require(
            "trainer.monitor", self.monitor, self.monitor in MONITORS, f"one of {list(MONITORS)}"
        )
        better = MONITORS[self.monitor]
        require("trainer.mode", self.mode, self.mode == better, f"{better!r} for {self.monitor}")
        names = ["auto", "cpu", "gpu", "cuda", "mps", "tpu"]  # Lightning's, checked early
        ok = self.accelerator in names
        require("trainer.accelerator", self.accelerator, ok, f"one of {names}")
        require("trainer.max_epochs", self.max_epochs, self.max_epochs >= 1, ">= 1")
        require("trainer.patience", self.patience, self.patience >= 0, ">= 0")
        require(
            "trainer.max_steps",
            self.max_steps,
            self.max_steps is None or self.max_steps >= 1,
            ">= 1 or null",
        )
        require(
            "trainer.patience_steps",
            self.patience_steps,
            self.patience_steps is None or self.patience_steps >= 0,
            ">= 0 or null",
        )


@dataclass
class ReportConfig:
    """What is written after training.

    Attributes:
        decision: Which test prediction the reports lead with. ``"calibrated"``: the
            prior-aware rule ``argmax_c log s_c + λ log π_c`` with ``λ`` chosen on the
            validation split (:mod:`wsi_ncmi.losses.decision`; the same rule for every
            loss); ``"default"``: the loss's own rule (argmax, or nearest centroid for
            NCMI-MIL). Both are always written (``predictions.csv`` columns
            ``pred_label_default``/``pred_label_calibrated``, ``metrics.json``
            ``by_decision``).
        bootstrap: Bootstrap resamples of the macro-F1 interval.
        attention_top_k: Top-attended patches listed per slide.
        max_heatmaps: Attention heatmaps drawn per fold.
        max_geojson: Test slides whose patches (with attention, predicted class and
            probabilities as QuPath measurements) are written as
            ``<fold>/qupath/<slide_id>.geojson`` (``null``: all; ``0``: none).
    """

    decision: Literal["calibrated", "default"] = "calibrated"
    bootstrap: int = 1000
    attention_top_k: int = 10
    max_heatmaps: int = 20
    max_geojson: int | None = None


@dataclass
class TrainConfig:
    """Everything ``wsi-train`` needs.

    Attributes:
        out_dir: Run folder (``splits.json``, ``config.json``, one folder per fold, the
            pooled ``metrics.json`` and ``predictions.csv``).
        seed: Global seed (splits, initialisation, sampling, dropout).
        resume: Continue each fold from its ``checkpoints/last.ckpt`` when present (a run
            that was killed); finished folds are trained no further.
        data: See :class:`DataConfig`.
        split: See :class:`SplitConfig`.
        model: See :class:`ModelConfig`.
        loss: See :class:`LossConfig`.
        optim: See :class:`OptimConfig`.
        trainer: See :class:`TrainerConfig`.
        report: See :class:`ReportConfig`.
    """

    out_dir: str = "outputs/train/run"
    seed: int = 0
    resume: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def epoch_budget(trainer: TrainerConfig, steps_per_epoch: int) -> tuple[int, int]:
    """``(max_epochs, patience in epochs)`` of a fold with ``steps_per_epoch`` optimiser steps.

    A budget in steps becomes the smallest number of whole epochs that covers it (at
    least one), so validation and checkpoints stay at epoch ends.

    Args:
        trainer: The trainer section.
        steps_per_epoch: Optimiser steps of one training epoch (``≥ 1``).

    Returns:
        The epoch limit and the early-stopping patience (``0``: none).
    """
    steps = max(int(steps_per_epoch), 1)
    epochs = trainer.max_epochs if trainer.max_steps is None else -(-trainer.max_steps // steps)
    patience = (
        trainer.patience if trainer.patience_steps is None else -(-trainer.patience_steps // steps)
    )
    return max(epochs, 1), patience
