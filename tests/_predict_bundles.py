"""A hand-made bundle for the wsi-predict tests that start from slide files.

:func:`encoder_bundle` writes a bundle around an untrained ABMIL for a registered encoder
(``stain-stats``): what matters there is the pipeline, not the accuracy. Bundles written by
real training come from ``run_training`` with ``_train_bags.train_config``.
"""

from __future__ import annotations

from pathlib import Path

import torch


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
