"""Prediction speed from cached features (issue 27): slides per second of wsi-predict's stage 3.

Writes ``--slides`` features files of ``--patches × --dim`` float16 rows (random values,
contiguous HDF5, as wsi-extract writes them), a model bundle around an untrained ABMIL
with the default sizes (1024 → 512 → 256, gated attention, CE head), loads it with
``wsi_ncmi.load_model``, and times :func:`wsi_ncmi.predict.run.predict_slides` (the
contract check, the bag read, the QC score and the forward pass of every slide) in this
process, after one untimed pass that warms the page cache. It also reports the time of
the bag reads alone and of the forward passes alone.

    python tools/bench/predict_speed.py --slides 40 --patches 5000 --dim 1024
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def _write_bags(root: Path, n_slides: int, n_patches: int, dim: int) -> list[str]:
    import numpy as np

    from wsi_ncmi.features.store import FeatureFileWriter, feature_path

    rng = np.random.default_rng(0)
    coords = np.stack(np.meshgrid(np.arange(100), np.arange(n_patches // 100 + 1)), -1)
    coords = (coords.reshape(-1, 2)[:n_patches] * 256).astype(np.int64)
    ids = []
    for i in range(n_slides):
        slide_id = f"slide_{i:04d}"
        path = feature_path(root, "bench-enc", slide_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        attrs = {
            "slide_id": slide_id,
            "encoder": "bench-enc",
            "encoder_spec": {"name": "bench-enc", "out_dim": dim},
            "coords_params_hash": "bench",
            "extraction_hash": "bench",
            "patch_size_px": 256,
            "target_mpp": 0.5,
        }
        writer = FeatureFileWriter(path, coords, dim, "float16", attrs)
        features = rng.standard_normal((n_patches, dim), dtype=np.float32)
        writer.write_rows(0, features, np.ones(n_patches, dtype=bool))
        writer.finish()
        ids.append(slide_id)
    return ids


def _bundle(out: Path, dim: int) -> Path:
    import torch

    from wsi_ncmi.losses import build_loss
    from wsi_ncmi.losses.decision import log_prior
    from wsi_ncmi.manifest import LABELS
    from wsi_ncmi.mil import build_aggregator
    from wsi_ncmi.train.bundle import write_bundle
    from wsi_ncmi.train.module import MILClassifier

    torch.manual_seed(0)
    kwargs = {"in_dim": dim, "num_classes": 4, "class_head": True}
    module = MILClassifier(build_aggregator("abmil", **kwargs), build_loss("ce", num_classes=4))
    manifest = {
        "classes": list(LABELS),
        "aggregator": {"name": "abmil", "kwargs": kwargs},
        "loss": {"name": "ce", "kwargs": {"num_classes": 4}},
        "encoder": {"name": "bench-enc", "identity_hash": "", "out_dim": dim},
        "tiling": {"target_mpp": 0.5, "patch_size_px": 256},
        "features": {"slide_norm": "none", "standardize": False},
        "decision": {
            "default": "calibrated",
            "rule": {
                "scale": 0.5,
                "log_prior": [float(v) for v in log_prior([4, 3, 2, 1])],
                "val_macro_f1": 0.0,
                "val_macro_f1_default": 0.0,
            },
        },
        "qc": {"ood_threshold": 1e9},
    }
    stats = {"ood_mean": torch.zeros(dim), "ood_std": torch.ones(dim)}
    return write_bundle(out, manifest, module.state_dict(), stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=40)
    parser.add_argument("--patches", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    import torch

    from wsi_ncmi.features.store import feature_path, load_bag
    from wsi_ncmi.predict.model import Ensemble, load_model
    from wsi_ncmi.predict.run import predict_slides

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="predict_speed_") as tmp:
        root = Path(tmp)
        ids = _write_bags(root, args.slides, args.patches, args.dim)
        model = Ensemble([load_model(_bundle(root / "model", args.dim))])
        slides = [(slide_id, None) for slide_id in ids]
        paths = [feature_path(root, "bench-enc", slide_id) for slide_id in ids]
        predict_slides(slides, root, model, min_patches=1, ood_threshold=1e9)  # warm-up
        totals, reads, forwards = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predict_slides(slides, root, model, min_patches=1, ood_threshold=1e9)
            totals.append(time.perf_counter() - start)
            start = time.perf_counter()
            bags = [load_bag(p) for p in paths]
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            for bag in bags:
                model.models[0].scores(bag)
            forwards.append(time.perf_counter() - start)
    best = min(totals)
    print(
        json.dumps(
            {
                "slides": args.slides,
                "patches": args.patches,
                "dim": args.dim,
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "load_average": os.getloadavg(),
                "slides_per_s_best": args.slides / best,
                "slides_per_s_median": args.slides / statistics.median(totals),
                "read_ms_per_slide": 1000 * min(reads) / args.slides,
                "forward_ms_per_slide": 1000 * min(forwards) / args.slides,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
