"""Classification scores from a confusion matrix of counts.

The kernels of every slide-level score the project reports (macro-F1, per-class F1,
balanced accuracy, quadratic kappa), of the bootstraps that resample them thousands of
times, and of the decision rule fitted on validation. Each is one ``bincount`` and a few
array operations, without scikit-learn's input checks, which make its ``f1_score``
about 80 times slower on 40 slides (1.9 ms against 0.025 ms per call, measured here).
Each does scikit-learn's arithmetic in the same order, so the values equal
scikit-learn's to the bit (``tests/test_train_metrics.py``).

Inputs are int64 label arrays already checked to lie in ``[0, C)``
(:func:`wsi_ncmi.train.metrics.confusion_matrix` checks them).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]


def confusion_counts(t: IntArray, p: IntArray, num_classes: int) -> IntArray:
    """``(C, C)`` counts (rows = true class, columns = predicted) of checked labels.

    The kernel of every count-based metric here: one ``bincount``, without
    scikit-learn's input checks (about 80 times slower on 40 slides).

    Args:
        t: ``(N,)`` int64 true labels in ``[0, C)`` (not checked).
        p: ``(N,)`` int64 predicted labels in ``[0, C)`` (not checked).
        num_classes: ``C``.
    """
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def f1_per_class(cm: IntArray) -> NDArray[np.float64]:
    """``(C,)`` F1 of each class from ``(C, C)`` counts; 0 where undefined.

    ``F1_c = 2 TP_c / (support_c + predicted_c)``: scikit-learn's ``f1_score`` with
    ``average=None, zero_division=0``, computed the same way (equal to the bit; tested).
    """
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=1).astype(np.float64) + cm.sum(axis=0).astype(np.float64)
    out = np.zeros(cm.shape[0], dtype=np.float64)
    np.divide(2.0 * tp, denom, out=out, where=denom > 0)
    return out


def macro_f1_from_counts(cm: IntArray) -> float:
    """Macro-F1 over the classes with support or predictions; NaN if there are none."""
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    if not present.any():
        return float("nan")
    return float(f1_per_class(cm)[present].mean())


def macro_f1_counts(t: IntArray, p: IntArray, num_classes: int) -> float:
    """Macro-F1 of labels already checked: the kernel of the bootstraps.

    Equal to scikit-learn's ``f1_score(..., average="macro", zero_division=0)`` over the
    labels present (tested to the bit).

    Args:
        t: ``(N,)`` int64 true labels in ``[0, C)`` (not checked).
        p: ``(N,)`` int64 predicted labels in ``[0, C)`` (not checked).
        num_classes: ``C``.
    """
    return macro_f1_from_counts(confusion_counts(t, p, num_classes))


def balanced_accuracy_from_counts(cm: IntArray) -> float:
    """Mean recall of the classes with support (scikit-learn's, to the bit); NaN if none."""
    support = cm.sum(axis=1)
    has = support > 0
    if not has.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[has] / support[has]))


def quadratic_kappa_from_counts(cm: IntArray) -> float:
    """Quadratic-weighted Cohen's kappa from ``(C, C)`` counts; NaN where undefined.

    The arithmetic of scikit-learn's ``cohen_kappa_score(weights="quadratic")``, in the
    same order, so the value is equal to the bit (tested).
    """
    confusion = cm.astype(np.float64)
    n_classes = confusion.shape[0]
    sum0 = np.sum(confusion, axis=0)
    sum1 = np.sum(confusion, axis=1)
    total = np.sum(sum0)
    if total == 0:
        return float("nan")
    expected = np.outer(sum0, sum1) / total
    w_mat = np.zeros([n_classes, n_classes], dtype=np.float64)
    w_mat += np.arange(n_classes)
    w_mat = (w_mat - w_mat.T) ** 2
    denominator = np.sum(w_mat * expected)
    if denominator == 0:
        return float("nan")
    return float(1 - np.sum(w_mat * confusion) / denominator)
