"""The ``bench`` preset: the 500-slide twin of CAMELYON-17 that the full benchmark uses.

Checks the label mix against the real manifest, the tumour sizes against the CAMELYON-17
rules, the patch field of view against real CAMELYON-17 work (0.5 µm/px × 256 px), that
ITC slides have patches that are mostly tumour, and determinism down to the file bytes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from wsi_ncmi.manifest import read_manifest
from wsi_ncmi.synth import generate_cohort, get_preset, plan_slide, select_slides, size_class
from wsi_ncmi.synth.generate import SlidePlan
from wsi_ncmi.synth.geometry import largest_diameter
from wsi_ncmi.synth.separability import tumour_fraction
from wsi_ncmi.synth.stain import center_profile

BENCH = get_preset("bench")


@pytest.fixture(scope="module")
def rows(camelyon_manifest_path: Path) -> list:
    return read_manifest(camelyon_manifest_path)


def test_every_labelled_slide_is_twinned_with_its_label(rows: list) -> None:
    selected = select_slides(rows, BENCH.default_subset)
    assert len(selected) == 500
    assert Counter(r.label for r in selected) == {
        "negative": 318,
        "itc": 36,
        "micro": 59,
        "macro": 87,
    }
    assert [(r.slide_id, r.patient_id, r.center) for r in selected] == [
        (r.slide_id, r.patient_id, r.center) for r in rows
    ]


def test_patch_field_of_view_is_real_camelyon() -> None:
    mpp, patch_px = BENCH.tiling
    assert mpp * patch_px / BENCH.size_scale == pytest.approx(0.5 * 256)  # 128 µm
    for diameter in (70.0, 180.0, 1500.0):
        assert BENCH.fov_ratio(diameter) == pytest.approx(diameter / 128.0)
    # the demo preset shrinks tumours 4x but not its 128-µm patches: ratios 4x too small
    assert get_preset("demo").fov_ratio(180.0) == pytest.approx(180.0 / 512.0)


def _first(rows: list, label: str, count: int) -> list:
    return [r for r in rows if r.label == label][:count]


@pytest.mark.parametrize("label", ["itc", "micro", "macro", "negative"])
def test_tumour_sizes_follow_the_camelyon_rules(rows: list, label: str) -> None:
    for row in _first(rows, label, 6):
        plan = plan_slide(row, BENCH, seed=0)
        diameters_um = [largest_diameter(p) * plan.mpp for p in plan.tumour.regions]
        assert size_class(max(diameters_um, default=0.0)) == label
        if label == "itc":
            assert 2 <= len(diameters_um) <= 4
            assert all(120.0 <= d <= 200.0 for d in diameters_um)
        width_um, height_um = (s * plan.mpp for s in plan.size_px)
        assert 5990.0 <= width_um <= 7000.0
        assert 4590.0 <= height_um <= 5400.0
        # each hospital's scanner µm/px, times 8 (≈ 2 µm/px)
        assert plan.mpp == pytest.approx(8 * center_profile(row.center).full_mpp, abs=1e-4)


def _max_fraction_patches(plan: SlidePlan, threshold: float = 0.5) -> int:
    """Patches of the 128-µm grid (origin 0, as the tiler lays it) ≥ ``threshold`` tumour."""
    stride = 128.0 / plan.mpp
    polys = plan.tumour.regions
    width, height = plan.size_px
    ii, jj = np.meshgrid(np.arange(int(width // stride)), np.arange(int(height // stride)))
    coords = np.stack([np.round(ii.ravel() * stride), np.round(jj.ravel() * stride)], 1)
    near = np.zeros(len(coords), dtype=bool)
    for poly in polys:
        lo, hi = poly.min(axis=0) - stride, poly.max(axis=0)
        near |= np.all((coords >= lo) & (coords <= hi), axis=1)
    fractions = tumour_fraction(coords[near].astype(np.int64), stride, polys)
    return int((fractions >= threshold).sum())


@pytest.mark.slow  # 6 s: tumour fractions of the patches near 36 ITC slide plans' tumours
def test_itc_slides_have_patches_that_are_mostly_tumour(rows: list) -> None:
    counts = [_max_fraction_patches(plan_slide(r, BENCH, seed=0)) for r in _first(rows, "itc", 36)]
    assert len(counts) == 36
    assert np.median(counts) >= 1
    # the demo preset's ITCs (≤ 50 µm in 128-µm patches) never fill half a patch
    demo = [
        _max_fraction_patches(plan_slide(r, get_preset("demo"), 0)) for r in _first(rows, "itc", 8)
    ]
    assert max(demo) == 0


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in {".tif", ".png", ".json"} and p.name != "synth_config.json"
    }


@pytest.mark.slow  # the default tier checks determinism on the demo preset (test_synth.py)
def test_generation_is_deterministic(rows: list, tmp_path: Path) -> None:
    one = [next(r for r in rows if r.label == "itc")]
    first = generate_cohort(one, tmp_path / "a", preset="bench", workers=1, progress=False)
    second = generate_cohort(one, tmp_path / "b", preset="bench", workers=1, progress=False)
    assert len(first.generated) == len(second.generated) == 1
    digest_a, digest_b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(digest_a) == 3
    assert digest_a == digest_b
    other = generate_cohort(one, tmp_path / "c", preset="bench", seed=1, workers=1, progress=False)
    assert len(other.generated) == 1
    assert _digest(tmp_path / "c") != digest_a
