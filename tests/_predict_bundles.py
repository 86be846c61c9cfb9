"""Helpers for the wsi-predict tests: bundles written by real training, and a hand-made one.

:func:`train_bundle` trains a tiny fold with the real ``run_training`` (so ``wsi-train``
writes ``<fold>/model/``). :func:`encoder_bundle` writes a bundle around an untrained
ABMIL for a registered encoder (``stain-stats``), for the end-to-end tests that start
from slide files: what matters there is the pipeline, not the accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from _train_bags import ENCODER

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

MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "abmil": {"hidden_dim": 16, "attention_dim": 8, "dropout": 0.1},
    "clam_sb": {"hidden_dim": 16, "attention_dim": 8, "dropout": 0.1, "top_k": 2},
    "dsmil": {"hidden_dim": 16, "query_dim": 8, "dropout": 0.1},
    "transmil": {"hidden_dim": 16, "num_heads": 2, "num_landmarks": 4, "dropout": 0.1},
    "mean": {"hidden_dim": 16, "dropout": 0.1},
    "max": {"hidden_dim": 16, "dropout": 0.1},
}


def train_config(
    root: Path, out: Path, loss: str = "ce", model: str = "abmil", **split: Any
) -> TrainConfig:
    """A 3-epoch run on the bag cohort under ``root`` (train 0, val 1, test 2 by default)."""
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
            standardize=loss == "ce",
        ),
        split=SplitConfig(**split),
        model=ModelConfig(model, MODEL_KWARGS[model]),
        loss=LossConfig(loss, {}),
        optim=OptimConfig(lr=1e-2),
        trainer=TrainerConfig(max_epochs=3, patience=0, accelerator="cpu"),
        report=ReportConfig(bootstrap=10, attention_top_k=1, max_heatmaps=0, max_geojson=0),
    )


def encoder_bundle(
    out: Path,
    encoder: str = "stain-stats",
    *,
    target_mpp: float = 1.0,
    patch_size_px: int = 64,
    seed: int = 0,
) -> Path:
    """An untrained ABMIL + CE bundle for ``encoder`` features at ``target_mpp``."""
    from wsi_ncmi.features.encoders.registry import build_encoder
    from wsi_ncmi.losses import build_loss
    from wsi_ncmi.losses.decision import log_prior
    from wsi_ncmi.manifest import LABELS
    from wsi_ncmi.mil import build_aggregator
    from wsi_ncmi.tiling.grid import GridParams
    from wsi_ncmi.tiling.tissue import TissueParams
    from wsi_ncmi.train.bundle import write_bundle
    from wsi_ncmi.train.module import MILClassifier

    spec = build_encoder(encoder).spec
    torch.manual_seed(seed)
    kwargs = {"in_dim": spec.out_dim, "num_classes": 4, "class_head": True, "hidden_dim": 16}
    module = MILClassifier(build_aggregator("abmil", **kwargs), build_loss("ce", num_classes=4))
    grid = GridParams(target_mpp=target_mpp, patch_size_px=patch_size_px, min_tissue=0.5)
    manifest = {
        "classes": list(LABELS),
        "aggregator": {"name": "abmil", "kwargs": kwargs},
        "loss": {"name": "ce", "kwargs": {"num_classes": 4}},
        "encoder": {
            "name": spec.name,
            "identity_hash": spec.identity_hash,
            "out_dim": spec.out_dim,
            "dtype": "float32",
            "random_init": False,
        },
        "tiling": {
            "target_mpp": target_mpp,
            "patch_size_px": patch_size_px,
            "grid": grid.to_dict(),
            "segmentation": TissueParams().to_dict(),
        },
        "features": {"slide_norm": "robust", "standardize": False},
        "decision": {
            "default": "calibrated",
            "rule": {
                "scale": 0.5,
                "log_prior": [float(v) for v in log_prior([4, 3, 2, 1])],
                "val_macro_f1": 0.5,
                "val_macro_f1_default": 0.4,
            },
        },
        "qc": {"ood_threshold": 1e9},
    }
    stats = {"ood_mean": torch.zeros(spec.out_dim), "ood_std": torch.ones(spec.out_dim)}
    return write_bundle(out, manifest, module.state_dict(), stats)
