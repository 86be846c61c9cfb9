"""Small inputs for the harness: learnable feature bags with a manifest, and a train config.

The bags come from :mod:`wsi_ncmi.synth.bags` (written with the public
:class:`~wsi_ncmi.features.store.FeatureFileWriter`, so training reads them exactly as it
reads ``wsi-extract`` output).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from wsi_ncmi.synth.bags import signal_bag_cohort

BAG_ENCODER = "fault-enc"


def bag_cohort(
    root: Path, *, centers: int = 4, patients_per_center: int = 2, slides_per_patient: int = 3
) -> Path:
    """Manifest ``root/manifest.csv`` plus one bag per slide; returns the manifest path."""
    manifest, _ = signal_bag_cohort(
        root,
        encoder=BAG_ENCODER,
        centers=centers,
        patients_per_center=patients_per_center,
        slides_per_patient=slides_per_patient,
    )
    return manifest


def train_config(root: Path, path: Path, *, epochs: int = 6) -> Path:
    """A ``wsi-train`` YAML config for the bag cohort under ``root`` (no ``out_dir``)."""
    config = {
        "seed": 0,
        "data": {
            "manifest": str(root / "manifest.csv"),
            "features_root": str(root),
            "encoder": BAG_ENCODER,
            "max_patches_train": 30,
            "batch_size": 1,  # one slide per step: the harness's step numbers assume it
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
