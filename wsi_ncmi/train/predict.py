"""Test-time prediction of a fold: slides, the validation-fitted decision rule, per-rule reports.

The loss's own rule (argmax, or nearest centroid for NCMI-MIL) and the prior-aware rule of
:mod:`wsi_ncmi.losses.decision` (fitted on the validation slides of the selected
checkpoint) both predict the test slides; :func:`decision_reports` scores each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np

from wsi_ncmi.losses.decision import PriorRule, fit_prior_rule, log_scores
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.quiet import lightning_loop
from wsi_ncmi.train.config import TrainConfig
from wsi_ncmi.train.evaluation import MetricsReport
from wsi_ncmi.train.module import MILClassifier
from wsi_ncmi.train.probe import ProbeResult, linear_probe
from wsi_ncmi.train.report import compute_report


def predict_slides(
    trainer: L.Trainer, model: MILClassifier, loader: Any, ckpt_path: str | None
) -> list[dict[str, Any]]:
    """Per-slide ``predict_step`` outputs of a loader (batches split into slides).

    Args:
        trainer: The fold's Trainer.
        model: The LightningModule.
        loader: A DataLoader of bags.
        ckpt_path: Checkpoint to predict with (``None``: the current weights).

    Returns:
        One dict per slide: ``index``, ``target``, ``pred``, ``probs (C,)``,
        ``attention (N,)`` (a NumPy array).
    """
    with lightning_loop():
        batches: list[Any] = list(trainer.predict(model, loader, ckpt_path=ckpt_path) or [])
    slides = []
    for batch in batches:
        for b in range(int(batch["index"].shape[0])):
            item = {k: v[b] for k, v in batch.items()}
            item["attention"] = item["attention"].numpy()
            slides.append(item)
    return slides


def fit_decision_rule(
    val_predictions: Sequence[dict[str, Any]], class_counts: Sequence[int]
) -> PriorRule:
    """Fit the prior-aware rule on the validation slides of a checkpoint (never on test).

    Args:
        val_predictions: :func:`predict_slides` of the validation slides with the selected
            checkpoint.
        class_counts: Training count of each class (the prior).

    Returns:
        The fitted rule.
    """
    probs = np.stack([np.asarray(v["probs"], dtype=np.float64) for v in val_predictions])
    targets = np.asarray([int(v["target"]) for v in val_predictions])
    return fit_prior_rule(log_scores(probs), targets, list(class_counts))


def probe_embeddings(
    train: Sequence[dict[str, Any]],
    parts: dict[str, Sequence[dict[str, Any]]],
    num_classes: int,
) -> ProbeResult:
    """The linear probe of :mod:`wsi_ncmi.train.probe` on :func:`predict_slides` outputs.

    Args:
        train: Per-slide predictions (with ``embedding``) of the whole training bags.
        parts: Part name → per-slide predictions to score.
        num_classes: ``C``.

    Returns:
        The probe's scores.
    """

    def arrays(items: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
        if not items:
            return np.zeros((0, 1)), np.zeros(0, dtype=np.int64)
        x = np.stack([np.asarray(v["embedding"], dtype=np.float64) for v in items])
        return x, np.asarray([int(v["target"]) for v in items], dtype=np.int64)

    train_x, train_y = arrays(train)
    return linear_probe(
        train_x, train_y, {name: arrays(items) for name, items in parts.items()}, num_classes
    )


def decision_reports(
    records: Sequence[dict[str, Any]], manifest_rows: Sequence[ManifestRow], config: TrainConfig
) -> dict[str, MetricsReport]:
    """Pooled and per-hospital metrics of the test slides under each decision rule.

    Returns:
        ``{"default": report, "calibrated": report}`` (reports as :func:`compute_report`),
        empty if the records carry no per-rule columns.
    """
    out: dict[str, MetricsReport] = {}
    for name in ("default", "calibrated"):
        column = f"pred_label_{name}"
        if records and column in records[0]:
            renamed = [r | {"pred_label": r[column]} for r in records]
            out[name] = compute_report(
                renamed, manifest_rows, n_bootstrap=config.report.bootstrap, seed=config.seed
            )
    return out
