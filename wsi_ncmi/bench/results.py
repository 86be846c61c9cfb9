"""Collect finished cells: ``results.csv`` rows and per-(model, loss, seed) metrics.

``results.csv`` has one row per (loss, model, seed, fold, test hospital) with every test
metric of that hospital, the validation metrics of the selected epoch (including the
validation CMI/Γ/NCMI) and the run's bookkeeping. The aggregate view pools each run's test
predictions over its folds (in ``loho`` every slide is tested exactly once) and scores
them with :func:`wsi_ncmi.train.report.compute_report`, which gives per-hospital and
pooled metrics and the patient-level pN-stage kappa.
"""

from __future__ import annotations

import csv
import io
import typing
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.cells import PREDICTIONS_NAME, VAL_KEYS
from wsi_ncmi.bench.stats import PairedSlides, align
from wsi_ncmi.manifest import LABELS, ManifestRow
from wsi_ncmi.train.evaluation import MetricsReport, ScalarMetric

#: The test metrics of a cell's row in ``results.csv``, in the order of their columns.
TEST_KEYS: tuple[ScalarMetric, ...] = typing.get_args(ScalarMetric)
RunKey = tuple[str, str, int]  # (model, loss, seed)


def result_rows(results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """One row per (cell, test hospital), sorted by model, loss, seed, hospital."""
    rows = []
    for res in results:
        for center, metrics in sorted(res.test.per_center.items(), key=lambda x: int(x[0])):
            row: dict[str, Any] = {
                "model": res.model,
                "loss": res.loss,
                "seed": res.seed,
                "fold": res.fold,
                "hospital": int(center),
            }
            row |= {key: metrics.value(key) for key in TEST_KEYS}
            low, high = metrics.macro_f1_ci95
            row |= {"macro_f1_ci95_low": low, "macro_f1_ci95_high": high}
            row |= {f"f1_{name}": metrics.f1_per_class.get(name) for name in LABELS}
            for rule, report in res.test_by_decision.items():
                rule_metrics = report.per_center.get(center)
                row[f"macro_f1_{rule}"] = None if rule_metrics is None else rule_metrics.macro_f1
            row["prior_scale"] = None if res.decision_rule is None else res.decision_rule.scale
            row |= {f"val_{key}": res.val.get(key) for key in VAL_KEYS}
            probe = {} if res.probe is None else res.probe.macro_f1
            row |= {f"probe_{part}_macro_f1": probe.get(part) for part in ("val", "test")}
            attention = res.attention
            by_class = {} if attention is None else attention.tumour_attention_by_class
            row |= {f"tumour_attention_{name}": by_class.get(name) for name in LABELS[1:]}
            row |= {
                "tumour_attention": None if attention is None else attention.mean_tumour_attention,
                "best_epoch": res.best_epoch,
                "epochs_trained": res.epochs_trained,
                "loss_name": res.loss_name,
                "model_name": res.model_name,
                "seconds": round(float(res.seconds), 2),
                "config_hash": res.config_hash,
                "cell_id": res.cell_id,
            }
            if res.variant is not None:  # a tuned loss: the chosen grid variant
                row["variant"] = res.variant
            rows.append(row)
    rows.sort(key=lambda r: (r["model"], r["loss"], r["seed"], r["hospital"]))
    return rows


def write_results_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write ``results.csv`` atomically (empty cells for missing values)."""
    from wsi_ncmi.batch import write_text_atomic

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return write_text_atomic(path, buffer.getvalue())


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """A cell's ``predictions.csv`` with typed ``center`` and ``prob_*`` columns."""
    with path.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    for record in records:
        record["center"] = int(record["center"])
        for name in LABELS:
            record[f"prob_{name}"] = float(record[f"prob_{name}"])
    return records


def run_records(
    cells_dir: Path, results: Sequence[CellResult]
) -> dict[RunKey, list[dict[str, Any]]]:
    """Test predictions of each (model, loss, seed), concatenated over its folds."""
    runs: dict[RunKey, list[dict[str, Any]]] = defaultdict(list)
    for res in results:
        runs[res.run_key] += read_predictions(cells_dir / res.cell_id / PREDICTIONS_NAME)
    return dict(runs)


def run_reports(
    runs: Mapping[RunKey, list[dict[str, Any]]],
    manifest_rows: Sequence[ManifestRow],
    *,
    n_bootstrap: int = 200,
) -> dict[RunKey, MetricsReport]:
    """``compute_report`` (pooled and per hospital, with pN kappa) of every run."""
    from wsi_ncmi.train.report import compute_report

    return {
        key: compute_report(records, manifest_rows, n_bootstrap=n_bootstrap, seed=key[2])
        for key, records in runs.items()
    }


def group_metric(report: MetricsReport, group: str, key: ScalarMetric) -> float:
    """The pooled value of ``key`` for ``group == "pooled"``, else the hospital's value.

    NaN where undefined or where the report lacks the hospital.
    """
    block = report.group(group)
    return float("nan") if block is None else block.scalar(key)


def paired_slides(
    runs: Mapping[RunKey, list[dict[str, Any]]],
    model: str,
    base: str,
    treat: str,
    seeds: Sequence[int],
) -> PairedSlides:
    """The test slides of ``model``'s ``base`` and ``treat`` runs, aligned for paired tests.

    Args:
        runs: Test prediction records per run.
        model: Aggregator label.
        base: Baseline loss label.
        treat: Treatment loss label.
        seeds: The sweep's seeds; those where both runs exist are used.

    Returns:
        True classes, hospitals and each seed's two predictions, on the slides every run
        predicted (:func:`~wsi_ncmi.bench.stats.align`).
    """
    both = [s for s in seeds if (model, base, s) in runs and (model, treat, s) in runs]
    truth = {
        r["slide_id"]: (LABELS.index(r["true_label"]), int(r["center"]))
        for key, records in runs.items()
        if key[0] == model
        for r in records
    }

    def preds(loss: str, seed: int) -> dict[str, int]:
        return {r["slide_id"]: LABELS.index(r["pred_label"]) for r in runs[(model, loss, seed)]}

    return align(truth, [preds(base, s) for s in both], [preds(treat, s) for s in both])
