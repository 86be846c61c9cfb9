"""Helpers for the training tests: a small manifest and learnable HDF5 feature bags.

Thin wrappers over :mod:`wsi_ncmi.synth.bags` (shared with the fault harness), plus a
bag with a NaN for the non-finite-input tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.features.store import FeatureFileWriter, feature_path
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.synth.bags import (
    PATCH,
    bag_attrs,
    cycling_manifest,
    signal_bag_cohort,
    signal_features,
    write_signal_bag,
    write_tumour_truth,
)
from wsi_ncmi.train.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ReportConfig,
    SplitConfig,
    TrainConfig,
    TrainerConfig,
)

ENCODER = "test-enc"
__all__ = [
    "ENCODER",
    "MODEL_KWARGS",
    "PATCH",
    "make_cohort",
    "make_manifest",
    "train_config",
    "write_bag",
]


def make_manifest(
    path: Path, centers: int = 4, patients_per_center: int = 4, slides_per_patient: int = 4
) -> list[ManifestRow]:
    """A manifest whose labels cycle so that every center has every class."""
    return cycling_manifest(path, centers, patients_per_center, slides_per_patient)


def write_bag(
    root: Path,
    slide_id: str,
    label: int,
    rng: np.random.Generator,
    *,
    dim: int = 16,
    side: int = 6,
    signal: float = 6.0,
    nan: bool = False,
    slide_dir: Path | None = None,
    center: int = 0,
) -> Path:
    """Write one ``side × side``-patch features file (and its gt.json if ``slide_dir``).

    ``nan=True`` puts a NaN in row 3, bypassing the writer's finiteness check.
    """
    if not nan:
        path = write_signal_bag(
            root, slide_id, label, rng, encoder=ENCODER, dim=dim, side=side, signal=signal
        )
    else:
        coords, features = signal_features(label, rng, dim=dim, side=side, signal=signal)
        path = feature_path(root, ENCODER, slide_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = FeatureFileWriter(path, coords, dim, "float16", bag_attrs(slide_id, ENCODER, dim))
        writer.write_rows(0, features, np.ones(len(coords), dtype=bool))
        writer._features[3, 2] = np.nan  # the writer refuses non-finite rows
        writer.finish()
    if slide_dir is not None and label > 0:
        write_tumour_truth(slide_dir, center, slide_id, label)
    return path


def make_cohort(
    root: Path, *, dim: int = 16, seed: int = 0, **manifest_kwargs: int
) -> tuple[Path, list[ManifestRow]]:
    """Manifest ``root/manifest.csv``, features under ``root`` and gt.json under ``root/slides``."""
    return signal_bag_cohort(
        root, encoder=ENCODER, dim=dim, seed=seed, slide_dir=root / "slides", **manifest_kwargs
    )


MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "abmil": {"hidden_dim": 16, "attention_dim": 8, "dropout": 0.1},
    "clam_sb": {"hidden_dim": 16, "attention_dim": 8, "dropout": 0.1, "top_k": 2},
    "dsmil": {"hidden_dim": 16, "query_dim": 8, "dropout": 0.1},
    "transmil": {"hidden_dim": 16, "num_heads": 2, "num_landmarks": 4, "dropout": 0.1},
    "mean": {"hidden_dim": 16, "dropout": 0.1},
    "max": {"hidden_dim": 16, "dropout": 0.1},
}


def train_config(
    root: Path,
    out: Path,
    loss: str = "ce",
    model: str = "abmil",
    *,
    epochs: int = 3,
    standardize: bool | None = None,
    **split: Any,
) -> TrainConfig:
    """A short run on the bag cohort under ``root`` (train 0, val 1, test 2 by default).

    Every aggregator has tiny settings (:data:`MODEL_KWARGS`); ``standardize`` defaults
    to ``True`` for CE only, so both feature paths are exercised.
    """
    split = split or {
        "kind": "fixed",
        "train_centers": [0],
        "val_centers": [1],
        "test_centers": [2],
    }
    return TrainConfig(
        out_dir=str(out),
        seed=1,
        data=DataConfig(
            manifest=str(root / "manifest.csv"),
            features_root=str(root),
            encoder=ENCODER,
            max_patches_train=20,
            batch_size=3,
            standardize=loss == "ce" if standardize is None else standardize,
        ),
        split=SplitConfig(**split),
        model=ModelConfig(model, MODEL_KWARGS[model]),
        loss=LossConfig(loss, {}),
        optim=OptimConfig(lr=1e-2),
        trainer=TrainerConfig(max_epochs=epochs, patience=0, accelerator="cpu"),
        report=ReportConfig(bootstrap=10, attention_top_k=1, max_heatmaps=0, max_geojson=0),
    )
