"""Pure functions of the tiler: geometry, grid, integral-image fractions, Otsu, masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from wsi_ncmi import ConfigError
from wsi_ncmi.tiling.grid import (
    GridParams,
    build_grid,
    grid_axes,
    plan_geometry,
    tissue_fractions,
)
from wsi_ncmi.tiling.review import polygons_geojson, tissue_polygons
from wsi_ncmi.tiling.tissue import (
    TissueParams,
    detect_tissue,
    effective_mask_mpp,
    otsu_threshold,
)
from wsi_ncmi.tiling.user_mask import load_user_mask


def test_geometry_records_exact_resize_factor() -> None:
    g = plan_geometry(GridParams(0.5, 256), slide_mpp=0.499, read_level=0, read_downsample=1.0)
    assert g.patch_size_level0 == pytest.approx(256 * 0.5 / 0.499)
    assert g.read_size_px == 257
    assert g.resize_factor == 256 / 257
    assert g.effective_mpp == pytest.approx(0.499 * 257 / 256)
    # 0.25 µm/px slide, 1.0 µm/px target read from the 1/4 level: no resize at all.
    g = plan_geometry(GridParams(1.0, 224, overlap_px=32), 0.25, 2, 4.0)
    assert (g.patch_size_level0, g.stride_level0, g.read_size_px) == (896.0, 768.0, 224)
    assert g.resize_factor == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_mpp": 0.0},
        {"patch_size_px": 0},
        {"overlap_px": 256},
        {"min_tissue": 1.5},
    ],
)
def test_grid_params_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        GridParams(**kwargs)


def test_grid_is_anchored_at_origin_and_deterministic() -> None:
    g = plan_geometry(GridParams(0.5, 256), 0.499, 0, 1.0)
    xs, ys = grid_axes((2220, 2967), g)
    assert xs[0] == 0
    assert ys[0] == 0
    assert np.array_equal(xs, np.round(np.arange(len(xs)) * g.stride_level0).astype(np.int64))
    assert xs[-1] < 2220 <= xs[-1] + g.stride_level0
    assert np.array_equal(grid_axes((2220, 2967), g)[1], ys)


def _fraction_oracle(mask: np.ndarray, scale: float, x: float, y: float, size: float) -> float:
    """Area of the mask (pixels as unit squares) under a rectangle, by supersampling."""
    n = 400
    u = x / scale + (np.arange(n) + 0.5) * (size / scale) / n
    v = y / scale + (np.arange(n) + 0.5) * (size / scale) / n
    ui, vi = np.floor(u).astype(int), np.floor(v).astype(int)
    inside_u = (ui >= 0) & (ui < mask.shape[1])
    inside_v = (vi >= 0) & (vi < mask.shape[0])
    vals = np.zeros((n, n))
    vals[np.ix_(inside_v, inside_u)] = mask[np.ix_(vi[inside_v], ui[inside_u])]
    return float(vals.mean())


def test_integral_fractions_match_oracle() -> None:
    rng = np.random.default_rng(1)
    mask = (rng.random((40, 50)) > 0.5).astype(np.uint8)
    scale = 7.3  # level-0 px per mask px (non-integer on purpose)
    xs = np.array([0, 13, 101, 300])
    ys = np.array([0, 55, 250])
    frac = tissue_fractions(mask, (scale, scale), xs, ys, 41.7)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert frac[i, j] == pytest.approx(_fraction_oracle(mask, scale, x, y, 41.7), abs=4e-3)


def test_build_grid_keeps_tissue_patches_in_row_major_order() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[20:60, 30:90] = 1
    g = plan_geometry(GridParams(1.0, 10, min_tissue=0.5), 1.0, 0, 1.0)
    grid = build_grid(mask, (1.0, 1.0), (100, 100), g, 0.5)
    assert grid.coords.dtype == np.int64
    assert grid.coords.tolist() == [[x, y] for y in range(20, 60, 10) for x in range(30, 90, 10)]
    assert np.all(grid.tissue_fraction == 1.0)


def test_otsu() -> None:
    values = np.r_[np.full(100, 10), np.full(100, 200)].astype(np.uint8)
    assert 10 <= otsu_threshold(values) < 200
    assert otsu_threshold(np.full(10, 7, np.uint8)) == 255


def test_small_slides_get_a_finer_mask() -> None:
    assert effective_mask_mpp(0.25, (100_000, 80_000), 8.0) == 8.0
    assert effective_mask_mpp(0.5, (2048, 1024), 8.0) == pytest.approx(2.0)
    assert effective_mask_mpp(0.5, (8192, 1024), 8.0) == pytest.approx(4.0)
    assert effective_mask_mpp(0.5, (100, 100), 8.0) == 2.0  # at most 4x finer
    assert effective_mask_mpp(4.0, (100, 100), 8.0) == 4.0  # never finer than level 0


def test_detect_tissue_blank_and_params() -> None:
    blank = np.full((200, 300, 3), 240, np.uint8)
    assert detect_tissue(blank, 8.0, TissueParams()).mask.sum() == 0
    with pytest.raises(ConfigError, match="mask_mpp"):
        TissueParams(mask_mpp=0)
    with pytest.raises(ConfigError, match="saturation_threshold"):
        TissueParams(saturation_threshold=300)


def test_user_masks_and_geojson_round_trip(tmp_path: Path) -> None:
    mask = np.zeros((60, 80), np.uint8)
    cv2.rectangle(mask, (10, 10), (69, 49), 1, -1)
    cv2.rectangle(mask, (30, 20), (49, 39), 0, -1)  # a hole
    polygons = tissue_polygons(mask, (10.0, 10.0))
    assert len(polygons) == 1
    assert len(polygons[0]) == 2
    gj = tmp_path / "s.geojson"
    gj.write_text(json.dumps(polygons_geojson(polygons, "s")))
    back = load_user_mask(gj, (60, 80), (800, 600)).mask
    assert np.abs(back.astype(int) - mask).sum() < 0.1 * mask.sum()
    png = tmp_path / "s.png"
    cv2.imwrite(str(png), mask * 255)
    assert np.array_equal(load_user_mask(png, (60, 80), (800, 600)).mask, mask)
    with pytest.raises(ConfigError, match="aspect ratio"):
        load_user_mask(png, (60, 80), (800, 200))
    (tmp_path / "empty.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(ConfigError, match="no Polygon"):
        load_user_mask(tmp_path / "empty.geojson", (60, 80), (800, 600))
