"""Small inputs for the harness: learnable feature bags with a manifest, and a train config.

The bags are written with the public :class:`~wsi_ncmi.features.store.FeatureFileWriter`,
so training reads them exactly as it reads ``wsi-extract`` output. A tumour slide (label
class ``c > 0``) has a block of patches carrying ``+signal`` on features ``0`` and ``c``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from wsi_ncmi.features.store import FeatureFileWriter, feature_path
from wsi_ncmi.manifest import LABELS, ManifestRow, write_manifest

BAG_ENCODER = "fault-enc"
PATCH = 64


def write_bag(
    root: Path,
    slide_id: str,
    label: int,
    rng: np.random.Generator,
    *,
    dim: int = 16,
    side: int = 6,
    signal: float = 6.0,
) -> Path:
    """One ``side × side``-patch features file for ``slide_id`` under ``root``."""
    xs, ys = np.meshgrid(np.arange(side) * PATCH, np.arange(side) * PATCH)
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    features = rng.normal(0.0, 1.0, (len(coords), dim)).astype(np.float32)
    if label > 0:
        inside = (coords[:, 0] < PATCH * (1 + label)) & (coords[:, 1] < PATCH * 3)
        features[inside, label] += signal
        features[inside, 0] += signal
    path = feature_path(root, BAG_ENCODER, slide_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {
        "slide_id": slide_id,
        "encoder": BAG_ENCODER,
        "encoder_spec": {"name": BAG_ENCODER, "out_dim": dim},
        "coords_params_hash": "faults",
        "extraction_hash": "faults",
        "patch_size_px": PATCH,
        "target_mpp": 1.0,
    }
    writer = FeatureFileWriter(path, coords, dim, "float16", attrs)
    writer.write_rows(0, features, np.ones(len(coords), dtype=bool))
    writer.finish()
    return path


def bag_cohort(
    root: Path, *, centers: int = 4, patients_per_center: int = 2, slides_per_patient: int = 3
) -> Path:
    """Manifest ``root/manifest.csv`` plus one bag per slide; returns the manifest path."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    k = 0
    for center in range(centers):
        for p in range(patients_per_center):
            patient = f"patient_{center}{p:02d}"
            for s in range(slides_per_patient):
                rows.append(
                    ManifestRow(
                        f"{patient}_node_{s}", patient, center, LABELS[(k + center) % len(LABELS)]
                    )
                )
                k += 1
    write_manifest(rows, root / "manifest.csv")
    rng = np.random.default_rng(0)
    for row in rows:
        write_bag(root, row.slide_id, row.label_index, rng)
    return root / "manifest.csv"


def train_config(root: Path, path: Path, *, epochs: int = 6) -> Path:
    """A ``wsi-train`` YAML config for the bag cohort under ``root`` (no ``out_dir``)."""
    config = {
        "seed": 0,
        "data": {
            "manifest": str(root / "manifest.csv"),
            "features_root": str(root),
            "encoder": BAG_ENCODER,
            "max_patches_train": 30,
        },
        "split": {
            "kind": "fixed",
            "train_centers": [0, 1],
            "val_centers": [2],
            "test_centers": [3],
        },
        "model": {"name": "abmil", "kwargs": {"hidden_dim": 16, "attention_dim": 8}},
        "loss": {"name": "ce", "kwargs": {}},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": epochs, "patience": 0, "accelerator": "cpu"},
        "report": {"bootstrap": 20, "attention_top_k": 2, "max_heatmaps": 0},
    }
    path.write_text(yaml.safe_dump(config))
    return path
