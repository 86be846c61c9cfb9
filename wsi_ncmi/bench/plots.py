"""Benchmark PNGs: grouped bars per hospital, and validation NCMI against macro-F1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from wsi_ncmi.bench.stats import mean_std


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    groups: Sequence[str],
    path: Path,
    *,
    title: str,
    ylabel: str = "test macro-F1",
) -> Path:
    """One bar per loss in each group (hospital or pooled): mean over seeds, ± 1 std.

    Args:
        values: ``{loss: {group: [value per seed]}}``.
        groups: Group names, in order.
        path: Output PNG.
        title: Figure title.
        ylabel: Y axis label.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    losses = list(values)
    width = 0.8 / max(1, len(losses))
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 2), 3.8))
    for i, loss in enumerate(losses):
        stats = [mean_std(values[loss].get(g, [])) for g in groups]
        means = [s[0] for s in stats]
        errors = [0.0 if not np.isfinite(s[1]) else s[1] for s in stats]
        ax.bar(
            x + (i - (len(losses) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            capsize=3,
            label=loss,
        )
    ax.set_xticks(x, list(groups))
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=min(4, len(losses)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ncmi_scatter(
    runs: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    correlations: Mapping[str, tuple[float, float, int]],
) -> Path:
    """Validation NCMI against validation and test macro-F1, one point per run (cell).

    Args:
        runs: ``{"loss", "model", "val_ncmi", "val_macro_f1", "test_macro_f1"}`` per cell.
        path: Output PNG.
        correlations: ``{"val", "test"}`` → Spearman ``(rho, p, n)``, shown in the titles.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    losses = sorted({r["loss"] for r in runs})
    markers = "os^Dvx+*"
    models = sorted({r["model"] for r in runs})
    for ax, key, name in zip(
        axes, ("val", "test"), ("validation", "test (held-out hospital)"), strict=True
    ):
        for loss in losses:
            for j, model in enumerate(models):
                pts = [
                    (r["val_ncmi"], r[f"{key}_macro_f1"])
                    for r in runs
                    if r["loss"] == loss and r["model"] == model
                ]
                pts = [(a, b) for a, b in pts if a is not None and b is not None]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    label = loss if len(models) == 1 else f"{loss} / {model}"
                    ax.scatter(xs, ys, marker=markers[j % len(markers)], label=label, alpha=0.8)
        rho, p, n = correlations.get(key, (float("nan"), float("nan"), 0))
        ax.set_title(f"{name}: Spearman ρ = {rho:.2f} (p = {p:.2g}, n = {n})", fontsize=9)
        ax.set_xlabel("validation NCMI (selected epoch)")
        ax.set_ylabel(f"{name.split(' ')[0]} macro-F1")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ncmi_epochs_scatter(
    points: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    correlation: tuple[float, float, int],
) -> Path:
    """Validation NCMI against validation macro-F1, one point per (run, epoch), per loss.

    Args:
        points: ``{"loss", "val_ncmi", "val_macro_f1"}`` per run and epoch.
        path: Output PNG.
        correlation: Spearman ``(rho, p, n)`` over all points, shown in the title.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for loss in sorted({p["loss"] for p in points}):
        mine = [p for p in points if p["loss"] == loss]
        ax.scatter(
            [p["val_ncmi"] for p in mine],
            [p["val_macro_f1"] for p in mine],
            s=6,
            alpha=0.35,
            label=loss,
        )
    rho, pval, n = correlation
    ax.set_title(
        f"validation NCMI vs macro-F1, every epoch: Spearman ρ = {rho:.2f} "
        f"(p = {pval:.2g}, n = {n})",
        fontsize=9,
    )
    log_scale = all(p["val_ncmi"] > 0 for p in points)
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel("validation NCMI" + (" (log scale)" if log_scale else ""))
    ax.set_ylabel("validation macro-F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
