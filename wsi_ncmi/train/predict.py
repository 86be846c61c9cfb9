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
from wsi_ncmi.train.config import TrainConfig
from wsi_ncmi.train.data import BagDataModule
from wsi_ncmi.train.module import MILClassifier
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
    batches: list[Any] = list(trainer.predict(model, loader, ckpt_path=ckpt_path) or [])
    slides = []
    for batch in batches:
        for b in range(int(batch["index"].shape[0])):
            item = {k: v[b] for k, v in batch.items()}
            item["attention"] = item["attention"].numpy()
            slides.append(item)
    return slides


def fit_decision_rule(
    trainer: L.Trainer, model: MILClassifier, datamodule: BagDataModule, ckpt_path: str | None
) -> PriorRule:
    """Fit the prior-aware rule on the validation slides of a checkpoint (never on test).

    Args:
        trainer: The fold's Trainer.
        model: The LightningModule.
        datamodule: The fold's DataModule (validation slides and training class counts).
        ckpt_path: The selected checkpoint.

    Returns:
        The fitted rule.
    """
    val = predict_slides(trainer, model, datamodule.val_dataloader(), ckpt_path)
    probs = np.stack([np.asarray(v["probs"], dtype=np.float64) for v in val])
    targets = np.asarray([int(v["target"]) for v in val])
    return fit_prior_rule(log_scores(probs), targets, datamodule.class_counts())


def decision_reports(
    records: Sequence[dict[str, Any]], manifest_rows: Sequence[ManifestRow], config: TrainConfig
) -> dict[str, Any]:
    """Pooled and per-hospital metrics of the test slides under each decision rule.

    Returns:
        ``{"default": report, "calibrated": report}`` (reports as :func:`compute_report`),
        empty if the records carry no per-rule columns.
    """
    out: dict[str, Any] = {}
    for name in ("default", "calibrated"):
        column = f"pred_label_{name}"
        if records and column in records[0]:
            renamed = [r | {"pred_label": r[column]} for r in records]
            out[name] = compute_report(
                renamed, manifest_rows, n_bootstrap=config.report.bootstrap, seed=config.seed
            )
    return out
