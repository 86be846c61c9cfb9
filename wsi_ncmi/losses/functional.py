"""Pure tensor math of the NCMI loss: output maps, KL divergences, centroids, estimators.

Notation (shapes use these letters):

* ``N``: samples in the batch (or in the dataset, for the estimators);
* ``C``: number of classes;
* ``K``: dimension of the output distribution: ``K = C`` for class-logit heads, ``K = m``
  for the feature head;
* ``p``: outputs, ``(N, K)``, each row a probability vector;
* ``q``: centroids, ``(C, K)``, each row a probability vector;
* ``y``: integer class labels, ``(N,)``, in ``[0, C)``.

Definitions (Ye et al. 2026; Yang et al. 2025):

* ``KL(a ‖ b) = Σ_k a_k (log a_k − log b_k)``;
* ``CMI = E[KL(P_X ‖ Q_Y)]``, the intra-class concentration, estimated by the batch mean;
* ``Γ = E[(1/Z) Σ_{c ≠ Y} D_c]`` with ``D_c = KL(Q_c ‖ P_X)`` (direction
  ``"centroid_to_output"``, the authors' code) or ``KL(P_X ‖ Q_c)``
  (``"output_to_centroid"``), and ``Z = C`` (``"num_classes"``, the authors' code) or
  ``C − 1`` (``"num_classes_minus_one"``);
* ``NCMI = CMI / Γ``.

Numerics: every function computes in at least float32 (half-precision inputs are upcast;
float64 inputs stay float64 so that ``gradcheck`` works) with autocast disabled, and
returns that dtype. Logarithms of probabilities use ``log(max(p, PROB_EPS))``, so exact
zeros (one-hot-like outputs) give finite values: a zero entry contributes ``0`` to
``Σ p log p`` and at most ``−log(PROB_EPS) ≈ 27.6`` nats to a KL term. Ratios divide by
``denominator + RATIO_EPS``. With these two rules every function is finite for finite
inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Literal, ParamSpec, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

PROB_EPS: float = 1e-12
"""Floor applied to probabilities before taking their logarithm."""

RATIO_EPS: float = 1e-8
"""Added to every denominator of a CMI / Γ ratio."""

MATMUL_AUTO_MAX_DIM: int = 64
"""``method="auto"`` uses the float32 matmul form of the pairwise KL up to this ``K``."""

_ELEMENTWISE_CHUNK: int = 1 << 24
"""Largest ``rows × M × K`` block materialised at once by the element-wise KL."""

Direction = Literal["centroid_to_output", "output_to_centroid"]
Normalization = Literal["num_classes", "num_classes_minus_one"]
Reduction = Literal["mean_of_ratios", "ratio_of_means"]
KLMethod = Literal["auto", "elementwise", "matmul", "matmul64"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _no_autocast(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def _working(x: Tensor) -> Tensor:
    """Return ``x`` as float32, or as float64 if it already is."""
    return x if x.dtype == torch.float64 else x.float()


def safe_log(p: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Logarithm of probabilities floored at ``eps``.

    Args:
        p: Probabilities of any shape.
        eps: Floor; entries below it (including exact zeros) are treated as ``eps``.

    Returns:
        ``log(max(p, eps))``, same shape as ``p``.
    """
    return torch.log(p.clamp_min(eps))


@_no_autocast
def log_sigmax(z: Tensor) -> Tensor:
    """Logarithm of :func:`sigmax`, computed stably through ``logsigmoid``.

    Args:
        z: Scores, ``(..., K)``.

    Returns:
        ``log σ(z_k) − log Σ_j σ(z_j)``, ``(..., K)``.
    """
    log_sig = F.logsigmoid(_working(z))
    # Shift by the row maximum first: for very negative scores, ``log_sig + log K`` would
    # round back to ``log_sig`` and the normalisation would be lost.
    shifted = log_sig - log_sig.detach().amax(dim=-1, keepdim=True)
    return shifted - torch.logsumexp(shifted, dim=-1, keepdim=True)


def sigmax(z: Tensor) -> Tensor:
    """Sigmax output map ``σ(z_k) / Σ_j σ(z_j)`` (the authors' replacement for softmax).

    Args:
        z: Scores, ``(..., K)``.

    Returns:
        Probability vectors, ``(..., K)``, at least float32. Unlike softmax, no entry can
        exceed ``1 / (1 + Σ_{j≠k} σ(z_j))``, so outputs stay away from the simplex corners
        unless the other scores go to ``−∞``.
    """
    return log_sigmax(z).exp()


@_no_autocast
def kl_rows(p: Tensor, q: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Row-wise KL divergence ``KL(p_i ‖ q_i)`` in the element-wise (exact) form.

    Args:
        p: Probability vectors, ``(N, K)``.
        q: Probability vectors, ``(N, K)`` (or broadcastable to it).
        eps: Probability floor of :func:`safe_log`.

    Returns:
        ``(N,)`` divergences, ``≥ 0`` up to rounding.
    """
    p, q = _working(p), _working(q)
    return (p * (safe_log(p, eps) - safe_log(q, eps))).sum(dim=-1)


@_no_autocast
def pairwise_kl(
    a: Tensor, b: Tensor, *, method: KLMethod = "auto", eps: float = PROB_EPS
) -> Tensor:
    """All pairwise KL divergences ``out[i, j] = KL(a_i ‖ b_j)``.

    Two algebraically equal forms:

    * ``"elementwise"``: ``Σ_k a_ik (log a_ik − log b_jk)`` on an ``(N, M, K)`` block
      (materialised in chunks of at most 2**24 elements). Accurate in float32 for any ``K``.
    * ``"matmul"``: ``Σ_k a_ik log a_ik − a_i · log b_j`` as one matrix product, about 30×
      faster, but the two terms cancel when the distributions are near uniform: in float32 it
      is badly wrong for large ``K`` (over 100% relative error at ``K = 2048``).
    * ``"matmul64"``: the matmul form accumulated in float64, then cast back.
    * ``"auto"``: ``"matmul"`` if ``K ≤ MATMUL_AUTO_MAX_DIM`` (class-logit heads, where
      the divergences are large compared with the rounding), else ``"elementwise"``.

    Args:
        a: Probability vectors, ``(N, K)``.
        b: Probability vectors, ``(M, K)``.
        method: Which form to use, see above.
        eps: Probability floor of :func:`safe_log`.

    Returns:
        ``(N, M)`` divergences in the working dtype of ``a``.

    Raises:
        ValueError: If ``method`` is unknown or the last dimensions differ.
    """
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"a and b must share the last dimension, got {a.shape} and {b.shape}")
    a, b = _working(a), _working(b)
    if method == "auto":
        method = "matmul" if a.shape[-1] <= MATMUL_AUTO_MAX_DIM else "elementwise"
    if method in ("matmul", "matmul64"):
        dtype = torch.float64 if method == "matmul64" else a.dtype
        a_, b_ = a.to(dtype), b.to(dtype)
        log_a = safe_log(a_, eps)
        neg_entropy = (a_ * log_a).sum(dim=-1, keepdim=True)
        return (neg_entropy - a_ @ safe_log(b_, eps).T).to(a.dtype)
    if method != "elementwise":
        raise ValueError(
            f"method must be one of 'auto', 'elementwise', 'matmul', 'matmul64', got {method!r}"
        )
    log_a, log_b = safe_log(a, eps), safe_log(b, eps)
    rows = max(1, _ELEMENTWISE_CHUNK // max(1, b.shape[0] * b.shape[-1]))
    blocks = [
        (a[i : i + rows, None, :] * (log_a[i : i + rows, None, :] - log_b[None, :, :])).sum(-1)
        for i in range(0, a.shape[0], rows)
    ]
    if not blocks:
        return a.new_zeros((0, b.shape[0]))
    return torch.cat(blocks, dim=0)


def _normalizer(num_classes: int, normalization: Normalization) -> int:
    if normalization == "num_classes":
        return num_classes
    if normalization == "num_classes_minus_one":
        return max(num_classes - 1, 1)
    raise ValueError(
        f"normalization must be 'num_classes' or 'num_classes_minus_one', got {normalization!r}"
    )


def cmi_terms(p: Tensor, q: Tensor, y: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Per-sample concentration terms ``KL(p_i ‖ q_{y_i})``; their mean estimates CMI.

    Args:
        p: Outputs, ``(N, K)``.
        q: Centroids, ``(C, K)``.
        y: Labels, ``(N,)`` integers in ``[0, C)``.
        eps: Probability floor of :func:`safe_log`.

    Returns:
        ``(N,)`` divergences.
    """
    return kl_rows(p, q[y], eps)


def separation_terms(
    p: Tensor,
    q: Tensor,
    y: Tensor,
    direction: Direction = "centroid_to_output",
    *,
    normalization: Normalization = "num_classes",
    method: KLMethod = "auto",
    eps: float = PROB_EPS,
) -> Tensor:
    """Per-sample separation terms ``(1/Z) Σ_{c ≠ y_i} D(i, c)``; their mean estimates Γ.

    Args:
        p: Outputs, ``(N, K)``.
        q: Centroids, ``(C, K)``.
        y: Labels, ``(N,)`` integers in ``[0, C)``.
        direction: ``"centroid_to_output"`` for ``D = KL(q_c ‖ p_i)`` (the authors' code)
            or ``"output_to_centroid"`` for ``D = KL(p_i ‖ q_c)``.
        normalization: ``Z = C`` (``"num_classes"``) or ``Z = C − 1``.
        method: Pairwise KL form, see :func:`pairwise_kl`.
        eps: Probability floor of :func:`safe_log`.

    Returns:
        ``(N,)`` separation terms.

    Raises:
        ValueError: If ``direction`` or ``normalization`` is unknown.
    """
    if direction == "centroid_to_output":
        divergences = pairwise_kl(q, p, method=method, eps=eps).T
    elif direction == "output_to_centroid":
        divergences = pairwise_kl(p, q, method=method, eps=eps)
    else:
        raise ValueError(
            f"direction must be 'centroid_to_output' or 'output_to_centroid', got {direction!r}"
        )
    own = divergences.gather(1, y.long().view(-1, 1)).squeeze(1)
    return (divergences.sum(dim=1) - own) / _normalizer(q.shape[0], normalization)


def ncmi_loss(
    p: Tensor,
    q: Tensor,
    y: Tensor,
    *,
    direction: Direction = "centroid_to_output",
    normalization: Normalization = "num_classes",
    reduction: Reduction = "mean_of_ratios",
    method: KLMethod = "auto",
    eps: float = PROB_EPS,
    ratio_eps: float = RATIO_EPS,
) -> tuple[Tensor, Tensor, Tensor]:
    """NCMI surrogate loss of a batch against fixed centroids.

    Args:
        p: Outputs, ``(N, K)``.
        q: Centroids, ``(C, K)``; treated as constants by the caller (detach them).
        y: Labels, ``(N,)``.
        direction: See :func:`separation_terms`.
        normalization: See :func:`separation_terms`.
        reduction: ``"mean_of_ratios"``, ``mean_i cmi_i / (sep_i + ratio_eps)`` (the
            authors' code), or ``"ratio_of_means"``, ``mean(cmi) / (mean(sep) + ratio_eps)``
            (the definition).
        method: Pairwise KL form, see :func:`pairwise_kl`.
        eps: Probability floor of :func:`safe_log`.
        ratio_eps: Added to the denominator.

    Returns:
        ``(loss, cmi, gamma)``: scalar loss, and the batch means of :func:`cmi_terms` and
        :func:`separation_terms` (scalars, still attached to the graph).

    Raises:
        ValueError: If ``reduction`` is unknown.
    """
    concentration = cmi_terms(p, q, y, eps)
    separation = separation_terms(
        p, q, y, direction, normalization=normalization, method=method, eps=eps
    )
    cmi_mean, gamma_mean = concentration.mean(), separation.mean()
    if reduction == "mean_of_ratios":
        loss = (concentration / (separation + ratio_eps)).mean()
    elif reduction == "ratio_of_means":
        loss = cmi_mean / (gamma_mean + ratio_eps)
    else:
        raise ValueError(
            f"reduction must be 'mean_of_ratios' or 'ratio_of_means', got {reduction!r}"
        )
    return loss, cmi_mean, gamma_mean


@_no_autocast
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
    p = _working(p)
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
