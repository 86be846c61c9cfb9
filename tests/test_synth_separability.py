"""The demo's patch-separability diagnostic on hand-made patches with a known answer."""

from __future__ import annotations

import numpy as np

from wsi_ncmi.synth.separability import SlidePatches, diagnose, report, tumour_fraction


def test_tumour_fraction_of_patches_against_a_square() -> None:
    square = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]])
    coords = np.array([[0, 0], [50, 0], [100, 0], [300, 300]], dtype=np.int64)
    frac = tumour_fraction(coords, 100.0, [square])
    np.testing.assert_allclose(frac, [1.0, 0.5, 0.0, 0.0])
    assert tumour_fraction(coords, 100.0, []).tolist() == [0.0] * 4


def _slide(i: int, label: str, center: int, rng: np.random.Generator) -> SlidePatches:
    n, tumour = 40, {"negative": 0, "itc": 0, "micro": 2, "macro": 15}[label]
    frac = np.zeros(n)
    frac[:tumour] = 1.0
    features = rng.normal(0.0, 1.0, (n, 6)) + center  # a hospital offset on every feature
    features[:tumour, 0] += 6.0  # tumour patches stand out on feature 0
    return SlidePatches(f"s{i}", label, center, features, frac)


def test_diagnostics_find_a_separable_tumour_direction() -> None:
    """The numbers the report prints, against what the hand-made patches were built with."""
    rng = np.random.default_rng(0)
    labels = ("negative", "micro", "macro")
    slides = [_slide(i, labels[i % 3], i % 3, rng) for i in range(18)]
    result = diagnose(slides)
    assert (result.n_slides, result.n_patches, result.feature_dim) == (18, 720, 6)
    # _slide marks 0 / 2 / 15 of 40 patches as fully tumour: 6 slides of each label.
    assert result.mostly_tumour == {"negative": [0] * 6, "micro": [2] * 6, "macro": [15] * 6}
    assert result.touching_tumour == result.mostly_tumour
    assert result.top_fraction == {"negative": 0.0, "micro": 1.0, "macro": 1.0}
    assert (result.tumour_patches, result.normal_patches) == (6 * 2 + 6 * 15, 720 - 102)
    # Feature 0 carries +6 on tumour patches: a linear probe separates them.
    assert result.random_half_auroc > 0.95
    assert set(result.held_out_auroc) == {1, 2}  # center 0 holds only negative slides
    assert min(result.held_out_auroc.values()) > 0.95
    negatives = [result.tumour_calls[s.slide_id] for s in slides if s.label == "negative"]
    macros = [result.tumour_calls[s.slide_id] for s in slides if s.label == "macro"]
    assert max(negatives) < min(macros)
    assert result.negative_vs_macro_auroc == 1.0
    assert set(result.class_auroc) == {"micro", "macro"}  # negatives have no tumour patch
    assert min(result.class_auroc.values()) > 0.95
    assert result.calls_by_label["macro"] == macros


def test_normal_subsample_keeps_every_tumour_patch() -> None:
    rng = np.random.default_rng(1)
    labels = ("negative", "micro", "macro")
    slides = [_slide(i, labels[i % 3], i % 3, rng) for i in range(18)]
    result = diagnose(slides, normal_per_slide=5)
    assert result.n_patches == 720  # per-slide counts use every patch
    assert result.mostly_tumour["macro"] == [15] * 6
    assert (result.tumour_patches, result.normal_patches) == (6 * 2 + 6 * 15, 18 * 5)


def test_report_prints_the_diagnostics() -> None:
    rng = np.random.default_rng(0)
    slides = [_slide(i, ("negative", "macro")[i % 2], i % 3, rng) for i in range(8)]
    result = diagnose(slides)
    lines = report(slides)
    assert lines[0] == "8 slides, 320 patches, feature dim 6"
    auc = result.class_auroc["macro"]
    assert f"  macro: 4; 15.0, 15 (15-15); 15.0; 1.00; {auc:.3f}" in lines
    assert "  negative: 4; 0.0, 0 (0-0); 0.0; 0.00; -" in lines
    assert lines[-1] == (
        f"negative vs macro slides, AUROC of that count: {result.negative_vs_macro_auroc:.3f}"
    )
