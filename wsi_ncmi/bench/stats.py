"""Paired statistics of a loss comparison: bootstrap interval of Δ and signed-rank tests.

Δ is treatment minus baseline macro-F1 (e.g. NCMI − CE), averaged over seeds. Two
complementary views of its uncertainty:

* :func:`paired_bootstrap`: the test slides are resampled with replacement (within each
  hospital, the same resample for both losses and every seed), so the 95% interval
  reflects which slides happened to be in the test set, with training noise averaged over
  seeds. Its p-value is the two-sided bootstrap tail ``2·min(P(Δ* ≤ 0), P(Δ* ≥ 0))``.
* :func:`signed_rank`: the Wilcoxon signed-rank test over the (seed, hospital) pairs of
  per-hospital macro-F1, which treats every training run as one observation.

Every run counts: nothing is dropped, and the checkpoint of each run was chosen on
validation data only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.confusion import macro_f1_counts
from wsi_ncmi.jsontypes import JSONObject


@dataclass(frozen=True)
class PairedSlides:
    """Aligned test predictions of two losses on one group of slides.

    Attributes:
        y_true: ``(N,)`` true class indices.
        centers: ``(N,)`` hospital of each slide (the bootstrap strata).
        baseline: ``(S, N)`` predicted classes of the baseline, one row per seed.
        treatment: ``(S, N)`` predicted classes of the treatment, same seeds.
    """

    y_true: NDArray[np.int64]
    centers: NDArray[np.int64]
    baseline: NDArray[np.int64]
    treatment: NDArray[np.int64]

    def subset(self, mask: NDArray[np.bool_]) -> PairedSlides:
        """The slides where ``mask`` holds."""
        return PairedSlides(
            self.y_true[mask], self.centers[mask], self.baseline[:, mask], self.treatment[:, mask]
        )


def align(
    truth: Mapping[str, tuple[int, int]],
    baseline: Sequence[Mapping[str, int]],
    treatment: Sequence[Mapping[str, int]],
) -> PairedSlides:
    """Align per-seed predictions on the slides that every run predicted.

    Args:
        truth: ``{slide_id: (true class, center)}``.
        baseline: One ``{slide_id: predicted class}`` per seed.
        treatment: Same seeds, same order.

    Returns:
        The aligned arrays (slides sorted by id).
    """
    common = set(truth)
    for mapping in (*baseline, *treatment):
        common &= set(mapping)
    slides = sorted(common)
    return PairedSlides(
        np.array([truth[s][0] for s in slides], dtype=np.int64),
        np.array([truth[s][1] for s in slides], dtype=np.int64),
        np.array([[m[s] for s in slides] for m in baseline], dtype=np.int64).reshape(
            -1, len(slides)
        ),
        np.array([[m[s] for s in slides] for m in treatment], dtype=np.int64).reshape(
            -1, len(slides)
        ),
    )


def _mean_delta(pairs: PairedSlides, idx: NDArray[np.int64], num_classes: int) -> float:
    t = pairs.y_true[idx]
    deltas = [
        macro_f1_counts(t, tr[idx], num_classes) - macro_f1_counts(t, ba[idx], num_classes)
        for ba, tr in zip(pairs.baseline, pairs.treatment, strict=True)
    ]
    return float(np.mean(deltas))


@dataclass(frozen=True)
class DeltaEstimate:
    """Δ macro-F1 (treatment − baseline), averaged over seeds, with its bootstrap interval.

    Attributes:
        delta: Observed Δ.
        low: 2.5th percentile of the bootstrap Δ.
        high: 97.5th percentile.
        p_value: Two-sided bootstrap p-value of Δ = 0.
        n_slides: Slides in the group.
        n_seeds: Seeds averaged.
    """

    delta: float
    low: float
    high: float
    p_value: float
    n_slides: int
    n_seeds: int

    def to_json(self) -> JSONObject:
        """The fields, in order."""
        return {
            "delta": self.delta,
            "low": self.low,
            "high": self.high,
            "p_value": self.p_value,
            "n_slides": self.n_slides,
            "n_seeds": self.n_seeds,
        }


def paired_bootstrap(
    pairs: PairedSlides,
    num_classes: int,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> DeltaEstimate:
    """Paired, hospital-stratified bootstrap of the seed-averaged Δ macro-F1.

    Args:
        pairs: Aligned predictions.
        num_classes: ``C``.
        n_resamples: Resamples.
        seed: Resampling seed.
        level: Interval coverage.

    Returns:
        The estimate (NaN fields without slides).
    """
    n = len(pairs.y_true)
    seeds = int(pairs.baseline.shape[0])
    if n == 0 or seeds == 0:
        nan = float("nan")
        return DeltaEstimate(nan, nan, nan, nan, n, seeds)
    observed = _mean_delta(pairs, np.arange(n), num_classes)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(pairs.centers == c) for c in np.unique(pairs.centers)]
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        idx = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in strata])
        values[r] = _mean_delta(pairs, idx, num_classes)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    p_value = min(1.0, 2.0 * min(float(np.mean(values <= 0)), float(np.mean(values >= 0))))
    return DeltaEstimate(observed, float(low), float(high), p_value, n, seeds)


@dataclass(frozen=True)
class SignedRank:
    """Wilcoxon signed-rank test of paired differences.

    Attributes:
        n_pairs: Pairs (seed × hospital).
        n_nonzero: Pairs with a non-zero difference (the test uses these).
        median_delta: Median of the differences.
        wins: Pairs where the treatment is better.
        losses: Pairs where it is worse.
        statistic: The signed-rank statistic (NaN if not computable).
        p_value: Two-sided p-value (1.0 when every difference is zero).
    """

    n_pairs: int
    n_nonzero: int
    median_delta: float
    wins: int
    losses: int
    statistic: float
    p_value: float

    def to_json(self) -> JSONObject:
        """The fields, in order."""
        return {
            "n_pairs": self.n_pairs,
            "n_nonzero": self.n_nonzero,
            "median_delta": self.median_delta,
            "wins": self.wins,
            "losses": self.losses,
            "statistic": self.statistic,
            "p_value": self.p_value,
        }


def signed_rank(differences: Sequence[float]) -> SignedRank:
    """Two-sided Wilcoxon signed-rank test of ``differences`` against 0 (zeros dropped).

    Args:
        differences: Treatment − baseline, one per (seed, hospital); NaNs are ignored.

    Returns:
        The test result.
    """
    from scipy.stats import wilcoxon

    d = np.asarray([x for x in differences if np.isfinite(x)], dtype=np.float64)
    nonzero = d[d != 0]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    median = float(np.median(d)) if d.size else float("nan")
    if nonzero.size == 0:
        return SignedRank(int(d.size), 0, median, wins, losses, float("nan"), 1.0)
    result = wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided")
    return SignedRank(
        int(d.size),
        int(nonzero.size),
        median,
        wins,
        losses,
        float(result.statistic),
        float(result.pvalue),
    )


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Spearman rank correlation of the finite pairs: ``(rho, p-value, n)``."""
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(a) and np.isfinite(b)]
    if len(pairs) < 3:
        return float("nan"), float("nan"), len(pairs)
    xs, ys = zip(*pairs, strict=True)
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return float("nan"), float("nan"), len(pairs)
    result = spearmanr(xs, ys)
    return float(result.statistic), float(result.pvalue), len(pairs)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error control).

    The ``k``-th smallest of the ``m`` finite p-values becomes
    ``max_{j <= k} min(1, (m - j + 1) · p_(j))``. NaNs stay NaN and do not count in ``m``.

    Args:
        p_values: The family's p-values, in any order.

    Returns:
        The adjusted p-values, in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[index])))
        out[index] = running
    return [float(x) for x in out]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (ddof 1; NaN for one value) of finite values."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan"), int(v.size)
