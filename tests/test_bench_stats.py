"""The paired statistics of ``wsi-bench`` against SciPy and against known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from wsi_ncmi.bench.stats import align, mean_std, paired_bootstrap, signed_rank, spearman


def _pairs(n: int = 40, seeds: int = 3, correct_treatment: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    truth = {f"s{i:03d}": (int(y[i]), i % 5) for i in range(n)}
    base = [{k: int(rng.integers(0, 4)) for k in truth} for _ in range(seeds)]
    treat = [
        {
            k: (v[0] if rng.random() < correct_treatment else int(rng.integers(0, 4)))
            for k, v in truth.items()
        }
        for _ in range(seeds)
    ]
    return align(truth, base, treat)


def test_align_keeps_slides_every_run_predicted() -> None:
    truth = {"a": (0, 0), "b": (1, 0), "c": (2, 1)}
    pairs = align(truth, [{"a": 0, "b": 1, "c": 2}], [{"a": 1, "c": 2}])
    assert pairs.y_true.tolist() == [0, 2]
    assert pairs.baseline.tolist() == [[0, 2]]
    assert pairs.treatment.tolist() == [[1, 2]]
    assert pairs.centers.tolist() == [0, 1]


def test_bootstrap_of_identical_predictions_is_zero() -> None:
    pairs = _pairs()
    same = type(pairs)(pairs.y_true, pairs.centers, pairs.baseline, pairs.baseline.copy())
    est = paired_bootstrap(same, 4, n_resamples=200)
    assert (est.delta, est.low, est.high, est.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_detects_a_clear_improvement() -> None:
    est = paired_bootstrap(_pairs(correct_treatment=1.0), 4, n_resamples=500, seed=1)
    assert est.delta > 0.5
    assert 0.0 < est.low <= est.delta <= est.high <= 1.0
    assert est.p_value < 0.01
    assert (est.n_slides, est.n_seeds) == (40, 3)


def test_bootstrap_is_seeded() -> None:
    pairs = _pairs(correct_treatment=0.5)
    first = paired_bootstrap(pairs, 4, n_resamples=300, seed=3)
    assert paired_bootstrap(pairs, 4, n_resamples=300, seed=3) == first


def _exact_signed_rank(d: list[float]) -> tuple[float, float]:
    """Oracle from the definition: every sign assignment of the ranks is equally likely."""
    from itertools import product

    nonzero = [x for x in d if x != 0]
    order = sorted(range(len(nonzero)), key=lambda i: abs(nonzero[i]))
    ranks = {i: r + 1 for r, i in enumerate(order)}  # no ties in the data below
    w_plus = sum(ranks[i] for i, x in enumerate(nonzero) if x > 0)
    w_minus = sum(ranks[i] for i, x in enumerate(nonzero) if x < 0)
    statistic = min(w_plus, w_minus)
    sums = [
        sum(r for r, sign in zip(range(1, len(nonzero) + 1), signs, strict=True) if sign)
        for signs in product([False, True], repeat=len(nonzero))
    ]
    tail = sum(s <= statistic for s in sums) / len(sums)
    return float(statistic), min(1.0, 2 * tail)


def test_signed_rank_matches_the_exact_distribution() -> None:
    d = [0.1, -0.05, 0.2, 0.0, 0.15, -0.02, 0.3, 0.07]
    result = signed_rank(d)
    statistic, p_value = _exact_signed_rank(d)
    assert (statistic, p_value) == (3.0, 10 / 128)  # W- = 1 + 2; subsets of 1..7 summing <= 3
    assert result.statistic == pytest.approx(statistic)
    assert result.p_value == pytest.approx(p_value)
    assert (result.n_pairs, result.n_nonzero, result.wins, result.losses) == (8, 7, 5, 2)


def test_signed_rank_without_differences() -> None:
    result = signed_rank([0.0, 0.0, float("nan")])
    assert result.p_value == 1.0
    assert result.n_pairs == 2


def test_mean_std_and_spearman() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)), 2)
    mean, std, n = mean_std([0.5])
    assert (mean, n) == (0.5, 1)
    assert np.isnan(std)
    rho, _, n = spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    assert (rho, n) == (pytest.approx(-1.0), 4)


# 6 hospitals x 8 slides, one seed: the treatment's per-hospital macro-F1 beats the
# baseline's in 4 hospitals and loses 1 (1 tie), yet its pooled macro-F1 is 0.09 lower
# (found by a seeded search over prediction edits; the sign of each is asserted below).
_TRUTH = [
    [3, 2, 2, 1, 1, 0, 0, 0],
    [0, 3, 2, 3, 2, 2, 3, 2],
    [2, 2, 2, 3, 1, 3, 2, 0],
    [1, 3, 2, 0, 3, 2, 3, 0],
    [0, 3, 0, 2, 0, 1, 1, 1],
    [1, 0, 0, 0, 0, 2, 2, 2],
]
_BASE = [
    [3, 2, 2, 1, 1, 0, 0, 0],
    [1, 3, 2, 1, 2, 2, 3, 2],
    [2, 1, 2, 3, 1, 3, 0, 0],
    [1, 3, 2, 0, 3, 1, 3, 2],
    [0, 3, 1, 3, 0, 2, 3, 1],
    [0, 0, 1, 0, 0, 3, 2, 2],
]
_TREAT = [[0, 2, 2, 1, 2, 1, 0, 3], [0, 0, 2, 2, 2, 2, 0, 2], [2, 1, 2, 3, 1, 3, 2, 0],
          [1, 3, 2, 0, 3, 0, 3, 2], [0, 3, 2, 1, 0, 0, 3, 1], [0, 0, 1, 0, 0, 3, 2, 2]]  # fmt: skip


def _records(pred: list[list[int]]) -> list[dict[str, object]]:
    from wsi_ncmi.manifest import LABELS

    out: list[dict[str, object]] = []
    for h, (truths, preds) in enumerate(zip(_TRUTH, pred, strict=True)):
        for i, (t, p) in enumerate(zip(truths, preds, strict=True)):
            probs = {f"prob_{name}": 0.7 if k == p else 0.1 for k, name in enumerate(LABELS)}
            out.append(
                {"slide_id": f"s{h}_{i}", "patient_id": f"p{h}_{i}", "center": h,
                 "true_label": LABELS[t], "pred_label": LABELS[p], **probs}
            )  # fmt: skip
    return out


def _rows_and_config(bootstrap: int = 500) -> tuple[list[Any], Any]:
    """The manifest of :data:`_TRUTH` and a one-seed ``ce`` vs ``ncmi`` bench config."""
    from wsi_ncmi.bench.config import BenchConfig, LossEntry, StatsConfig, SweepConfig
    from wsi_ncmi.manifest import LABELS, ManifestRow

    rows = [
        ManifestRow(f"s{h}_{i}", f"p{h}_{i}", h, LABELS[t])
        for h, truths in enumerate(_TRUTH)
        for i, t in enumerate(truths)
    ]
    sweep = SweepConfig(
        losses=[LossEntry("ce", label="ce"), LossEntry("ncmi", label="ncmi")],
        seeds=[0],
        baseline="ce",
        treatment="ncmi",
    )
    return rows, BenchConfig(stats=StatsConfig(bootstrap=bootstrap, alpha=0.05), sweep=sweep)


def test_verdict_says_inconclusive_when_the_tests_disagree_in_direction() -> None:
    """The verdict of the summary the report computes from real prediction records."""
    from wsi_ncmi.bench.report import model_summary, verdict
    from wsi_ncmi.bench.summaries import ModelSummary
    from wsi_ncmi.train.report import compute_report

    rows, config = _rows_and_config()

    def summary(treatment: list[list[int]]) -> ModelSummary:
        runs = {("abmil", "ce", 0): _records(_BASE), ("abmil", "ncmi", 0): _records(treatment)}
        reports = {key: compute_report(recs, rows, n_bootstrap=0) for key, recs in runs.items()}
        return model_summary(config, "abmil", runs, reports)

    mixed = summary(_TREAT)
    comparison = mixed.comparisons["ncmi"]
    assert (comparison.wilcoxon.wins, comparison.wilcoxon.losses) == (4, 1)
    assert comparison.bootstrap["pooled"].delta < -0.05
    text = verdict(config, mixed, "ncmi")
    assert "inconclusive: ncmi wins hospital by hospital but is worse on the pooled slides" in text
    perfect = summary(_TRUTH)  # right on every slide: better both ways
    text = verdict(config, perfect, "ncmi")
    assert "→ ncmi is better than ce" in text
    assert "inconclusive" not in text


def test_a_run_without_one_hospital_still_gets_a_summary() -> None:
    """A failed cell leaves its run without that hospital: the tables count what exists."""
    from wsi_ncmi.bench.report import model_summary
    from wsi_ncmi.train.report import compute_report

    rows, config = _rows_and_config()
    runs = {
        ("abmil", "ce", 0): _records(_BASE),
        ("abmil", "ncmi", 0): [r for r in _records(_TREAT) if r["center"] != 5],
    }
    reports = {key: compute_report(recs, rows, n_bootstrap=0) for key, recs in runs.items()}
    summary = model_summary(config, "abmil", runs, reports)
    assert summary.sizes == {**{str(h): 8 for h in range(6)}, "pooled": 40}
    (missing,) = summary.macro_f1["ncmi"]["5"]
    assert np.isnan(missing)  # the hospital the run lacks
    assert summary.comparisons["ncmi"].wilcoxon.n_pairs == 5
