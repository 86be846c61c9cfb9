"""Metrics against scikit-learn, the pN-stage rule against the 100 real patient labels."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from wsi_ncmi.manifest import read_manifest
from wsi_ncmi.train.metrics import (
    PN_STAGES,
    bootstrap_macro_f1,
    classification_metrics,
    patient_kappa,
    patient_stages,
    pn_stage,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _fixed_predictions(seed: int, n: int = 120, classes: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs.argmax(1), probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_slide_metrics_agree_with_scikit_learn(seed: int) -> None:
    y, pred, probs = _fixed_predictions(seed)
    ours = classification_metrics(y, pred, probs)
    assert ours.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert ours.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert ours.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert ours.kappa_quadratic == pytest.approx(
        skm.cohen_kappa_score(y, pred, weights="quadratic")
    )
    assert ours.auroc_macro_ovr == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    per_class = skm.f1_score(y, pred, average=None, labels=[0, 1, 2, 3])
    assert list(ours.f1_per_class.values()) == pytest.approx(list(per_class))
    assert ours.confusion_matrix == skm.confusion_matrix(y, pred, labels=[0, 1, 2, 3]).tolist()


def test_metrics_with_absent_classes_and_ties_agree_with_scikit_learn() -> None:
    y = np.array([0, 0, 1, 1, 3, 3, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 3, 0, 0])
    probs = np.round(np.random.default_rng(0).random((8, 4)), 1)  # ties
    ours = classification_metrics(y, pred, probs)
    assert ours.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert ours.balanced_accuracy == pytest.approx(skm.balanced_accuracy_score(y, pred))
    present = [0, 1, 3]
    expected_auc = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in present])
    assert ours.auroc_macro_ovr == pytest.approx(expected_auc)


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate() -> None:
    y, pred, _ = _fixed_predictions(5, n=200)
    centers = np.repeat(np.arange(5), 40)
    low, high = bootstrap_macro_f1(y, pred, centers, 4, n_resamples=300, seed=1)
    assert (low, high) == bootstrap_macro_f1(y, pred, centers, 4, n_resamples=300, seed=1)
    point = skm.f1_score(y, pred, average="macro")
    assert low < point < high
    assert 0.0 < high - low < 0.3
    # No resamples asked for: no interval (a run with report.bootstrap 0 used to crash).
    assert np.isnan(bootstrap_macro_f1(y, pred, centers, 4, n_resamples=0)).all()


@pytest.mark.parametrize(
    ("labels", "stage"),
    [
        (["negative"] * 5, "pN0"),
        (["itc", "negative", "itc", "negative", "negative"], "pN0(i+)"),
        (["micro", "itc", "negative", "negative", "negative"], "pN1mi"),
        (["macro", "micro", "micro", "itc", "itc"], "pN1"),
        (["macro", "micro", "micro", "micro", "negative"], "pN2"),
        (["macro"] * 5, "pN2"),
    ],
)
def test_pn_stage_rules(labels: list[str], stage: str) -> None:
    assert pn_stage(labels) == stage


def test_pn_stage_reproduces_all_100_patients_of_the_manifest(
    camelyon_manifest_path: Path,
) -> None:
    rows = read_manifest(camelyon_manifest_path)
    derived = patient_stages([r.patient_id for r in rows], [r.label for r in rows])
    truth: dict[str, str] = {}
    for r in rows:
        stage = r.get("pN_stage")
        assert stage is not None, r.slide_id
        truth[r.patient_id] = stage
    assert len(truth) == 100
    assert derived == truth
    assert patient_kappa(truth, derived) == pytest.approx(1.0)


def test_pn_stage_reproduces_the_shared_stage_file() -> None:
    path = SHARED_DATA / "camelyon17_stages_with_center.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found (CI clones beside shared/)")
    slides: dict[str, list[str]] = {}
    truth: dict[str, str] = {}
    with path.open(newline="") as handle:
        for record in csv.DictReader(handle):
            name, stage = record["patient"], record["stage"]
            if name.endswith(".zip"):
                truth[name[: -len(".zip")]] = stage
            elif name.endswith(".tif"):
                slides.setdefault(name.split("_node_")[0], []).append(stage)
    assert len(truth) == 100
    assert set(truth.values()) <= set(PN_STAGES)
    assert {p: pn_stage(labels) for p, labels in slides.items()} == truth


def test_patient_kappa_agrees_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    true = {f"p{i}": PN_STAGES[rng.integers(5)] for i in range(40)}
    pred = {
        p: PN_STAGES[min(4, PN_STAGES.index(s) + int(rng.integers(0, 2)))] for p, s in true.items()
    }
    t = [PN_STAGES.index(true[p]) for p in sorted(true)]
    q = [PN_STAGES.index(pred[p]) for p in sorted(true)]
    expected = skm.cohen_kappa_score(t, q, weights="quadratic", labels=list(range(5)))
    assert patient_kappa(true, pred) == pytest.approx(expected)


def _random_label_sets(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Truth/prediction pairs with absent classes, single classes and one slide."""
    rng = np.random.default_rng(3)
    pairs = []
    for _ in range(count):
        n = int(rng.integers(1, 60))
        classes = rng.choice(4, size=int(rng.integers(1, 5)), replace=False)
        t = rng.choice(classes, n).astype(np.int64)
        noisy = rng.integers(0, 4, n)
        p = np.where(rng.random(n) < rng.random(), t, noisy).astype(np.int64)
        pairs.append((t, p))
    pairs.append((np.array([2, 2, 2]), np.array([2, 2, 2])))
    pairs.append((np.array([1, 1]), np.array([3, 3])))
    return pairs


def test_count_kernels_equal_scikit_learn_to_the_bit() -> None:
    """Every count-based score is scikit-learn's value exactly (``==``, not approx):
    reports and ``results.csv`` must not move by an ulp when the kernel replaces it."""
    from wsi_ncmi.confusion import (
        balanced_accuracy_from_counts,
        confusion_counts,
        f1_per_class,
        macro_f1_counts,
        quadratic_kappa_from_counts,
    )
    from wsi_ncmi.train.metrics import macro_f1

    labels = np.arange(4)
    for trial, (t, p) in enumerate(_random_label_sets(120)):
        cm = confusion_counts(t, p, 4)
        assert cm.tolist() == skm.confusion_matrix(t, p, labels=labels).tolist(), trial
        expected = skm.f1_score(t, p, labels=np.union1d(t, p), average="macro", zero_division=0)
        assert macro_f1_counts(t, p, 4) == expected, trial
        assert macro_f1(t, p, 4) == expected, trial
        per_class = skm.f1_score(t, p, labels=labels, average=None, zero_division=0)
        assert f1_per_class(cm).tolist() == per_class.tolist(), trial
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes predicted but absent from the truth
            balanced = skm.balanced_accuracy_score(t, p)
            kappa = skm.cohen_kappa_score(t, p, labels=labels, weights="quadratic")
        assert balanced_accuracy_from_counts(cm) == balanced, trial
        assert quadratic_kappa_from_counts(cm) == kappa or (
            np.isnan(kappa) and np.isnan(quadratic_kappa_from_counts(cm))
        ), trial
        ours = classification_metrics(t, p, None)
        assert ours.accuracy == skm.accuracy_score(t, p), trial
        assert ours.balanced_accuracy == balanced, trial
        if np.array_equal(t, p) and np.unique(t).size == 1:
            assert ours.kappa_quadratic == 1.0, trial  # undefined in scikit-learn
        else:
            same = ours.kappa_quadratic == kappa
            assert same or (np.isnan(kappa) and np.isnan(ours.kappa_quadratic)), trial


def test_kappa_of_a_single_agreed_class_is_one() -> None:
    from wsi_ncmi.train.metrics import quadratic_kappa

    assert quadratic_kappa([2, 2, 2], [2, 2, 2], 4) == 1.0
    assert np.isnan(quadratic_kappa([], [], 4))
    assert quadratic_kappa([0, 1, 2, 3], [3, 2, 1, 0], 4) == pytest.approx(
        skm.cohen_kappa_score([0, 1, 2, 3], [3, 2, 1, 0], weights="quadratic")
    )


def test_a_group_with_one_true_class_reports_macro_f1_and_kappa_as_undefined() -> None:
    """Issue 24 #10: a one-class hospital predicted as that class is not 'macro-F1 1.000'."""
    from wsi_ncmi.manifest import ManifestRow
    from wsi_ncmi.train.html import training_summary_md
    from wsi_ncmi.train.report import compute_report, prediction_records, summary_table

    rows = [
        ManifestRow(f"s{i}", f"p{i}", i // 3, "negative" if i < 3 else "macro") for i in (0, 1, 2)
    ]
    rows += [
        ManifestRow(f"s{i}", f"p{i}", 1, ("negative", "macro", "itc")[i % 3]) for i in (3, 4, 5)
    ]
    predictions = [
        {"index": i, "pred": 0 if row.label == "negative" else 3,
         "probs": [0.7, 0.1, 0.1, 0.1] if row.label == "negative" else [0.1, 0.1, 0.1, 0.7]}
        for i, row in enumerate(rows)
    ]  # fmt: skip
    report = compute_report(prediction_records(rows, predictions, "t"), rows, n_bootstrap=10)
    one_class = report.per_center["0"]
    assert np.isnan(one_class.scalar("macro_f1"))
    assert np.isnan(one_class.scalar("kappa_quadratic"))
    assert "fewer than 2 true classes" in one_class.undefined["macro_f1"]
    assert report.per_center["1"].undefined == {}
    assert np.isfinite(report.per_center["1"].scalar("macro_f1"))
    table = summary_table(report)
    assert "n/a: center0 macro_f1, macro_f1_ci95, kappa_quadratic" in table
    line = next(x for x in table.splitlines() if x.startswith("center0"))
    assert "1.000" not in line.split()[2]
    assert "n/a" in line
    assert "fewer than 2 true classes" in training_summary_md("t", report, {}, "default")
