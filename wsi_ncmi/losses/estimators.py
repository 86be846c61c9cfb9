"""Centroids, dataset estimators of CMI, Γ and NCMI, anchors and the nearest-centroid rule.

Notation, definitions and numerics: see :mod:`wsi_ncmi.losses.functional`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from wsi_ncmi.losses.divergence import (
    PROB_EPS,
    RATIO_EPS,
    Direction,
    Normalization,
    cmi_terms,
    no_autocast,
    pairwise_kl,
    separation_terms,
    sigmax,
    working_dtype,
)


@no_autocast
def class_sums(p: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums and counts of outputs (the all-reducible part of a Q-step).

    Args:
        p: Outputs, ``(N, K)``.
        y: Labels, ``(N,)``.
        num_classes: ``C``.

    Returns:
        ``(sums, counts)``: ``(C, K)`` sums of ``p`` per class in the working dtype, and
        ``(C,)`` counts in the same dtype.
    """
    p = working_dtype(p)
    onehot = F.one_hot(y.long(), num_classes).to(p.dtype)
    return onehot.T @ p, onehot.sum(dim=0)


def centroids_from_sums(sums: Tensor, counts: Tensor, fallback: Tensor | None = None) -> Tensor:
    """Class means from per-class sums; empty classes take ``fallback`` (default uniform).

    Args:
        sums: ``(C, K)`` per-class sums.
        counts: ``(C,)`` per-class counts.
        fallback: ``(C, K)`` rows used for classes with no sample, or ``None`` for the
            uniform distribution ``1/K``.

    Returns:
        ``(C, K)`` centroids.
    """
    means = sums / counts.clamp_min(1).unsqueeze(1)
    if fallback is None:
        fallback = torch.full_like(means, 1.0 / means.shape[1])
    return torch.where(counts.unsqueeze(1) > 0, means, fallback.to(means.dtype))


def class_centroids(
    p: Tensor, y: Tensor, num_classes: int, fallback: Tensor | None = None
) -> Tensor:
    """Closed-form Q-step: the class means ``Q_c = mean{p_i : y_i = c}``.

    For fixed outputs these are the centroids that minimise the CMI estimate.

    Args:
        p: Outputs, ``(N, K)``.
        y: Labels, ``(N,)``.
        num_classes: ``C``.
        fallback: See :func:`centroids_from_sums`.

    Returns:
        ``(C, K)`` centroids.
    """
    sums, counts = class_sums(p, y, num_classes)
    return centroids_from_sums(sums, counts, fallback)


def _present_classes(p: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Empirical centroids of the classes present in ``y`` and labels re-indexed to them."""
    sums, counts = class_sums(p, y, num_classes)
    present = counts > 0
    remap = torch.cumsum(present.long(), dim=0) - 1
    return centroids_from_sums(sums[present], counts[present]), remap[y.long()]


def cmi(p: Tensor, y: Tensor, num_classes: int, eps: float = PROB_EPS) -> Tensor:
    """Dataset-level CMI estimate, with the empirical class means as centroids.

    Args:
        p: Outputs over the dataset, ``(N, K)``.
        y: Labels, ``(N,)``.
        num_classes: ``C``.
        eps: Probability floor of :func:`safe_log`.

    Returns:
        Scalar ``Σ_c π̂_c mean_{i: y_i = c} KL(p_i ‖ Q̂_c)``.
    """
    q, y_present = _present_classes(p, y, num_classes)
    return cmi_terms(p, q, y_present, eps).mean()


def gamma(
    p: Tensor,
    y: Tensor,
    num_classes: int,
    direction: Direction = "centroid_to_output",
    *,
    normalization: Normalization = "num_classes",
    eps: float = PROB_EPS,
) -> Tensor:
    """Dataset-level separation Γ, with the empirical class means as centroids.

    Only classes present in ``y`` count (``C`` in the normaliser is their number). The
    pairwise divergences use the element-wise form, accurate for any ``K``.

    Args:
        p: Outputs over the dataset, ``(N, K)``.
        y: Labels, ``(N,)``.
        num_classes: ``C``.
        direction: See :func:`separation_terms`.
        normalization: See :func:`separation_terms`.
        eps: Probability floor of :func:`safe_log`.

    Returns:
        Scalar Γ (``0`` if fewer than two classes are present).
    """
    q, y_present = _present_classes(p, y, num_classes)
    return separation_terms(
        p, q, y_present, direction, normalization=normalization, method="elementwise", eps=eps
    ).mean()


def ncmi(
    p: Tensor,
    y: Tensor,
    num_classes: int,
    direction: Direction = "centroid_to_output",
    *,
    normalization: Normalization = "num_classes",
    eps: float = PROB_EPS,
    ratio_eps: float = RATIO_EPS,
) -> tuple[Tensor, Tensor, Tensor]:
    """Dataset-level ``(cmi, gamma, ncmi)`` with ``ncmi = cmi / (gamma + ratio_eps)``.

    Args:
        p: Outputs over the dataset, ``(N, K)``.
        y: Labels, ``(N,)``.
        num_classes: ``C``.
        direction: See :func:`separation_terms`.
        normalization: See :func:`separation_terms`.
        eps: Probability floor of :func:`safe_log`.
        ratio_eps: Added to the denominator.

    Returns:
        Three scalars: CMI, Γ and NCMI.
    """
    c = cmi(p, y, num_classes, eps)
    g = gamma(p, y, num_classes, direction, normalization=normalization, eps=eps)
    return c, g, c / (g + ratio_eps)


def smoothed_onehot_anchors(num_classes: int, smoothing: float = 0.1) -> Tensor:
    """Anchors ``(1 − ε) e_c + ε / C`` over the class simplex.

    Args:
        num_classes: ``C``.
        smoothing: ``ε`` in ``(0, 1]``; ``ε = 0`` would put zeros in the anchors.

    Returns:
        ``(C, C)`` float32 anchors.
    """
    eye = torch.eye(num_classes)
    return (1.0 - smoothing) * eye + smoothing / num_classes


def reference_anchors(num_classes: int, dim: int, scale: float = 10.0) -> Tensor:
    """The authors' anchors ``sigmax(scale · e_c)`` in a ``dim``-dimensional space.

    Args:
        num_classes: ``C``; anchors use the first ``C`` coordinates.
        dim: ``K ≥ C``.
        scale: Score of the class coordinate.

    Returns:
        ``(C, K)`` float32 anchors.
    """
    scores = torch.zeros(num_classes, dim)
    scores[torch.arange(num_classes), torch.arange(num_classes)] = scale
    return sigmax(scores)


def nearest_centroid(p: Tensor, q: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Prediction ``argmin_c KL(p_i ‖ q_c)`` (element-wise form).

    Args:
        p: Outputs, ``(N, K)``.
        q: Centroids, ``(C, K)``.
        eps: Probability floor of :func:`safe_log`.

    Returns:
        ``(N,)`` int64 class indices.
    """
    return pairwise_kl(p, q, method="elementwise", eps=eps).argmin(dim=1)


__all__ = [
    "centroids_from_sums",
    "class_centroids",
    "class_sums",
    "cmi",
    "gamma",
    "ncmi",
    "nearest_centroid",
    "reference_anchors",
    "smoothed_onehot_anchors",
]
