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


def test_report_finds_a_separable_tumour_direction() -> None:
    rng = np.random.default_rng(0)
    labels = ("negative", "micro", "macro")
    slides = [_slide(i, labels[i % 3], i % 3, rng) for i in range(18)]
    d = diagnose(slides)
    assert (d["slides"], d["patches"], d["dim"]) == (18, 720, 6)
    assert d["per_class"]["macro"]["slides"] == 6
    assert d["per_class"]["macro"]["mostly_tumour_per_slide"] == {
        "mean": 15.0,
        "median": 15.0,
        "min": 15,
        "max": 15,
    }
    assert d["per_class"]["micro"]["mostly_tumour_per_slide"]["median"] == 2.0
    assert d["probe_auroc"] > 0.95
    assert d["per_class"]["macro"]["probe_auroc"] > 0.95
    assert "probe_auroc" not in d["per_class"]["negative"]  # no tumour patches to score
    assert set(d["loho_auroc"]) == {1, 2}  # center 0 holds the negative slides only
    assert d["negative_vs_macro_auroc"] > 0.95
    assert report(slides)[0] == "18 slides, 720 patches, feature dim 6"


def test_normal_subsample_keeps_every_tumour_patch() -> None:
    rng = np.random.default_rng(1)
    labels = ("negative", "micro", "macro")
    slides = [_slide(i, labels[i % 3], i % 3, rng) for i in range(18)]
    d = diagnose(slides, normal_per_slide=5)
    assert d["patches"] == 720  # per-slide counts use every patch
    assert d["probe_patches"]["tumour"] == 6 * 15 + 6 * 2
    assert d["probe_patches"]["normal"] == 18 * 5
