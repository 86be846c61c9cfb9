"""Proof that NCMI trains: scikit-learn's digits, MLP 64→256→256→128 (BatchNorm), CE vs NCMI.

Fixed stratified split (test 20%, then val 20% of the rest, random_state 0). Learning rates
are chosen per variant on validation accuracy (mean over the tuning seeds); the final runs
use seeds 0..N-1 and report test accuracy and macro-F1. Every variant run is written to the
JSON file, so the table lists all of them.

    .venv/bin/python tools/bench/loss_digits.py --out outputs/bench/digits
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from wsi_ncmi.images import MLP, LossClassifier, fit_classifier
from wsi_ncmi.losses import build_loss

NUM_CLASSES = 10

# name -> (registered loss, kwargs). "ncmi" is the recommended default.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("ce", {}),
    "ncmi": ("ncmi", {"num_classes": NUM_CLASSES}),
    "ncmi_softmax": ("ncmi", {"num_classes": NUM_CLASSES, "head": "softmax"}),
    "ncmi_alternating": ("ncmi", {"num_classes": NUM_CLASSES, "schedule": {"mode": "alternating"}}),
    "ncmi_literal_alternating": (
        "ncmi",
        {
            "num_classes": NUM_CLASSES,
            "schedule": {
                "mode": "alternating",
                "warmup_epochs": 0,
                "warmup_steps": 0,  # no warm start at all: the class means from the first step
                "damping": 1.0,
            },
        },
    ),
    "ncmi_feature": ("ncmi", {"num_classes": NUM_CLASSES, "head": "feature", "feature_dim": 128}),
    "cmic": ("cmic", {"num_classes": NUM_CLASSES}),
    "squentropy": ("squentropy", {}),
    "focal": ("focal", {}),
    "label_smoothing": ("label_smoothing", {}),
}


class DigitsData(L.LightningDataModule):
    """Digits as flattened 64-d vectors scaled to [0, 1], with the fixed split."""

    def __init__(self, batch_size: int = 128) -> None:
        super().__init__()
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=0.2, stratify=y, random_state=0
        )
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=0
        )
        self.splits = {
            name: TensorDataset(torch.from_numpy(a), torch.from_numpy(b).long())
            for name, (a, b) in {
                "train": (x_train, y_train),
                "val": (x_val, y_val),
                "test": (x_test, y_test),
            }.items()
        }
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["val"], batch_size=512)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["test"], batch_size=512)


def run_one(variant: str, lr: float, seed: int, epochs: int) -> dict[str, Any]:
    """Train one variant with one learning rate and seed; return its metrics."""
    L.seed_everything(seed, verbose=False)
    loss_name, kwargs = VARIANTS[variant]
    model = LossClassifier(
        MLP(64, (256, 256, 128)), 128, NUM_CLASSES, build_loss(loss_name, **kwargs), lr=lr
    )
    start = time.perf_counter()
    fit = fit_classifier(model, DigitsData(), NUM_CLASSES, max_epochs=epochs)
    seconds = time.perf_counter() - start
    return fit.to_json() | {"variant": variant, "lr": lr, "seed": seed, "seconds": seconds}


def _mean_std(values: Sequence[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * std:.2f}"


def _val(scores: dict[float, float], lr: float) -> str:
    return f"{100 * scores[lr]:.2f}" if lr in scores else "not tuned"


def plot_curves(runs: list[dict[str, Any]], path: Path) -> None:
    """Mean validation CMI, Γ and NCMI per epoch of each variant's final runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for variant in dict.fromkeys(r["variant"] for r in runs):
        histories = [r["history"] for r in runs if r["variant"] == variant]
        for ax, key in zip(axes, ("cmi", "gamma", "ncmi"), strict=True):
            curve = np.mean([[h[key] for h in hist] for hist in histories], axis=0)
            ax.plot(np.arange(1, len(curve) + 1), curve, label=variant)
            ax.set_title(f"validation {key} (mean over seeds)")
            ax.set_xlabel("epoch")
            ax.set_yscale("log")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["ce", "ncmi"], choices=list(VARIANTS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.03, 0.1])
    parser.add_argument("--tune-seeds", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/digits"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    args.out.mkdir(parents=True, exist_ok=True)

    tuning: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    rows = []
    for variant in args.variants:
        scores: dict[float, float] = {}
        for lr in args.lrs if len(args.lrs) > 1 else []:
            runs = [run_one(variant, lr, 1000 + s, args.epochs) for s in range(args.tune_seeds)]
            tuning += runs
            scores[lr] = statistics.mean(r["val"]["val/accuracy"] for r in runs)
            print(f"tune {variant} lr={lr}: val acc {100 * scores[lr]:.2f}", flush=True)
        best_lr = max(scores, key=lambda lr: scores[lr]) if len(scores) > 1 else args.lrs[0]
        runs = [run_one(variant, best_lr, seed, args.epochs) for seed in range(args.seeds)]
        final += runs
        acc = [r["test"]["test/accuracy"] for r in runs]
        f1 = [r["test"]["test/macro_f1"] for r in runs]
        collapsed = sum(bool(r["collapsed_epochs"]) for r in runs)
        rows.append(
            f"| {variant} | {best_lr} | {_mean_std(acc)} | {_mean_std(f1)} | "
            f"{_val(scores, best_lr)} | {collapsed}/{len(runs)} |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| variant | lr (val-selected) | test accuracy % (mean ± std) | test macro-F1 % | "
            "val accuracy % at that lr (tuning seeds) | runs with collapse warning |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "runs.json").write_text(json.dumps({"tuning": tuning, "final": final}, indent=1))
    plot_curves(final, args.out / "curves.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
