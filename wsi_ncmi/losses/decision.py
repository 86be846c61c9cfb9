"""Prior-aware decision rules fitted on a validation split.

A loss's default rule (argmax of the class logits, or nearest centroid
``argmin_c KL(P ‖ Q_c)`` for the feature head) ignores how common each class is. The rule
here adds a prior term to the log class scores ``s_c`` (``log softmax`` for class heads,
``−KL(P ‖ Q_c)`` up to a constant for the feature head) and predicts
``argmax_c s_c + λ · u · log π_c``, where ``π`` are the training class frequencies, ``u``
puts the prior on the scale of the scores (the median over samples of the score range
``max_c s_c − min_c s_c``, divided by the range of ``log π``; scores of the feature head
span hundredths of a nat, logits several nats), and the one scale ``λ`` is chosen on the
validation split to maximise macro-F1. ``λ = 0`` is the default rule, and ties go to the
smallest ``|λ|``, so the rule changes predictions only when validation says it helps.
One parameter keeps it hard to overfit a small validation split. The same rule is
applied to every loss, so comparisons stay fair.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsi_ncmi.confusion import macro_f1_counts
from wsi_ncmi.jsontypes import JSONObject

#: Candidate ``λ`` values: 0 … 3 in steps of 0.25. Only ``λ ≥ 0``: the rule adds the
#: training prior (the Bayes direction) and never subtracts it. Negative values would let a
#: small validation split reward an untrained model for spreading its predictions against
#: the prior (seen on the demo: epoch-0 checkpoints selected by that optimism).
DEFAULT_PRIOR_SCALES: tuple[float, ...] = tuple(float(x) for x in np.arange(0.0, 3.01, 0.25))

#: Floor of class frequencies before their logarithm (classes absent in training).
PRIOR_EPS: float = 1e-3


@dataclass(frozen=True)
class PriorRule:
    """A fitted prior-aware rule ``argmax_c s_c + scale · log_prior_c``.

    Attributes:
        scale: ``λ · u`` (the offsets are ``scale · log_prior``).
        log_prior: ``(C,)`` log training class frequencies.
        val_macro_f1: Validation macro-F1 of the rule at ``scale``.
        val_macro_f1_default: Validation macro-F1 at ``λ = 0`` (the default rule).
    """

    scale: float
    log_prior: tuple[float, ...]
    val_macro_f1: float
    val_macro_f1_default: float

    def offsets(self) -> np.ndarray:
        """``(C,)`` per-class offsets ``λ · log π_c``."""
        return self.scale * np.asarray(self.log_prior, dtype=np.float64)

    def predict(self, log_scores: np.ndarray) -> np.ndarray:
        """``(N,)`` predictions from ``(N, C)`` log class scores."""
        return np.argmax(np.asarray(log_scores, dtype=np.float64) + self.offsets(), axis=1)

    def to_json(self) -> JSONObject:
        """``{"scale", "log_prior": [...], "val_macro_f1", "val_macro_f1_default"}``."""
        return {
            "scale": self.scale,
            "log_prior": list(self.log_prior),
            "val_macro_f1": self.val_macro_f1,
            "val_macro_f1_default": self.val_macro_f1_default,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PriorRule:
        """Read :meth:`to_json`'s form back (``null``, a NaN written as JSON, reads as NaN)."""

        def number(value: Any) -> float:
            return float("nan") if value is None else float(value)

        return cls(
            scale=number(data["scale"]),
            log_prior=tuple(number(v) for v in data["log_prior"]),
            val_macro_f1=number(data["val_macro_f1"]),
            val_macro_f1_default=number(data["val_macro_f1_default"]),
        )


def log_scores(probabilities: np.ndarray) -> np.ndarray:
    """``(N, C)`` log class scores from class probabilities (floored at 1e-30)."""
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-30))


def log_prior(class_counts: Sequence[float]) -> np.ndarray:
    """``(C,)`` ``log`` of the class frequencies, floored at :data:`PRIOR_EPS`.

    Raises:
        ValueError: If the counts are empty, negative or all zero.
    """
    counts = np.asarray(list(class_counts), dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"class_counts must be >= 2 non-negative counts, got {list(counts)}")
    return np.log(np.maximum(counts / counts.sum(), PRIOR_EPS))


def score_unit(log_scores: np.ndarray, log_prior_: np.ndarray) -> float:
    """``u``: the median score range over samples, per unit of ``log π`` range.

    Returns ``1`` when either range is zero (constant scores or a uniform prior).
    """
    spread = float(np.median(np.ptp(log_scores, axis=1))) if log_scores.size else 0.0
    prior_spread = float(np.ptp(log_prior_))
    if not np.isfinite(spread) or spread <= 0 or prior_spread <= 0:
        return 1.0
    return spread / prior_spread


def fit_prior_rule(
    log_scores: np.ndarray,
    y_true: np.ndarray,
    class_counts: Sequence[float],
    scales: Sequence[float] = DEFAULT_PRIOR_SCALES,
) -> PriorRule:
    """Choose ``λ`` on validation outputs.

    Args:
        log_scores: ``(N, C)`` log class scores of the validation slides.
        y_true: ``(N,)`` their labels.
        class_counts: ``C`` training class counts (the prior).
        scales: Candidate ``λ`` values (``0`` is always tried).

    Returns:
        The rule with the best validation macro-F1 (ties: smallest ``|λ|``, then the
        smaller ``λ``).

    Raises:
        ValueError: On shape mismatches or an empty validation set.
    """
    scores = np.asarray(log_scores, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    prior = log_prior(class_counts)
    if scores.ndim != 2 or scores.shape[0] != y.shape[0] or scores.shape[1] != prior.shape[0]:
        raise ValueError(
            f"log_scores must be (N, {prior.shape[0]}) with N = {y.shape[0]}, got {scores.shape}"
        )
    if y.shape[0] == 0:
        raise ValueError("fit_prior_rule needs at least one validation sample")
    num_classes = prior.shape[0]
    unit = score_unit(scores, prior)
    candidates = sorted({0.0, *map(float, scales)}, key=lambda s: (abs(s), s))
    results = [
        (macro_f1_counts(y, np.argmax(scores + s * unit * prior, axis=1), num_classes), s * unit)
        for s in candidates
    ]
    default = next(f1 for f1, s in results if s == 0.0)
    best_f1 = max(f1 for f1, _ in results)
    best_scale = next(s for f1, s in results if f1 == best_f1)
    return PriorRule(best_scale, tuple(float(v) for v in prior), best_f1, default)
