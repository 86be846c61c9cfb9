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
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_ncmi.bench.cells import PREDICTIONS_NAME, VAL_KEYS
from wsi_ncmi.bench.stats import PairedSlides, align
from wsi_ncmi.manifest import LABELS, ManifestRow

TEST_KEYS = (
    "n",
    "macro_f1",
    "accuracy",
    "balanced_accuracy",
    "auroc_macro_ovr",
    "kappa_quadratic",
    "patients",
    "patient_kappa_quadratic",
    "patient_stage_accuracy",
)
RunKey = tuple[str, str, int]  # (model, loss, seed)


def result_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (cell, test hospital), sorted by model, loss, seed, hospital."""
    rows = []
    for res in results:
        for center, metrics in sorted(res["test"]["per_center"].items(), key=lambda x: int(x[0])):
            row: dict[str, Any] = {
                "model": res["model"],
                "loss": res["loss"],
                "seed": res["seed"],
                "fold": res["fold"],
                "hospital": int(center),
            }
            row |= {key: metrics.get(key) for key in TEST_KEYS}
            low, high = metrics.get("macro_f1_ci95") or (None, None)
            row |= {"macro_f1_ci95_low": low, "macro_f1_ci95_high": high}
            per_class = metrics.get("f1_per_class") or {}
            row |= {f"f1_{name}": per_class.get(name) for name in LABELS}
            for rule, report in (res.get("test_by_decision") or {}).items():
                rule_metrics = report.get("per_center", {}).get(center, {})
                row[f"macro_f1_{rule}"] = rule_metrics.get("macro_f1")
            row["prior_scale"] = (res.get("decision_rule") or {}).get("scale")
            row |= {f"val_{key}": res.get("val", {}).get(key) for key in VAL_KEYS}
            probe = (res.get("probe") or {}).get("macro_f1") or {}
            row |= {f"probe_{part}_macro_f1": probe.get(part) for part in ("val", "test")}
            by_class = (res.get("attention") or {}).get("tumour_attention_by_class") or {}
            row |= {f"tumour_attention_{name}": by_class.get(name) for name in LABELS[1:]}
            row |= {
                "tumour_attention": (res.get("attention") or {}).get("mean_tumour_attention"),
                "best_epoch": res.get("best_epoch"),
                "epochs_trained": res.get("epochs_trained"),
                "loss_name": res["loss_name"],
                "model_name": res["model_name"],
                "seconds": round(float(res.get("seconds", 0.0)), 2),
                "config_hash": res["config_hash"],
                "cell_id": res["cell_id"],
            }
            if "variant" in res:  # a tuned loss: the chosen grid variant
                row["variant"] = res["variant"]
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
    cells_dir: Path, results: Sequence[Mapping[str, Any]]
) -> dict[RunKey, list[dict[str, Any]]]:
    """Test predictions of each (model, loss, seed), concatenated over its folds."""
    runs: dict[RunKey, list[dict[str, Any]]] = defaultdict(list)
    for res in results:
        path = cells_dir / res["cell_id"] / PREDICTIONS_NAME
        runs[(res["model"], res["loss"], int(res["seed"]))] += read_predictions(path)
    return dict(runs)


def run_reports(
    runs: Mapping[RunKey, list[dict[str, Any]]],
    manifest_rows: Sequence[ManifestRow],
    *,
    n_bootstrap: int = 200,
) -> dict[RunKey, dict[str, Any]]:
    """``compute_report`` (pooled and per hospital, with pN kappa) of every run."""
    from wsi_ncmi.train.report import compute_report

    return {
        key: compute_report(records, manifest_rows, n_bootstrap=n_bootstrap, seed=key[2])
        for key, records in runs.items()
    }


def group_metric(report: Mapping[str, Any], group: str, key: str) -> float:
    """``report["pooled"][key]`` for ``group == "pooled"``, else the hospital's value."""
    block = report["pooled"] if group == "pooled" else report["per_center"].get(group)
    value = None if block is None else block.get(key)
    return float("nan") if value is None else float(value)


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
