"""Run outputs: predictions CSV, metrics JSON, confusion-matrix and curve PNGs, summary table.

``metrics.json`` holds, for the pooled test slides and for each test hospital, the metrics
of :func:`wsi_ncmi.train.metrics.classification_metrics`, a bootstrap 95% interval of
macro-F1 (slides resampled within each hospital) and the patient-level pN-stage kappa.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from wsi_ncmi.jsontypes import JSONObject, finite_json
from wsi_ncmi.losses.decision import PriorRule, log_scores
from wsi_ncmi.manifest import LABELS, ManifestRow
from wsi_ncmi.train.evaluation import GroupMetrics, MetricsReport
from wsi_ncmi.train.metrics import (
    bootstrap_macro_f1,
    classification_metrics,
    patient_kappa,
    pn_stage,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Decision = Literal["default", "calibrated"]

CURVE_KEYS = (
    ("train/loss", "val/loss"),
    ("val/macro_f1", "val/macro_f1_calibrated"),
    ("val/cmi", "val/gamma", "val/ncmi"),
)


def prediction_records(
    rows: Sequence[ManifestRow],
    predictions: Sequence[Mapping[str, Any]],
    split: str,
    class_names: Sequence[str] = LABELS,
    *,
    rule: PriorRule | None = None,
    decision: Decision = "default",
) -> list[dict[str, Any]]:
    """One record per predicted slide.

    Args:
        rows: Rows of the predicted part, indexed by the predictions' ``index``.
        predictions: ``{"index", "pred", "probs"}`` per slide (``predict_step`` output).
        split: Split name written in the ``split`` column (e.g. ``"loho_center2/test"``).
        class_names: Class names.
        rule: A prior-aware rule fitted on validation; adds the ``pred_label_default``
            and ``pred_label_calibrated`` columns.
        decision: Which rule fills ``pred_label``: ``"default"`` (the loss's own
            prediction) or ``"calibrated"`` (``rule``; needs it).

    Returns:
        Records with ``slide_id, patient_id, center, true_label, pred_label, split`` and
        one ``prob_<class>`` column per class.
    """
    if decision == "calibrated" and rule is None:
        raise ValueError("decision='calibrated' needs a fitted rule")
    records = []
    for item in predictions:
        row = rows[int(item["index"])]
        probs = np.asarray(item["probs"], dtype=np.float64).reshape(-1)
        default = int(item["pred"])
        calibrated = int(rule.predict(log_scores(probs[None]))[0]) if rule else default
        chosen = calibrated if decision == "calibrated" else default
        record: dict[str, Any] = {
            "slide_id": row.slide_id,
            "patient_id": row.patient_id,
            "center": row.center,
            "true_label": row.label,
            "pred_label": class_names[chosen],
            "split": split,
        }
        if rule is not None:
            record["pred_label_default"] = class_names[default]
            record["pred_label_calibrated"] = class_names[calibrated]
        record |= {f"prob_{name}": float(p) for name, p in zip(class_names, probs, strict=True)}
        records.append(record)
    return records


def write_predictions(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write ``predictions.csv`` atomically."""
    from wsi_ncmi.batch import write_text_atomic

    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return write_text_atomic(path, buffer.getvalue())


def _group_metrics(
    records: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    patient_slides: Mapping[str, int],
    n_bootstrap: int,
    seed: int,
) -> GroupMetrics:
    index = {name: i for i, name in enumerate(class_names)}
    y_true = [index[r["true_label"]] for r in records]
    y_pred = [index[r["pred_label"]] for r in records]
    probs = np.array([[r[f"prob_{name}"] for name in class_names] for r in records])
    slides = classification_metrics(y_true, y_pred, probs if len(records) else None, class_names)
    low, high = bootstrap_macro_f1(
        y_true,
        y_pred,
        [r["center"] for r in records],
        len(class_names),
        n_resamples=n_bootstrap,
        seed=seed,
    )
    by_patient: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_patient.setdefault(r["patient_id"], []).append(r)
    complete = {p: rs for p, rs in by_patient.items() if len(rs) == patient_slides.get(p, -1)}
    true_stages = {p: pn_stage([r["true_label"] for r in rs]) for p, rs in complete.items()}
    pred_stages = {p: pn_stage([r["pred_label"] for r in rs]) for p, rs in complete.items()}
    undefined = _undefined(y_true, class_names, set(true_stages.values()), len(complete))
    nan = float("nan")
    return GroupMetrics(
        n=slides.n,
        macro_f1=nan if "macro_f1" in undefined else slides.macro_f1,
        accuracy=slides.accuracy,
        balanced_accuracy=slides.balanced_accuracy,
        auroc_macro_ovr=slides.auroc_macro_ovr,
        kappa_quadratic=nan if "kappa_quadratic" in undefined else slides.kappa_quadratic,
        f1_per_class=slides.f1_per_class,
        confusion_matrix=slides.confusion_matrix,
        macro_f1_ci95=(nan, nan) if "macro_f1_ci95" in undefined else (low, high),
        patients=len(complete),
        patient_kappa_quadratic=(
            patient_kappa(true_stages, pred_stages)
            if complete and "patient_kappa_quadratic" not in undefined
            else nan
        ),
        patient_stage_accuracy=(
            float(np.mean([true_stages[p] == pred_stages[p] for p in complete]))
            if complete
            else nan
        ),
        undefined=undefined,
    )


#: Metrics that compare classes, undefined for a group whose slides share one true class.
BETWEEN_CLASS_METRICS = ("macro_f1", "macro_f1_ci95", "kappa_quadratic")


def _undefined(
    y_true: Sequence[int], class_names: Sequence[str], stages: set[str], patients: int
) -> dict[str, str]:
    """The metrics a group cannot define (reported as NaN), as ``{metric: reason}``.

    With fewer than 2 true classes, a model that predicts that class everywhere would get
    macro-F1 and kappa 1.000 (and any other model a figure that says nothing about telling
    classes apart): they are reported as ``n/a`` with this reason instead.
    """
    reasons: dict[str, str] = {}
    present = sorted({class_names[t] for t in y_true})
    if len(present) == 1:
        reason = f"every test slide of this group is {present[0]!r} (fewer than 2 true classes)"
        for key in BETWEEN_CLASS_METRICS:
            reasons[key] = reason
    if len(stages) == 1 and patients:
        reasons["patient_kappa_quadratic"] = (
            f"every patient of this group is {next(iter(stages))} (fewer than 2 true stages)"
        )
    return reasons


def undefined_notes(report: MetricsReport) -> list[str]:
    """One ``"n/a: <group> <metrics>: <reason>"`` line per group with undefined metrics."""
    notes = []
    for name, m in report.groups():
        by_reason: dict[str, list[str]] = {}
        for key, reason in m.undefined.items():
            by_reason.setdefault(reason, []).append(key)
        notes += [f"n/a: {name} {', '.join(k)}: {r}" for r, k in by_reason.items()]
    return notes


def compute_report(
    records: Sequence[Mapping[str, Any]],
    manifest_rows: Sequence[ManifestRow],
    *,
    class_names: Sequence[str] = LABELS,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> MetricsReport:
    """Pooled and per-hospital metrics of the predicted slides.

    Patient-level metrics use the patients whose slides (all those in the manifest) were
    all predicted.

    Args:
        records: :func:`prediction_records` output (possibly several folds concatenated).
        manifest_rows: The manifest (to know how many slides each patient has).
        class_names: Class names.
        n_bootstrap: Bootstrap resamples for the macro-F1 interval.
        seed: Bootstrap seed.

    Returns:
        The pooled metrics and those of each hospital (in increasing order).
    """
    patient_slides: dict[str, int] = {}
    for row in manifest_rows:
        patient_slides[row.patient_id] = patient_slides.get(row.patient_id, 0) + 1
    centers = sorted({int(r["center"]) for r in records})
    return MetricsReport(
        pooled=_group_metrics(records, class_names, patient_slides, n_bootstrap, seed),
        per_center={
            str(c): _group_metrics(
                [r for r in records if int(r["center"]) == c],
                class_names,
                patient_slides,
                n_bootstrap,
                seed,
            )
            for c in centers
        },
    )


def write_json(data: JSONObject, path: Path) -> Path:
    """Write JSON atomically (NaN/inf become ``null``)."""
    from wsi_ncmi.batch import write_text_atomic

    return write_text_atomic(path, json.dumps(finite_json(dict(data)), indent=1) + "\n")


def save_png(fig: Figure, path: Path, *, dpi: int) -> Path:
    """Save a matplotlib figure as a PNG atomically (no partial image if killed).

    Args:
        fig: The figure.
        path: Output file (its folder is created).
        dpi: Resolution.

    Returns:
        ``path``.
    """
    from wsi_ncmi.batch import write_bytes_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return write_bytes_atomic(path, buffer.getvalue(), fsync=False)


def plot_confusion_matrices(
    report: MetricsReport, out_dir: Path, class_names: Sequence[str] = LABELS
) -> list[Path]:
    """One PNG per test hospital and one pooled (``confusion_<group>.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {"pooled": report.pooled} | {f"center{c}": m for c, m in report.per_center.items()}
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, metrics in groups.items():
        cm = np.asarray(metrics.confusion_matrix)
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        ax.imshow(cm, cmap="Blues")
        for (i, j), value in np.ndenumerate(cm):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(class_names)), class_names, rotation=30)
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        f1 = metrics.scalar("macro_f1")
        ax.set_title(f"{name}: macro-F1 {f1:.3f} (n={metrics.n})", fontsize=9)
        fig.tight_layout()
        path = save_png(fig, out_dir / f"confusion_{name}.png", dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def epoch_history(metrics_csv: Path) -> list[dict[str, float]]:
    """Per-epoch values from a Lightning CSVLogger ``metrics.csv`` (rows merged by epoch)."""
    if not metrics_csv.is_file():
        return []
    merged: dict[int, dict[str, float]] = {}
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            target = merged.setdefault(epoch, {"epoch": float(epoch)})
            for key, value in row.items():
                if value not in ("", None) and key not in ("epoch", "step"):
                    target[key] = float(value)
    return [merged[e] for e in sorted(merged)]


def plot_curves(history: Sequence[Mapping[str, float]], path: Path) -> Path | None:
    """Train/val loss, val macro-F1 and val CMI/Γ/NCMI per epoch in one PNG."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4 * len(CURVE_KEYS), 3.2))
    for ax, keys in zip(axes, CURVE_KEYS, strict=True):
        for key in keys:
            points = [(h["epoch"], h[key]) for h in history if key in h]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)
    return path


def summary_table(report: MetricsReport, title: str = "") -> str:
    """One-screen table: one line per test hospital and one pooled."""

    def fmt(value: float | None) -> str:
        return "   n/a" if value is None or not math.isfinite(value) else f"{value:6.3f}"

    header = (
        f"{'group':<8} {'n':>4} {'macroF1':>7} {'95% CI':>15} {'acc':>6} {'balAcc':>6} "
        f"{'AUROC':>6} {'kappa':>6} {'pts':>4} {'pN-κ':>6}"
    )
    lines = [title, header, "-" * len(header)] if title else [header, "-" * len(header)]
    for name, m in report.groups():
        low, high = m.macro_f1_ci95
        lines.append(
            f"{name:<8} {m.n:>4} {fmt(m.macro_f1):>7} "
            f"[{fmt(low).strip():>6},{fmt(high).strip():>6}] {fmt(m.accuracy)} "
            f"{fmt(m.balanced_accuracy)} {fmt(m.auroc_macro_ovr)} "
            f"{fmt(m.kappa_quadratic)} {m.patients:>4} "
            f"{fmt(m.patient_kappa_quadratic)}"
        )
    return "\n".join(lines + undefined_notes(report))
