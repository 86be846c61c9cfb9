"""Why a model scores what it scores: the per-fold diagnostics of a training run.

For each fold: the validation score the checkpoint was selected on, the test macro-F1 and
the drop between them (a drop that in-hospital validation cannot see is a hospital shift),
the linear probe on the frozen slide embeddings (:mod:`wsi_ncmi.train.probe`), and, on
generated cohorts, the attention mass on true tumour per true class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.train.results import FoldResult


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


@dataclass(frozen=True)
class FoldDiagnostics:
    """Why one fold scores what it scores.

    Attributes:
        fold: Fold name.
        val_selected: The monitored validation value of the selected checkpoint.
        test_macro_f1: Pooled test macro-F1 (NaN where undefined).
        val_to_test_drop: ``val_selected - test_macro_f1``.
        probe_val: Macro-F1 of the linear probe on the validation slides.
        probe_test: Same on the test slides.
        tumour_attention_by_class: Mean attention mass on true tumour per true class.

    ``None`` where unavailable.
    """

    fold: str
    val_selected: float | None
    test_macro_f1: float | None
    val_to_test_drop: float | None
    probe_val: float | None
    probe_test: float | None
    tumour_attention_by_class: dict[str, float]

    def to_json(self) -> JSONObject:
        """The fold's entry of the run's ``diagnostics`` in ``metrics.json``."""
        return {
            "fold": self.fold,
            "val_selected": self.val_selected,
            "test_macro_f1": self.test_macro_f1,
            "val_to_test_drop": self.val_to_test_drop,
            "probe_val": self.probe_val,
            "probe_test": self.probe_test,
            "tumour_attention_by_class": dict(self.tumour_attention_by_class),
        }


def fold_diagnostics(fold: FoldResult) -> FoldDiagnostics:
    """The diagnostics of one fold."""
    test = fold.metrics.pooled.macro_f1
    val = fold.best_score
    probe = fold.probe.macro_f1
    return FoldDiagnostics(
        fold=fold.fold,
        val_selected=val,
        test_macro_f1=test,
        val_to_test_drop=None if val is None or test is None else float(val) - float(test),
        probe_val=probe.get("val"),
        probe_test=probe.get("test"),
        tumour_attention_by_class=dict(fold.attention.tumour_attention_by_class),
    )


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
            f"{k} {v:.2f}" for k, v in sorted(d.tumour_attention_by_class.items())
        )
        cells = [
            d.fold,
            _fmt(d.val_selected),
            _fmt(d.test_macro_f1),
            _fmt(d.val_to_test_drop),
            _fmt(d.probe_val),
            _fmt(d.probe_test),
            attention or "no ground truth",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = ["FoldDiagnostics", "diagnostics_table", "fold_diagnostics"]
