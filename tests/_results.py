"""Typed result records for tests: a group's metrics, a report, a bench cell's result.

Each builder fills every field with a plain value; tests override the fields they exercise.
"""

from __future__ import annotations

from typing import Any

from wsi_ncmi.bench.cell_result import CellResult, EpochValidation
from wsi_ncmi.bench.plan import CELL_SCHEMA
from wsi_ncmi.losses.decision import PriorRule
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.attention_summary import AttentionSummary
from wsi_ncmi.train.evaluation import GroupMetrics, MetricsReport
from wsi_ncmi.train.probe import ProbeResult


def group_metrics(macro_f1: float | None = 0.5, **overrides: Any) -> GroupMetrics:
    """A group of 4 slides, one per class, with ``macro_f1`` and ``overrides``."""
    values: dict[str, Any] = {
        "n": 4,
        "macro_f1": macro_f1,
        "accuracy": 0.5,
        "balanced_accuracy": 0.5,
        "auroc_macro_ovr": 0.75,
        "kappa_quadratic": 0.4,
        "f1_per_class": dict.fromkeys(LABELS, 0.5),
        "confusion_matrix": [[1 if i == j else 0 for j in range(4)] for i in range(4)],
        "macro_f1_ci95": (0.1, 0.9),
        "patients": 2,
        "patient_kappa_quadratic": 0.3,
        "patient_stage_accuracy": 0.5,
        "undefined": {},
    }
    return GroupMetrics(**(values | overrides))


def metrics_report(pooled_f1: float | None = 0.5, centers: tuple[int, ...] = (0,)) -> MetricsReport:
    """Pooled macro-F1 ``pooled_f1``; each of ``centers`` a default group."""
    return MetricsReport(group_metrics(pooled_f1), {str(c): group_metrics() for c in centers})


def cell_result(
    loss: str = "ce",
    model: str = "abmil",
    *,
    seed: int = 0,
    fold_index: int = 0,
    val: dict[str, float | None] | None = None,
    test_f1: float | None = 0.5,
    history: list[EpochValidation] | None = None,
    **overrides: Any,
) -> CellResult:
    """A finished cell of ``loss`` and ``model`` on fold ``loho_center<fold_index>``."""
    fold = f"loho_center{fold_index}"
    values: dict[str, Any] = {
        "schema": CELL_SCHEMA,
        "cell_id": f"{loss}__{model}__seed{seed}__{fold}",
        "loss": loss,
        "loss_name": loss,
        "model": model,
        "model_name": model,
        "seed": seed,
        "fold": fold,
        "fold_index": fold_index,
        "test_centers": [fold_index],
        "config_hash": "0" * 16,
        "monitor": "val/macro_f1_calibrated",
        "best_score": 0.5,
        "best_epoch": 1,
        "epochs_trained": 2,
        "val": val or {},
        "history": history or [],
        "test": metrics_report(test_f1, (fold_index,)),
        "decision_rule": PriorRule(0.5, (-1.0, -2.0, -2.0, -1.5), 0.5, 0.4),
        "test_by_decision": {},
        "attention": AttentionSummary(0, None, None, {}),
        "probe": ProbeResult(8, {"val": 0.5, "test": None}),
        "excluded": [],
        "seconds": 1.0,
        "host": "host",
        "pid": 1,
        "finished_at": "2026-01-01T00:00:00+0000",
    }
    return CellResult(**(values | overrides))
