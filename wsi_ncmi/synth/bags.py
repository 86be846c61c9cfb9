"""Learnable synthetic feature bags: a manifest plus HDF5 feature files, no slides.

For tests and the fault harness of the training stage. Every slide is a ``side × side``
grid of patches whose features are standard-normal noise. A tumour slide (class
``c > 0``: itc, micro, macro) has a rectangular "tumour" block of patches carrying
``+signal`` on feature ``c`` and on feature 0, so the label is learnable from a few
patches. The bags are written with :class:`~wsi_ncmi.features.store.FeatureFileWriter`,
so training reads them exactly as it reads ``wsi-extract`` output, and the tumour block
can be written as a ``<slide>.gt.json`` (the synthetic generator's format) for the
attention-on-tumour report.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.batch.atomic import atomic_output, write_text_atomic
from wsi_ncmi.features.store import FeatureFileWriter, feature_path
from wsi_ncmi.manifest import LABELS, ManifestRow, write_manifest

#: Patch side in level-0 pixels of the bags' coordinates.
PATCH = 64


def cycling_manifest(
    path: Path, centers: int = 4, patients_per_center: int = 4, slides_per_patient: int = 4
) -> list[ManifestRow]:
    """Write a manifest whose labels cycle, so that every center has every class."""
    rows = []
    k = 0
    for center in range(centers):
        for p in range(patients_per_center):
            patient = f"patient_{center}{p:02d}"
            for s in range(slides_per_patient):
                label = LABELS[(k + center) % len(LABELS)]
                k += 1
                rows.append(ManifestRow(f"{patient}_node_{s}", patient, center, label))
    with atomic_output(path) as tmp:
        write_manifest(rows, tmp)
    return rows


def tumour_block(label: int) -> tuple[int, int, int, int]:
    """The tumour block ``(x0, y0, x1, y1)`` in level-0 pixels of a class-``label`` bag."""
    return PATCH, PATCH, PATCH * (1 + max(1, label)), PATCH * 3


def signal_features(
    label: int, rng: np.random.Generator, *, dim: int = 16, side: int = 6, signal: float = 6.0
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Coordinates ``(side², 2)`` and features ``(side², dim)`` of one bag."""
    xs, ys = np.meshgrid(np.arange(side) * PATCH, np.arange(side) * PATCH)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    features = rng.normal(0.0, 1.0, (len(coords), dim)).astype(np.float32)
    if label > 0:
        x0, y0, x1, y1 = tumour_block(label)
        inside = (
            (coords[:, 0] >= x0) & (coords[:, 0] < x1) & (coords[:, 1] >= y0) & (coords[:, 1] < y1)
        )
        features[inside, label] += signal
        features[inside, 0] += signal
    return coords, features


def write_signal_bag(
    root: Path,
    slide_id: str,
    label: int,
    rng: np.random.Generator,
    *,
    encoder: str,
    dim: int = 16,
    side: int = 6,
    signal: float = 6.0,
) -> Path:
    """Write one bag to ``<root>/features/<encoder>/<slide_id>.h5``; return its path."""
    coords, features = signal_features(label, rng, dim=dim, side=side, signal=signal)
    path = feature_path(root, encoder, slide_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, fsync=False) as tmp:
        writer = FeatureFileWriter(tmp, coords, dim, "float16", bag_attrs(slide_id, encoder, dim))
        writer.write_rows(0, features, np.ones(len(coords), dtype=bool))
        writer.finish()
    return path


def bag_attrs(slide_id: str, encoder: str, dim: int) -> dict[str, object]:
    """The feature-file attributes of a synthetic bag."""
    return {
        "slide_id": slide_id,
        "encoder": encoder,
        "encoder_spec": {"name": encoder, "out_dim": dim},
        "coords_params_hash": "synthetic-bags",
        "extraction_hash": "synthetic-bags",
        "patch_size_px": PATCH,
        "target_mpp": 1.0,
    }


def write_tumour_truth(slide_dir: Path, center: int, slide_id: str, label: int) -> Path:
    """Write ``<slide_dir>/center_<K>/<slide_id>.gt.json`` with the tumour block."""
    gt = slide_dir / f"center_{center}" / f"{slide_id}.gt.json"
    gt.parent.mkdir(parents=True, exist_ok=True)
    x0, y0, x1, y1 = tumour_block(label)
    write_text_atomic(
        gt, json.dumps({"tumour_polygons": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]]})
    )
    return gt


def signal_bag_cohort(
    root: Path,
    *,
    encoder: str,
    dim: int = 16,
    seed: int = 0,
    slide_dir: Path | None = None,
    centers: int = 4,
    patients_per_center: int = 4,
    slides_per_patient: int = 4,
) -> tuple[Path, list[ManifestRow]]:
    """``root/manifest.csv`` plus one bag per slide (and gt.json under ``slide_dir``)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = cycling_manifest(root / "manifest.csv", centers, patients_per_center, slides_per_patient)
    rng = np.random.default_rng(seed)
    for row in rows:
        write_signal_bag(root, row.slide_id, row.label_index, rng, encoder=encoder, dim=dim)
        if slide_dir is not None and row.label_index > 0:
            write_tumour_truth(slide_dir, row.center, row.slide_id, row.label_index)
    return root / "manifest.csv", rows
