"""Extra tables of the benchmark summary: decision rules, per-class F1 and diagnostics.

The first two read the runs' test predictions (``predictions.csv`` of each cell, pooled
over the folds of a run) and give mean ± std over seeds; the diagnostics table reads the
cells' result records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.results import RunKey
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.evaluation import MetricsReport


def fmt_mean_std(mean: float, std: float) -> str:
    """``mean ± std`` to 3 decimals (``–`` for a missing mean, no ``±`` for a missing std)."""
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3f}" if not math.isfinite(std) else f"{mean:.3f} ± {std:.3f}"


def decision_table(runs: Mapping[RunKey, list[dict[str, Any]]]) -> list[str]:
    """Markdown lines: pooled test macro-F1 of each (model, loss) under each decision rule.

    Empty when the predictions carry no per-rule columns (cells of older versions).
    """
    from wsi_ncmi.train.metrics import macro_f1

    rules = ("default", "calibrated")
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    for (model, loss, _seed), records in runs.items():
        if not records or any(f"pred_label_{r}" not in records[0] for r in rules):
            return []
        cell = values.setdefault((model, loss), {r: [] for r in rules})
        truth = np.array([LABELS.index(rec["true_label"]) for rec in records])
        for rule in rules:
            pred = np.array([LABELS.index(rec[f"pred_label_{rule}"]) for rec in records])
            cell[rule].append(macro_f1(truth, pred, len(LABELS)))
    lines = [
        "## Decision rules: pooled test macro-F1 (mean ± std over seeds)",
        "",
        "`default`: the loss's own rule (argmax; nearest centroid for NCMI-MIL). "
        "`calibrated`: + λ·log prior, λ ≥ 0 fitted on validation (wsi_ncmi.losses.decision).",
        "",
        "| model | loss | default | calibrated |",
        "|---|---|---|---|",
    ]
    for (model, loss), by_rule in sorted(values.items()):
        cells = [fmt_mean_std(float(np.mean(v)), float(np.std(v))) for v in by_rule.values()]
        lines.append(f"| {model} | {loss} | {cells[0]} | {cells[1]} |")
    return lines


def per_class_table(runs: Mapping[RunKey, list[dict[str, Any]]]) -> list[str]:
    """Markdown lines: pooled test F1 of each class for each (model, loss), mean ± std."""
    from wsi_ncmi.confusion import f1_per_class
    from wsi_ncmi.train.metrics import confusion_matrix

    values: dict[tuple[str, str], list[np.ndarray]] = {}
    for (model, loss, _seed), records in runs.items():
        if not records:
            continue
        truth = [LABELS.index(rec["true_label"]) for rec in records]
        pred = [LABELS.index(rec["pred_label"]) for rec in records]
        scores = f1_per_class(confusion_matrix(truth, pred, len(LABELS)))
        values.setdefault((model, loss), []).append(scores)
    if not values:
        return []
    lines = [
        "## Per-class test F1 (pooled over hospitals, mean ± std over seeds)",
        "",
        "| model | loss | " + " | ".join(LABELS) + " |",
        "|---|---|" + "---|" * len(LABELS),
    ]
    for (model, loss), per_seed in sorted(values.items()):
        stack = np.stack(per_seed)
        cells = [
            fmt_mean_std(float(m), float(sd))
            for m, sd in zip(stack.mean(0), stack.std(0), strict=True)
        ]
        lines.append(f"| {model} | {loss} | " + " | ".join(cells) + " |")
    return lines


def diagnostics_table(
    results: Sequence[CellResult], reports: Mapping[RunKey, MetricsReport]
) -> list[str]:
    """Markdown lines: why each (model, loss) scores what it scores.

    Per (model, loss): the validation score the checkpoints were selected on (mean over
    cells), the pooled test macro-F1 (mean over seeds) and the drop between them; the
    linear probe on the frozen slide embeddings (:mod:`wsi_ncmi.train.probe`, mean over
    cells); the attention mass on true tumour per true class (generated cohorts).
    """
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for r in results:
        groups.setdefault((r.model, r.loss), []).append(r)
    if not groups:
        return []
    positives = LABELS[1:]
    lines = [
        "## Diagnostics: validation-to-test drop, linear probe, attention on tumour",
        "",
        "val: the selection score of the chosen checkpoints (mean over cells); test: pooled "
        "test macro-F1 (mean over seeds); drop = val − test. Probe: logistic regression on "
        "the frozen slide embeddings of the chosen checkpoint, fitted on the training slides "
        "(macro-F1, mean over cells). Attention: mean attention mass on true tumour patches "
        "per true class (slides with ground truth).",
        "",
        "| model | loss | val | test | drop | probe val | probe test | "
        + " | ".join(f"attention {name}" for name in positives)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(positives),
    ]

    def mean(values: Sequence[float | None]) -> float:
        kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        return float(np.mean(kept)) if kept else math.nan

    for (model, loss), cells in sorted(groups.items(), key=lambda item: item[0]):
        val = mean([c.best_score for c in cells])
        test = mean(
            [rep.pooled.macro_f1 for (m, x, _s), rep in reports.items() if m == model and x == loss]
        )
        probes = [{} if c.probe is None else c.probe.macro_f1 for c in cells]
        attention = [
            {} if c.attention is None else c.attention.tumour_attention_by_class for c in cells
        ]
        values = [
            val,
            test,
            val - test,
            mean([p.get("val") for p in probes]),
            mean([p.get("test") for p in probes]),
            *(mean([a.get(name) for a in attention]) for name in positives),
        ]
        text = ["–" if not math.isfinite(v) else f"{v:.3f}" for v in values]
        lines.append(f"| {model} | {loss} | " + " | ".join(text) + " |")
    return lines
