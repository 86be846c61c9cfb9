"""Why a model scores what it scores: the per-fold diagnostics of a training run.

For each fold: the validation score the checkpoint was selected on, the test macro-F1 and
the drop between them (a drop that in-hospital validation cannot see is a hospital shift),
the linear probe on the frozen slide embeddings (:mod:`wsi_ncmi.train.probe`), and, on
generated cohorts, the attention mass on true tumour per true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wsi_ncmi.train.results import FoldResult


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def fold_diagnostics(fold: FoldResult) -> dict[str, Any]:
    """The diagnostics of one fold, JSON-ready.

    Returns:
        ``{"fold", "val_selected", "test_macro_f1", "val_to_test_drop", "probe_val",
        "probe_test", "tumour_attention_by_class"}`` (``None`` where unavailable).
    """
    test = fold.metrics.get("pooled", {}).get("macro_f1")
    val = fold.best_score
    probe = fold.probe.get("macro_f1", {})
    return {
        "fold": fold.fold,
        "val_selected": val,
        "test_macro_f1": test,
        "val_to_test_drop": None if val is None or test is None else float(val) - float(test),
        "probe_val": probe.get("val"),
        "probe_test": probe.get("test"),
        "tumour_attention_by_class": dict(fold.attention.get("tumour_attention_by_class") or {}),
    }


def diagnostics_table(folds: Sequence[FoldResult], monitor: str) -> str:
    """Markdown table of :func:`fold_diagnostics`, one row per fold, under a legend.

    Args:
        folds: The run's folds.
        monitor: The selection metric's name (the ``val`` column).

    Returns:
        The legend line and the table (plain text that reads as Markdown).
    """
    lines = [
        f"Diagnostics per fold: val = {monitor} of the selected checkpoint; drop = val - test "
        "macro-F1; probe = logistic regression on the frozen slide embeddings, fitted on the "
        "training slides; tumour attention = mean attention mass on true tumour per true "
        "class (generated cohorts).",
        "",
        "| fold | val | test | drop | probe val | probe test | tumour attention by class |",
        "|---|---|---|---|---|---|---|",
    ]
    for fold in folds:
        d = fold_diagnostics(fold)
        attention = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(d["tumour_attention_by_class"].items())
        )
        cells = [
            d["fold"],
            _fmt(d["val_selected"]),
            _fmt(d["test_macro_f1"]),
            _fmt(d["val_to_test_drop"]),
            _fmt(d["probe_val"]),
            _fmt(d["probe_test"]),
            attention or "no ground truth",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["diagnostics_table", "fold_diagnostics"]
