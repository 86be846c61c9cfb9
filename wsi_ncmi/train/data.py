"""Bags of patch features for training: dataset, epoch-seeded sampler and DataModule.

A bag is one slide's ``(N, D)`` features from its HDF5 file
(:func:`wsi_ncmi.features.store.load_bag`), kept in the stored dtype (float16 by default)
and cast to float32 by the LightningModule on the device. Training bags may be
sub-sampled to ``max_patches_train`` patches; validation, test and prediction always see
the full bag. The training loader yields ``batch_size`` bags per step, padded to the
longest bag of the step with a ``(B, N_max)`` mask (:func:`collate_bags`), so a step holds
at most ``batch_size × max_patches_train`` patches; validation, test and prediction
loaders yield one full bag per step.

Determinism: the sampler's order and every sub-sample are functions of ``(seed, epoch,
slide index)`` only, so a run resumed from a checkpoint sees the same bags as an
uninterrupted one, whatever the number of workers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from wsi_ncmi.errors import CacheSchemaError, ConfigError, MissingFeaturesError, NonFiniteError
from wsi_ncmi.features.store import feature_path, load_bag, read_feature_attrs
from wsi_ncmi.jsontypes import as_int
from wsi_ncmi.manifest import LABELS, ManifestRow, read_manifest
from wsi_ncmi.train.batching import BagItem, EpochSampler, collate_bags
from wsi_ncmi.train.slide_norm import SLIDE_NORMS, apply_slide_norm
from wsi_ncmi.train.splits import Fold, load_splits

MissingPolicy = Literal["error", "exclude"]
Part = Literal["train", "val", "test"]


class BagDataset(Dataset[BagItem]):
    """Feature bags of a list of slides.

    Keys are slide indices, or ``(index, epoch)`` pairs from :class:`EpochSampler` (the
    epoch seeds the sub-sample).

    Args:
        paths: Features file of each slide.
        labels: Class index of each slide.
        max_patches: Sub-sample bags larger than this (``None``: full bags).
        cache_in_ram: Keep loaded bags in memory (per worker process).
        seed: Seed of the sub-samples.
        expect_dim: If given, every file's feature dimension must equal it.
        expect_encoder: If given, every file's ``encoder`` attribute must equal it.
        slide_norm: Per-slide feature normalisation applied on load
            (:mod:`wsi_ncmi.train.slide_norm`): ``"none"`` or ``"robust"``.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        *,
        max_patches: int | None = None,
        cache_in_ram: bool = False,
        seed: int = 0,
        expect_dim: int | None = None,
        expect_encoder: str | None = None,
        slide_norm: str = "none",
    ) -> None:
        if slide_norm not in SLIDE_NORMS:
            raise ConfigError(f"slide_norm must be one of {list(SLIDE_NORMS)}, got {slide_norm!r}")
        if max_patches is not None and max_patches < 1:
            raise ConfigError(f"max_patches_train must be >= 1 or None, got {max_patches!r}")
        self.paths = list(paths)
        self.labels = list(labels)
        self.max_patches = max_patches
        self.cache_in_ram = cache_in_ram
        self.seed = seed
        self.expect_dim = expect_dim
        self.expect_encoder = expect_encoder
        self.slide_norm = slide_norm
        self._cache: dict[int, Tensor] = {}
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def set_standardization(self, mean: Tensor | None, std: Tensor | None) -> None:
        """Standardise every returned bag as ``(x - mean) / std`` (``(D,)`` float32 each)."""
        self.mean, self.std = mean, std

    def feature_moments(self, max_rows_per_bag: int = 4096) -> tuple[Tensor, Tensor]:
        """Per-dimension mean and std ``(D,)`` over these bags (float64 accumulation).

        At most ``max_rows_per_bag`` rows of each bag count (a fixed, seeded choice), so
        huge bags cannot dominate and the pass stays cheap.
        """
        total: Tensor | None = None
        total_sq: Tensor | None = None
        count = 0
        for index in range(len(self)):
            bag = self.bag(index)
            if bag.shape[0] > max_rows_per_bag:
                rng = np.random.default_rng((self.seed, index, 7))
                keep = rng.choice(bag.shape[0], max_rows_per_bag, replace=False)
                bag = bag[torch.from_numpy(np.sort(keep))]
            rows = bag.to(torch.float64)
            s, sq = rows.sum(dim=0), (rows * rows).sum(dim=0)
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            count += rows.shape[0]
        if total is None or total_sq is None or count == 0:
            raise ConfigError("cannot standardise features: the training split has no bags")
        mean = total / count
        var = (total_sq / count - mean * mean).clamp_min(0.0)
        # eps: dimensions that are constant in training keep their scale instead of blowing up.
        std = var.sqrt().clamp_min(1e-6)
        return mean.to(torch.float32), std.to(torch.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def bag(self, index: int) -> Tensor:
        """The full ``(N, D)`` bag of slide ``index`` (stored dtype; float32 if slide-normalised).

        Raises:
            NonFiniteError: The file holds NaN or infinite features.
            CacheSchemaError: The file is not a valid features file, or has no valid rows.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        path = self.paths[index]
        bag = load_bag(path, expect_dim=self.expect_dim, expect_encoder=self.expect_encoder)
        if bag.shape[0] == 0:
            raise CacheSchemaError(f"{str(path)!r} has no valid patches; re-tile or drop it")
        if not bool(torch.isfinite(bag).all()):
            bad = int((~torch.isfinite(bag)).any(dim=1).sum())
            raise NonFiniteError(
                f"{str(path)!r} has NaN/inf features in {bad} of {bag.shape[0]} rows; "
                + (_import_problem(path) or "fix: re-run wsi-extract on the same --out_dir (it "
                   f"redoes files with NaN/inf rows), or wsi-extract --redo {path.stem}; add "
                   "--dtype float32 if float16 overflowed")
            )  # fmt: skip
        bag = apply_slide_norm(bag, self.slide_norm)
        if self.cache_in_ram:
            self._cache[index] = bag
        return bag

    def __getitem__(self, key: int | tuple[int, int]) -> BagItem:
        """``{"features": (n, D), "target": (), "index": ()}`` for one slide."""
        index, epoch = (key, -1) if isinstance(key, int) else (int(key[0]), int(key[1]))
        bag = self.bag(index)
        if self.max_patches is not None and epoch >= 0 and bag.shape[0] > self.max_patches:
            rng = np.random.default_rng((self.seed, epoch, index))
            keep = np.sort(rng.choice(bag.shape[0], self.max_patches, replace=False))
            bag = bag[torch.from_numpy(keep)]
        if self.mean is not None and self.std is not None:
            bag = (bag.to(torch.float32) - self.mean) / self.std
        return {
            "features": bag,
            "target": torch.tensor(self.labels[index], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }


def _import_problem(path: Path) -> str | None:
    """The source and fix of an imported features file (``None`` for extracted ones)."""
    from wsi_ncmi.features.foreign_checks import import_problem
    from wsi_ncmi.features.store import read_feature_attrs

    return import_problem(path, read_feature_attrs(path))


class BagDataModule(L.LightningDataModule):
    """Manifest + features root + one fold of a splits file → train/val/test bag loaders.

    Args:
        manifest: Slide manifest CSV (:func:`wsi_ncmi.manifest.read_manifest`).
        features_root: Extraction output root (files are
            ``<root>/features/<encoder>/<slide_id>.h5``).
        encoder: Encoder name of the features.
        splits_file: JSON written by :func:`wsi_ncmi.train.splits.save_splits`.
        fold: Index of the fold in the splits file.
        max_patches_train: Sub-sample training bags to at most this many patches.
        cache_in_ram: Keep loaded bags in memory.
        missing: ``"error"``: any slide without a features file is an error;
            ``"exclude"``: such slides are listed in a warning and in :attr:`excluded`.
        balanced_sampling: Class-balanced sampling of the training bags.
        batch_size: Training bags per optimiser step (padded, see :func:`collate_bags`).
        standardize: Standardise features per dimension with the mean and std of the
            *training* bags (validation and test reuse them, so nothing leaks).
        slide_norm: Per-slide normalisation of every bag, before ``standardize``
            (:mod:`wsi_ncmi.train.slide_norm`).
        num_workers: DataLoader workers.
        pin_memory: Page-locked batches, for faster host-to-GPU copies (set it when
            training on a GPU; ``wsi-train`` does so itself).
        seed: Seed of the sampler and the sub-samples.
        include_empty: Keep slides whose features file has no valid patch (blank,
            ``no_tissue``); by default they are left out of every part and listed in
            :attr:`empty` (:mod:`wsi_ncmi.train.empty`).
    """

    def __init__(
        self,
        manifest: str,
        features_root: str,
        encoder: str,
        splits_file: str,
        fold: int = 0,
        *,
        max_patches_train: int | None = None,
        cache_in_ram: bool = False,
        missing: MissingPolicy = "error",
        balanced_sampling: bool = False,
        batch_size: int = 1,
        standardize: bool = False,
        slide_norm: str = "none",
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        include_empty: bool = False,
    ) -> None:
        super().__init__()
        if missing not in ("error", "exclude"):
            raise ConfigError(f"missing must be 'error' or 'exclude', got {missing!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.save_hyperparameters()
        self.manifest = manifest
        self.features_root = features_root
        self.encoder = encoder
        self.splits_file = splits_file
        self.fold_index = fold
        self.max_patches_train = max_patches_train
        self.cache_in_ram = cache_in_ram
        self.missing = missing
        self.balanced_sampling = balanced_sampling
        self.batch_size = batch_size
        self.standardize = standardize
        self.slide_norm = slide_norm
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.rows: dict[Part, list[ManifestRow]] = {"train": [], "val": [], "test": []}
        self.excluded: list[str] = []
        self.include_empty = include_empty
        self.empty: list[str] = []
        self.datasets: dict[Part, BagDataset] = {}
        self.fold: Fold | None = None

    @property
    def num_classes(self) -> int:
        """Number of slide classes ``C``."""
        return len(LABELS)

    def path_of(self, row: ManifestRow) -> Path:
        """Features file of a slide."""
        return feature_path(self.features_root, self.encoder, row.slide_id)

    def class_counts(self) -> list[int]:
        """Training-set count of each class (after exclusions)."""
        counts = [0] * self.num_classes
        for row in self.rows["train"]:
            counts[row.label_index] += 1
        return counts

    def setup(self, stage: str | None = None) -> None:
        """Resolve the fold's slides and their files (idempotent)."""
        if self.datasets:
            return
        rows = read_manifest(self.manifest)
        splits = load_splits(self.splits_file, rows)
        if not 0 <= self.fold_index < len(splits.folds):
            raise ConfigError(
                f"fold must be in [0, {len(splits.folds)}) for {self.splits_file!r}, "
                f"got {self.fold_index!r}"
            )
        self.fold = splits.folds[self.fold_index]
        by_id = {row.slide_id: row for row in rows}
        missing: list[str] = []
        for part in ("train", "val", "test"):
            wanted = [by_id[s] for s in getattr(self.fold, part)]
            present = [row for row in wanted if self.path_of(row).is_file()]
            missing += [row.slide_id for row in wanted if not self.path_of(row).is_file()]
            self.rows[part] = present
        if missing:
            where = self.path_of(by_id[missing[0]]).parent
            message = (
                f"{len(missing)} slides of fold {self.fold.name!r} have no features file in "
                f"{str(where)!r}: {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )
            if self.missing == "error":
                raise MissingFeaturesError(
                    message + "; run wsi-extract for them or set missing='exclude'"
                )
            warnings.warn(message + "; they are excluded (missing='exclude')", stacklevel=2)
            self.excluded = missing
        if not self.include_empty:  # blank (no_tissue) slides: out before the fold trains
            from wsi_ncmi.train.empty import drop_empty

            self.empty = drop_empty(self.rows, self.path_of)
        if not self.rows["train"] or not self.rows["val"]:
            raise MissingFeaturesError(
                f"fold {self.fold.name!r} has {len(self.rows['train'])} training and "
                f"{len(self.rows['val'])} validation slides with features; both must be > 0"
            )
        from wsi_ncmi.features.provenance import check_features_coords

        for row in (r for part_rows in self.rows.values() for r in part_rows):
            check_features_coords(self.path_of(row))  # attributes only: ~1 ms per slide
        # One encoder and one feature width per run: every bag must match the first
        # training file (mixing extracted and imported features of another encoder fails).
        first = read_feature_attrs(self.path_of(self.rows["train"][0]))
        for part, part_rows in self.rows.items():
            self.datasets[part] = BagDataset(
                [self.path_of(row) for row in part_rows],
                [row.label_index for row in part_rows],
                max_patches=self.max_patches_train if part == "train" else None,
                cache_in_ram=self.cache_in_ram,
                seed=self.seed,
                expect_dim=as_int(first["out_dim"]),
                expect_encoder=str(first["encoder"]),
                slide_norm=self.slide_norm,
            )
        if self.standardize:
            mean, std = self.datasets["train"].feature_moments()
            for dataset in self.datasets.values():
                dataset.set_standardization(mean, std)

    def _loader(self, part: Part, train: bool = False) -> DataLoader[BagItem]:
        dataset = self.datasets[part]
        sampler = EpochSampler(dataset.labels, self.seed, self.balanced_sampling) if train else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else 1,
            sampler=sampler,
            collate_fn=collate_bags,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def full_bag_loader(self, part: Part) -> DataLoader[BagItem]:
        """Whole bags of one part, in manifest order, one slide per batch.

        For ``"train"`` this is the training slides without sub-sampling (what the linear
        probe of :mod:`wsi_ncmi.train.probe` fits on): a bag is sub-sampled only when
        the training sampler asks for it by epoch, so the same dataset (and its RAM
        cache) serves. Validation and test bags are whole already.
        """
        return self._loader(part)

    def train_steps_per_epoch(self, accumulate_grad_batches: int = 1) -> int:
        """Optimiser steps of one training epoch: ``ceil(ceil(slides / batch) / accumulate)``."""
        batches = -(-len(self.datasets["train"]) // self.batch_size)
        return max(-(-batches // max(accumulate_grad_batches, 1)), 1)

    def train_dataloader(self) -> DataLoader[BagItem]:
        """Training batches of ``batch_size`` bags (epoch-seeded, sub-sampled, balanced).

        The order is seeded per epoch, bags are sub-sampled to ``max_patches_train`` and
        optionally drawn class-balanced; the last batch of an epoch may be smaller.
        """
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader[BagItem]:
        """Full validation bags, in manifest order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader[BagItem]:
        """Full test bags, in manifest order."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader[BagItem]:
        """Full test bags (what the reports describe)."""
        return self._loader("test")
