"""Helpers for the training tests: a small manifest and learnable HDF5 feature bags.

Thin wrappers over :mod:`wsi_ncmi.synth.bags` (shared with the fault harness), plus a
bag with a NaN for the non-finite-input tests.
"""

from __future__ import annotations

from pathlib import Path

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

ENCODER = "test-enc"
__all__ = ["ENCODER", "PATCH", "make_cohort", "make_manifest", "write_bag"]


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
