"""Helpers for the training tests: a small manifest and learnable HDF5 feature bags.

Every slide is a grid of patches with ``dim`` features of noise. A tumour slide (label
``itc``/``micro``/``macro``, class ``c``) has a rectangular "tumour" region whose patches
carry ``+signal`` on feature ``c`` (and feature 0 for all tumour classes), so the label is
learnable from a few patches. The region is written as a ``tumour_polygons`` entry of a
``center_K/<slide>.gt.json`` file (the synthetic generator's format) under ``slide_dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsi_ncmi.features.store import FeatureFileWriter, feature_path
from wsi_ncmi.manifest import LABELS, ManifestRow, write_manifest

ENCODER = "test-enc"
PATCH = 64


def make_manifest(
    path: Path, centers: int = 4, patients_per_center: int = 4, slides_per_patient: int = 4
) -> list[ManifestRow]:
    """A manifest whose labels cycle so that every center has every class."""
    rows = []
    k = 0
    for center in range(centers):
        for p in range(patients_per_center):
            patient = f"patient_{center}{p:02d}"
            for s in range(slides_per_patient):
                label = LABELS[(k + center) % len(LABELS)]
                k += 1
                rows.append(ManifestRow(f"{patient}_node_{s}", patient, center, label))
    write_manifest(rows, path)
    return rows


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
    """Write one ``side × side``-patch features file (and its gt.json if ``slide_dir``)."""
    xs, ys = np.meshgrid(np.arange(side) * PATCH, np.arange(side) * PATCH)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    features = rng.normal(0.0, 1.0, (len(coords), dim)).astype(np.float32)
    region = (PATCH, PATCH, PATCH * (1 + max(1, label)), PATCH * 3)  # x0, y0, x1, y1
    if label > 0:
        inside = (
            (coords[:, 0] >= region[0])
            & (coords[:, 0] < region[2])
            & (coords[:, 1] >= region[1])
            & (coords[:, 1] < region[3])
        )
        features[inside, label] += signal
        features[inside, 0] += signal
    if nan:
        features[3, 2] = np.nan
    path = feature_path(root, ENCODER, slide_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {
        "slide_id": slide_id,
        "encoder": ENCODER,
        "encoder_spec": {"name": ENCODER, "out_dim": dim},
        "coords_params_hash": "test",
        "extraction_hash": "test",
        "patch_size_px": PATCH,
        "target_mpp": 1.0,
    }
    writer = FeatureFileWriter(path, coords, dim, "float16", attrs)
    if nan:  # the writer refuses non-finite rows: write the file's dataset directly
        writer.write_rows(0, np.nan_to_num(features), np.ones(len(coords), dtype=bool))
        writer._features[3] = features[3].astype(np.float16)
    else:
        writer.write_rows(0, features, np.ones(len(coords), dtype=bool))
    writer.finish()
    if slide_dir is not None and label > 0:
        gt = slide_dir / f"center_{center}" / f"{slide_id}.gt.json"
        gt.parent.mkdir(parents=True, exist_ok=True)
        x0, y0, x1, y1 = region
        gt.write_text(json.dumps({"tumour_polygons": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]]}))
    return path


def make_cohort(
    root: Path, *, dim: int = 16, seed: int = 0, **manifest_kwargs: int
) -> tuple[Path, list[ManifestRow]]:
    """Manifest ``root/manifest.csv``, features under ``root`` and gt.json under ``root/slides``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = make_manifest(root / "manifest.csv", **manifest_kwargs)
    rng = np.random.default_rng(seed)
    for row in rows:
        write_bag(
            root,
            row.slide_id,
            row.label_index,
            rng,
            dim=dim,
            slide_dir=root / "slides",
            center=row.center,
        )
    return root / "manifest.csv", rows
