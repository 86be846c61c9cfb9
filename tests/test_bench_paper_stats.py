"""The paper-form report's statistics against oracles computed here, independently.

Predictions of three losses over three seeds and three hospitals are drawn at random; the
test recomputes every number of :func:`wsi_ncmi.bench.paper.best_baseline_comparisons`
from the raw predictions with scikit-learn and SciPy (macro-F1 per seed and hospital,
Wilcoxon on their differences, a percentile bootstrap of one hospital's slides) and with
Holm's procedure written out from its definition.
"""

from __future__ import annotations

import numpy as np
import pytest
from _results import cell_result
from scipy import stats as sps
from sklearn.metrics import f1_score

from wsi_ncmi.bench.cell_result import EpochValidation
from wsi_ncmi.bench.paper import best_baseline_comparisons, epoch_points, ncmi_tracking
from wsi_ncmi.bench.parser import load_config
from wsi_ncmi.bench.results import run_reports
from wsi_ncmi.bench.stats import holm
from wsi_ncmi.manifest import LABELS, ManifestRow

SEEDS = (0, 1, 2)
CENTERS = (0, 1, 2)
LOSSES = {"ce": 0.45, "focal": 0.6, "ncmi_mil": 0.75}  # chance of a correct prediction


def _holm_by_definition(p: list[float]) -> list[float]:
    """Holm (1979): reject H_(1..k) while p_(j) <= alpha / (m - j + 1); the adjusted p is
    the smallest alpha at which H_i is rejected, found here by scanning a fine grid."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [1.0] * m
    for alpha in np.linspace(0.0, 1.0, 100001)[::-1]:
        for rank, i in enumerate(order):
            if p[i] <= alpha / (m - rank):
                adjusted[i] = min(adjusted[i], alpha)
            else:
                break
    return adjusted


def test_holm_matches_a_worked_example_and_the_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(3)
    for _ in range(3):
        q = rng.uniform(0, 0.3, 6).round(4).tolist()
        assert holm(q) == pytest.approx(_holm_by_definition(q), abs=2e-5)
    out = holm([0.2, float("nan"), 0.01])
    assert np.isnan(out[1])
    assert out[0] == pytest.approx(0.2)
    assert out[2] == pytest.approx(0.02)


@pytest.fixture(scope="module")
def bench() -> dict[str, object]:
    rng = np.random.default_rng(0)
    rows = [
        ManifestRow(f"patient_{c}{i:02d}_node_0", f"patient_{c}{i:02d}", c, LABELS[i % 4])
        for c in CENTERS
        for i in range(24)
    ]
    runs = {}
    for loss, p_correct in LOSSES.items():
        for seed in SEEDS:
            records = []
            for row in rows:
                truth = LABELS.index(row.label)
                pred = truth if rng.random() < p_correct else int(rng.integers(0, 4))
                probs = {f"prob_{name}": float(k == pred) for k, name in enumerate(LABELS)}
                records.append(
                    {
                        "slide_id": row.slide_id,
                        "patient_id": row.patient_id,
                        "center": row.center,
                        "true_label": row.label,
                        "pred_label": LABELS[pred],
                        **probs,
                    }
                )
            runs[("abmil", loss, seed)] = records
    reports = run_reports(runs, rows, n_bootstrap=100)
    # validation prefers ce over focal, although focal is better on test
    val = {"ce": 0.7, "focal": 0.5, "ncmi_mil": 0.6}
    results = [
        cell_result(
            loss,
            seed=seed,
            val={"macro_f1_calibrated": val[loss]},
            history=[
                EpochValidation(
                    e, {"ncmi": float(rng.uniform(0.1, 2.0)), "macro_f1": float(rng.random())}
                )
                for e in range(5)
            ],
        )
        for loss in LOSSES
        for seed in SEEDS
    ]
    config = load_config(
        None,
        {
            "sweep.losses": [{"name": x} for x in LOSSES],
            "sweep.models": [{"name": "abmil"}],
            "sweep.seeds": list(SEEDS),
            "stats.bootstrap": 2000,
        },
    )
    comparisons = best_baseline_comparisons(config, runs, reports, results)
    return {"runs": runs, "comparisons": comparisons["ncmi_mil"]["abmil"], "results": results}


def _macro_f1(records: list[dict[str, object]], center: int | None = None) -> float:
    kept = [r for r in records if center is None or r["center"] == center]
    truth = [LABELS.index(str(r["true_label"])) for r in kept]
    pred = [LABELS.index(str(r["pred_label"])) for r in kept]
    return float(f1_score(truth, pred, labels=range(4), average="macro", zero_division=0))


def test_best_baseline_is_chosen_on_validation(bench: dict) -> None:
    comp = bench["comparisons"]
    assert comp.baseline == "ce"
    assert comp.validation_scores == {"ce": pytest.approx(0.7), "focal": pytest.approx(0.5)}


def test_wilcoxon_over_seed_by_hospital_pairs_matches_scipy(bench: dict) -> None:
    runs = bench["runs"]
    diffs = [
        _macro_f1(runs[("abmil", "ncmi_mil", s)], c) - _macro_f1(runs[("abmil", "ce", s)], c)
        for s in SEEDS
        for c in CENTERS
    ]
    oracle = sps.wilcoxon(diffs)
    w = bench["comparisons"].wilcoxon
    assert w.n_pairs == 9
    assert w.statistic == pytest.approx(oracle.statistic)
    assert w.p_value == pytest.approx(oracle.pvalue)
    assert w.wins == sum(d > 0 for d in diffs)
    # one aggregator: a family of one
    assert bench["comparisons"].wilcoxon_p_holm == pytest.approx(w.p_value)


def test_pooled_delta_and_holm_over_the_table(bench: dict) -> None:
    runs, comp = bench["runs"], bench["comparisons"]
    delta = np.mean(
        [
            _macro_f1(runs[("abmil", "ncmi_mil", s)]) - _macro_f1(runs[("abmil", "ce", s)])
            for s in SEEDS
        ]
    )
    assert comp.groups["pooled"].delta == pytest.approx(delta)
    assert list(comp.groups) == list(comp.groups_p_holm) == ["0", "1", "2", "pooled"]
    raw = [g.p_value for g in comp.groups.values()]
    adjusted = list(comp.groups_p_holm.values())
    assert adjusted == pytest.approx(_holm_by_definition(raw), abs=2e-5)


def test_one_hospital_bootstrap_interval_matches_scipy(bench: dict) -> None:
    runs, comp = bench["runs"], bench["comparisons"]
    center = 1
    base = [[r for r in runs[("abmil", "ce", s)] if r["center"] == center] for s in SEEDS]
    treat = [[r for r in runs[("abmil", "ncmi_mil", s)] if r["center"] == center] for s in SEEDS]

    def codes(records: list[dict[str, object]], key: str) -> np.ndarray:
        return np.array([LABELS.index(str(r[key])) for r in records])

    truth = codes(base[0], "true_label")
    pred_b = [codes(b, "pred_label") for b in base]
    pred_t = [codes(t, "pred_label") for t in treat]

    def f1(y: np.ndarray, p: np.ndarray) -> float:  # macro-F1 from counts, absent classes 0
        scores = []
        for k in range(4):
            tp = np.sum((y == k) & (p == k))
            denom = np.sum(y == k) + np.sum(p == k)
            scores.append(2 * tp / denom if denom else 0.0)
        return float(np.mean(scores))

    def statistic(index: np.ndarray) -> float:
        idx = index.astype(int)
        deltas = [
            f1(truth[idx], t[idx]) - f1(truth[idx], b[idx])
            for b, t in zip(pred_b, pred_t, strict=True)
        ]
        return float(np.mean(deltas))

    oracle = sps.bootstrap(
        (np.arange(len(truth)),),
        statistic,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=np.random.default_rng(1),
    )
    est = comp.groups[str(center)]
    assert est.delta == pytest.approx(statistic(np.arange(len(base[0]))))
    assert est.delta == pytest.approx(
        np.mean([_macro_f1(t) - _macro_f1(b) for b, t in zip(base, treat, strict=True)])
    )
    assert est.low == pytest.approx(oracle.confidence_interval.low, abs=0.04)
    assert est.high == pytest.approx(oracle.confidence_interval.high, abs=0.04)


def test_ncmi_tracking_is_spearman_over_every_epoch(bench: dict) -> None:
    points = epoch_points(bench["results"])
    assert len(points) == 3 * 3 * 5
    x = [h.values["ncmi"] for r in bench["results"] for h in r.history]
    y = [h.values["macro_f1"] for r in bench["results"] for h in r.history]
    rho, p, n = ncmi_tracking(points)["all"]
    oracle = sps.spearmanr(x, y)
    assert (rho, p, n) == (pytest.approx(oracle.statistic), pytest.approx(oracle.pvalue), 45)
