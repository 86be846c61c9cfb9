"""Pure tensor math of the NCMI loss: output maps, KL divergences and the loss terms.

Notation, definitions and numerics: see :mod:`wsi_ncmi.losses.functional`, which
re-exports everything here together with :mod:`wsi_ncmi.losses.estimators`.
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


def no_autocast(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        with torch.autocast(device, enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def working_dtype(x: Tensor) -> Tensor:
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


@no_autocast
def log_sigmax(z: Tensor) -> Tensor:
    """Logarithm of :func:`sigmax`, computed stably through ``logsigmoid``.

    Args:
        z: Scores, ``(..., K)``.

    Returns:
        ``log σ(z_k) − log Σ_j σ(z_j)``, ``(..., K)``.
    """
    log_sig = F.logsigmoid(working_dtype(z))
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


@no_autocast
def kl_rows(p: Tensor, q: Tensor, eps: float = PROB_EPS) -> Tensor:
    """Row-wise KL divergence ``KL(p_i ‖ q_i)`` in the element-wise (exact) form.

    Args:
        p: Probability vectors, ``(N, K)``.
        q: Probability vectors, ``(N, K)`` (or broadcastable to it).
        eps: Probability floor of :func:`safe_log`.

    Returns:
        ``(N,)`` divergences, ``≥ 0`` up to rounding.
    """
    p, q = working_dtype(p), working_dtype(q)
    return (p * (safe_log(p, eps) - safe_log(q, eps))).sum(dim=-1)


@no_autocast
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
    a, b = working_dtype(a), working_dtype(b)
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


__all__ = [
    "MATMUL_AUTO_MAX_DIM",
    "PROB_EPS",
    "RATIO_EPS",
    "Direction",
    "KLMethod",
    "Normalization",
    "Reduction",
    "cmi_terms",
    "kl_rows",
    "log_sigmax",
    "ncmi_loss",
    "no_autocast",
    "pairwise_kl",
    "safe_log",
    "separation_terms",
    "sigmax",
    "working_dtype",
]
