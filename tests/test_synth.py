from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openslide
import pytest
import tifffile
import tiffslide

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.manifest import LABELS, ManifestRow, read_manifest
from wsi_ncmi.synth import generate_cohort, get_preset, plan_slide, select_slides, size_class
from wsi_ncmi.synth.writer import SOFTWARE_TAG, level_sizes, write_pyramid

# One slide per label, over four centers (the fifth center appears in the colour test).
ROWS = (
    ManifestRow("patient_000_node_0", "patient_000", 0, "negative"),
    ManifestRow("patient_020_node_1", "patient_020", 1, "itc"),
    ManifestRow("patient_040_node_2", "patient_040", 2, "micro"),
    ManifestRow("patient_060_node_3", "patient_060", 3, "macro"),
    ManifestRow("patient_080_node_4", "patient_080", 4, "negative"),
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "demo"
    generate_cohort(ROWS, out, preset="demo", seed=7, use_preset_subset=False, progress=False)
    return out


def _gt(cohort: Path, row: ManifestRow) -> dict[str, Any]:
    path = cohort / row.relative_path.with_suffix(".gt.json")
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def _feret_um(polygon: list[list[float]], mpp: float) -> float:
    pts = np.asarray(polygon)
    return float(np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()) * mpp


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_slides_open_in_both_backends(cohort: Path, backend: str) -> None:
    for row in ROWS:
        gt = _gt(cohort, row)
        path = str(cohort / row.relative_path)
        slide = openslide.OpenSlide(path) if backend == "openslide" else tiffslide.TiffSlide(path)
        with slide:
            assert slide.dimensions == tuple(gt["level0_size"])
            assert slide.level_count == gt["level_count"] >= 3
            assert [tuple(d) for d in slide.level_dimensions] == level_sizes(
                tuple(gt["level0_size"]), 256
            )
            mpp_x = float(slide.properties[f"{backend}.mpp-x"])
            mpp_y = float(slide.properties[f"{backend}.mpp-y"])
            assert mpp_x == pytest.approx(gt["mpp"][0], abs=1e-6)
            assert mpp_y == pytest.approx(gt["mpp"][1], abs=1e-6)
            for level, (width, height) in enumerate(slide.level_dimensions):
                down = slide.level_downsamples[level]
                corner = (int((width - 64) * down), int((height - 64) * down))
                region = np.asarray(slide.read_region(corner, level, (64, 64)).convert("RGB"))
                assert region.shape == (64, 64, 3)
                assert region.mean() > 150  # the corner is background glass


def test_no_timestamp_and_fixed_software_tag(cohort: Path) -> None:
    with tifffile.TiffFile(cohort / ROWS[0].relative_path) as tif:
        assert len(tif.pages) >= 3
        first = tif.pages[0]
        assert isinstance(first, tifffile.TiffPage)
        assert "DateTime" not in first.tags
        assert first.tags["Software"].value == SOFTWARE_TAG
        assert all(isinstance(page, tifffile.TiffPage) and page.is_tiled for page in tif.pages)


def test_tumour_size_class_matches_label(cohort: Path) -> None:
    for row in ROWS:
        gt = _gt(cohort, row)
        mpp, scale = gt["mpp"][0], gt["size_scale"]
        diameters = [_feret_um(p, mpp) for p in gt["tumour_polygons"]]
        nominal = max(diameters, default=0.0) / scale
        assert size_class(nominal) == row.label == gt["label_from_size"]
        assert gt["tumour_largest_diameter_um"] == pytest.approx(nominal * scale, abs=0.01)
        if row.label == "negative":
            assert gt["tumour_polygons"] == []


def test_size_class_thresholds() -> None:
    assert [size_class(d) for d in (0, 200, 201, 2000, 2001)] == [
        "negative",
        "itc",
        "micro",
        "micro",
        "macro",
    ]


def test_ground_truth_matches_image(cohort: Path) -> None:
    row = next(r for r in ROWS if r.label == "macro")
    gt = _gt(cohort, row)
    mask = cv2.imread(
        str(cohort / row.relative_path.with_suffix(".mask.png")), cv2.IMREAD_GRAYSCALE
    )
    assert mask is not None
    ds = gt["mask"]["downsample"]
    assert mask.shape == (gt["level0_size"][1] // ds, gt["level0_size"][0] // ds)
    tumour = np.asarray(gt["tumour_polygons"][0])
    area_px = 0.5 * abs(
        np.dot(tumour[:, 0], np.roll(tumour[:, 1], 1))
        - np.dot(tumour[:, 1], np.roll(tumour[:, 0], 1))
    )
    assert (mask == 255).sum() * ds**2 == pytest.approx(area_px, rel=0.1)
    # Read level 0 around the tumour: inside the polygon the image differs from outside.
    with openslide.OpenSlide(str(cohort / row.relative_path)) as slide:
        x0, y0 = np.floor(tumour.min(axis=0)).astype(int) - 200
        x1, y1 = np.ceil(tumour.max(axis=0)).astype(int) + 200
        image = np.asarray(
            slide.read_region((int(x0), int(y0)), 0, (int(x1 - x0), int(y1 - y0))).convert("RGB")
        )
    inside = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round((tumour - [x0, y0]) * 16).astype(np.int32)], 1, shift=4)
    tissue = np.zeros_like(inside)
    for poly in gt["tissue_polygons"]:
        cv2.fillPoly(
            tissue, [np.round((np.asarray(poly) - [x0, y0]) * 16).astype(np.int32)], 1, shift=4
        )
    eroded = cv2.erode(inside, np.ones((9, 9), np.uint8)).astype(bool)
    outside = (tissue == 1) & ~cv2.dilate(inside, np.ones((9, 9), np.uint8)).astype(bool)
    inside_rgb = image[eroded].mean(axis=0)
    outside_rgb = image[outside].mean(axis=0)
    assert np.abs(inside_rgb - outside_rgb).max() > 8
    # Generator v2: metastases are crowded, hyperchromatic nuclei, darker than the node in
    # the red channel (hematoxylin absorbs red); v1 drew them paler than the node.
    assert inside_rgb[0] < outside_rgb[0] - 20, (inside_rgb, outside_rgb)


def _tissue_od(cohort: Path, row: ManifestRow) -> np.ndarray:
    gt = _gt(cohort, row)
    mask = cv2.imread(
        str(cohort / row.relative_path.with_suffix(".mask.png")), cv2.IMREAD_GRAYSCALE
    )
    assert mask is not None
    with openslide.OpenSlide(str(cohort / row.relative_path)) as slide:
        level = slide.get_best_level_for_downsample(gt["mask"]["downsample"])
        image = np.asarray(
            slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB")
        ).astype(np.float64)
    mask = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    lymphoid = cv2.erode((mask == 128).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    od = -np.log(np.clip(image[lymphoid], 1, 255) / 255.0)
    return od.mean(axis=0)


def test_centers_differ_in_colour(cohort: Path) -> None:
    od = {row.center: _tissue_od(cohort, row) for row in ROWS}
    centers = sorted(od)
    for i, a in enumerate(centers):
        for b in centers[i + 1 :]:
            assert np.linalg.norm(od[a] - od[b]) > 0.05, (a, b, od[a], od[b])


def test_same_seed_is_byte_identical_across_worker_counts(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_cohort(
        ROWS[:3], again, preset="demo", seed=7, use_preset_subset=False, workers=2, progress=False
    )
    files = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len(files) == 3 * 3 + 2  # tif, png, json per slide + manifest.csv + config
    for name in files:
        if name.name != "manifest.csv":
            assert (again / name).read_bytes() == (cohort / name).read_bytes(), name


def test_other_seed_gives_other_slide() -> None:
    preset = get_preset("demo")
    first, second = (plan_slide(ROWS[2], preset, seed) for seed in (0, 1))
    assert first.size_px != second.size_px
    assert plan_slide(ROWS[2], preset, 0).size_px == first.size_px


def test_rerun_skips_finished_slides_and_refuses_other_seed(cohort: Path) -> None:
    result = generate_cohort(
        ROWS, cohort, preset="demo", seed=7, use_preset_subset=False, progress=False
    )
    assert result.generated == ()
    assert len(result.skipped) == len(ROWS)
    assert read_manifest(cohort / "manifest.csv") == list(ROWS)
    with pytest.raises(ConfigError, match="seed"):
        generate_cohort(ROWS, cohort, preset="demo", seed=8, progress=False)
    assert not list(cohort.rglob("*.tmp"))


def test_select_slides_stratifies_per_center(camelyon_manifest_path: Path) -> None:
    rows = read_manifest(camelyon_manifest_path)
    chosen = select_slides(rows, 20)
    assert len(chosen) == 100
    assert chosen == select_slides(rows, 20)
    assert [r for r in rows if r in chosen] == chosen  # manifest order
    for center in range(5):
        labels = {r.label for r in chosen if r.center == center}
        assert labels == set(LABELS)
    assert len(select_slides(rows, 3, centers=[1])) == 3
    assert len(select_slides(rows, None)) == 500
    with pytest.raises(ConfigError, match="subset"):
        select_slides(rows, 0)


def test_streaming_writer_levels(tmp_path: Path) -> None:
    height, width = 700, 1100
    ramp = np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1))
    image = np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8)
    strips = (image[y : y + 256] for y in range(0, height, 256))
    path = tmp_path / "ramp.tif"
    sizes = write_pyramid(
        path, strips, (width, height), 0.5, jpeg_quality=90, strip_rows=256, min_level_px=128
    )
    assert sizes == [(1100, 700), (550, 350), (275, 175)]
    with tiffslide.TiffSlide(path) as slide:
        assert slide.level_dimensions == tuple(sizes)
        small = np.asarray(slide.read_region((0, 0), 2, sizes[2]).convert("RGB"))
    expected = cv2.resize(image, sizes[2], interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - expected).mean() < 3
    with pytest.raises(ConfigError, match="strip_rows"):
        write_pyramid(path, iter([]), (width, height), 0.5, jpeg_quality=90, strip_rows=100)


def test_cli_help_and_bad_manifest(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "synth_cohort", repo_root / "tools" / "synth_cohort.py"
    )
    assert spec is not None
    assert spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--help"]) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("slide_id,label\n")
    assert (
        tool.main(["--manifest", str(bad), "--out_dir", str(tmp_path / "o"), "--progress=false"])
        == 2
    )
    assert "missing column" in capsys.readouterr().err


@pytest.mark.slow
def test_full_preset_slide(tmp_path: Path) -> None:
    row = ROWS[3]
    generate_cohort([row], tmp_path, preset="full", seed=0, use_preset_subset=False, progress=False)
    gt = _gt(tmp_path, row)
    assert min(gt["level0_size"]) > 20000
    assert size_class(gt["tumour_largest_diameter_nominal_um"]) == "macro"
    with openslide.OpenSlide(str(tmp_path / row.relative_path)) as slide:
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25, abs=1e-6)


def test_console_script_is_the_same_command(tmp_path: Path) -> None:
    """``wsi-synth-cohort`` (the installed console script) runs the tool's main."""
    import shutil
    import subprocess
    import sys

    from wsi_ncmi.cli.synth import main

    script = Path(sys.executable).parent / "wsi-synth-cohort"
    assert script.is_file() or shutil.which("wsi-synth-cohort"), "pip install -e . installs it"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "--preset" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("slide_id,label\n")
    assert main(["--manifest", str(bad), "--out_dir", str(tmp_path / "o"), "--progress=false"]) == 2
