"""The demo's patch-separability diagnostic on hand-made patches with a known answer."""

from __future__ import annotations

import numpy as np

from wsi_ncmi.synth.separability import SlidePatches, report, tumour_fraction


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
    lines = report(slides)
    assert lines[0] == "18 slides, 720 patches, feature dim 6"
    macro = next(line for line in lines if line.startswith("  macro: 6;"))
    assert "15.0 (15-15)" in macro
    random_half = next(line for line in lines if line.startswith("patch probe, random half"))
    assert float(random_half.split("AUROC ")[1].split()[0]) > 0.95
    final = lines[-1]
    assert final.startswith("negative vs macro slides, AUROC of that count:")
    assert float(final.rsplit(" ", 1)[1]) > 0.95
