"""Slide- and patient-level metrics.

Slide level: macro-F1 (primary), accuracy, balanced accuracy, per-class F1, macro AUROC
(one-vs-rest, scikit-learn's), quadratic-weighted Cohen's kappa and the confusion matrix.
All but the AUROC come from one confusion matrix of counts (:mod:`wsi_ncmi.confusion`),
equal to scikit-learn's to the bit and about 80 times cheaper. Written here,
because no library has them: the bootstrap 95% interval of macro-F1 that resamples slides
*within each hospital*, and the CAMELYON-17 pN-stage rule with the patient-level kappa
built on it.

Conventions (scikit-learn's): macro-F1 averages over the classes present in the truth or
the predictions (a class with no true and no predicted slide is left out) and an undefined
F1 is 0; balanced accuracy averages the recall of the classes present in the truth; macro
AUROC averages over the classes that have both positives and negatives (NaN if none); the
quadratic kappa of truth and predictions that agree on a single class is 1 (scikit-learn
leaves it undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from wsi_ncmi.confusion import (
    IntArray,
    balanced_accuracy_from_counts,
    confusion_counts,
    f1_per_class,
    macro_f1_counts,
    macro_f1_from_counts,
    quadratic_kappa_from_counts,
)
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.evaluation import ClassificationMetrics

#: CAMELYON-17 patient stages, in order of severity.
PN_STAGES: tuple[str, ...] = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")


def _labels(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> tuple[IntArray, IntArray]:
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape or t.ndim != 1:
        raise ConfigError(
            f"y_true and y_pred must be 1-D of equal length, got {t.shape}, {p.shape}"
        )
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ConfigError(f"labels must lie in [0, {num_classes}), got {sorted(set(t) | set(p))}")
    return t, p


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> IntArray:
    """``(C, C)`` counts, rows = true class, columns = predicted class.

    Raises:
        ConfigError: If a label is outside ``[0, C)`` or the lengths differ.
    """
    t, p = _labels(y_true, y_pred, num_classes)
    return confusion_counts(t, p, num_classes)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> float:
    """Macro-F1 over the classes present in the truth or the predictions.

    Returns:
        Macro-F1 (NaN without slides).
    """
    t, p = _labels(y_true, y_pred, num_classes)
    return macro_f1_counts(t, p, num_classes)


def quadratic_kappa(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> float:
    """Quadratic-weighted Cohen's kappa of ordered classes.

    Returns:
        Kappa; ``1.0`` when truth and predictions agree and use one class only (where
        scikit-learn's is undefined), NaN without samples.
    """
    t, p = _labels(y_true, y_pred, num_classes)
    return _kappa(confusion_counts(t, p, num_classes))


def _kappa(cm: IntArray) -> float:
    """:func:`quadratic_kappa` of ``(C, C)`` counts, with its single-class rule."""
    if not cm.any():
        return float("nan")
    if np.count_nonzero(cm) == 1 and np.count_nonzero(np.diag(cm)) == 1:
        return 1.0  # one class only, and truth and predictions agree on it
    return quadratic_kappa_from_counts(cm)


def macro_auroc(y_true: ArrayLike, probabilities: ArrayLike) -> float:
    """One-vs-rest AUROC averaged over the classes with positives and negatives.

    Args:
        y_true: ``(N,)`` class indices.
        probabilities: ``(N, C)`` class scores.

    Returns:
        Macro AUROC (NaN if no class qualifies).
    """
    t = np.asarray(y_true, dtype=np.int64)
    prob = np.asarray(probabilities, dtype=np.float64)
    values = [
        float(skm.roc_auc_score(t == c, prob[:, c]))
        for c in range(prob.shape[1])
        if 0 < int((t == c).sum()) < t.size
    ]
    return float(np.mean(values)) if values else float("nan")


def classification_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    probabilities: ArrayLike | None,
    class_names: Sequence[str] = LABELS,
) -> ClassificationMetrics:
    """All slide-level metrics of one group of slides.

    Args:
        y_true: ``(N,)`` true class indices.
        y_pred: ``(N,)`` predicted class indices.
        probabilities: ``(N, C)`` class scores for the AUROC, or ``None``.
        class_names: Names of the ``C`` classes.

    Returns:
        The metrics (NaN where undefined, e.g. without slides).
    """
    num_classes = len(class_names)
    t, p = _labels(y_true, y_pred, num_classes)
    n = int(t.size)
    cm = confusion_counts(t, p, num_classes)
    return ClassificationMetrics(
        n=n,
        macro_f1=macro_f1_from_counts(cm),
        accuracy=float(np.mean(t == p)) if n else float("nan"),
        balanced_accuracy=balanced_accuracy_from_counts(cm),
        auroc_macro_ovr=(
            float("nan") if probabilities is None or not n else macro_auroc(t, probabilities)
        ),
        kappa_quadratic=_kappa(cm),
        f1_per_class={
            name: float(v) for name, v in zip(class_names, f1_per_class(cm), strict=True)
        },
        confusion_matrix=cm.tolist(),
    )


def bootstrap_macro_f1(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    num_classes: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1, resampling slides within each group.

    Each resample draws, for every hospital, as many of its slides as it has, with
    replacement, so the hospital mix stays fixed.

    Args:
        y_true: ``(N,)`` true class indices.
        y_pred: ``(N,)`` predicted class indices.
        groups: ``(N,)`` hospital of each slide.
        num_classes: ``C``.
        n_resamples: Bootstrap resamples.
        seed: Seed of the resampling.
        level: Coverage of the interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` without slides or with ``n_resamples = 0`` (no
        interval asked for).
    """
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    g = np.asarray(groups)
    if t.size == 0 or n_resamples < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(g == value) for value in np.unique(g)]
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        values[r] = macro_f1_counts(t[idx], p[idx], num_classes)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def pn_stage(slide_labels: Sequence[str]) -> str:
    """CAMELYON-17 pN stage of a patient from its lymph-node slide labels.

    Rules (CAMELYON-17 evaluation): ``pN0`` no metastasis and no isolated tumour cells;
    ``pN0(i+)`` only ITCs; ``pN1mi`` micro-metastases but no macro-metastasis; ``pN1``
    metastases (micro or macro) in 1–3 nodes, at least one macro; ``pN2`` metastases in 4–9
    nodes, at least one macro. ITCs do not count as metastases.

    Args:
        slide_labels: Labels from :data:`~wsi_ncmi.manifest.LABELS`, one per node.

    Returns:
        One of :data:`PN_STAGES`.

    Raises:
        ConfigError: On an unknown label.
    """
    unknown = [label for label in slide_labels if label not in LABELS]
    if unknown:
        raise ConfigError(f"slide labels must be in {list(LABELS)}, got {unknown!r}")
    macro = sum(label == "macro" for label in slide_labels)
    metastases = macro + sum(label == "micro" for label in slide_labels)
    if macro:
        return "pN1" if metastases <= 3 else "pN2"
    if metastases:
        return "pN1mi"
    if "itc" in slide_labels:
        return "pN0(i+)"
    return "pN0"


def patient_stages(patients: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """PN stage of every patient from per-slide labels.

    Args:
        patients: ``(N,)`` patient id of each slide.
        labels: ``(N,)`` slide labels.

    Returns:
        ``{patient_id: stage}``.
    """
    by_patient: dict[str, list[str]] = {}
    for patient, label in zip(patients, labels, strict=True):
        by_patient.setdefault(patient, []).append(label)
    return {patient: pn_stage(values) for patient, values in by_patient.items()}


def patient_kappa(true_stages: dict[str, str], predicted_stages: dict[str, str]) -> float:
    """Quadratic-weighted kappa between true and predicted pN stages (ordered as PN_STAGES).

    Args:
        true_stages: ``{patient_id: stage}``.
        predicted_stages: ``{patient_id: stage}`` for the same patients.

    Returns:
        Kappa (NaN without patients).
    """
    patients = sorted(true_stages)
    t = [PN_STAGES.index(true_stages[p]) for p in patients]
    p = [PN_STAGES.index(predicted_stages[p]) for p in patients]
    return quadratic_kappa(t, p, len(PN_STAGES))
