"""wsi-extract's slide reader: the tile-decode default against ``--backend openslide``.

Features of every built-in encoder must match between the two readers within the documented
tolerance (docs/extraction.md: 0, since the pixels are identical), on generated slides
(aligned, resized, corrupt tiles) and on the real Aperio fixture; the reader is recorded in
each file and in its resume key, so switching readers extracts again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _features import coords_attrs, grid, make_cohort
from _slides import corrupt_first_tile

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features import read_features
from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.run import run_extraction
from wsi_ncmi.slide.cucim import cucim_available
from wsi_ncmi.tiling.schema import write_coords

CMU = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "slides"
    / "CMU-1-Small-Region.svs"
)
FEATURE_TOLERANCE = 0.0  # max abs diff per feature, documented in docs/extraction.md
BUILTIN_ENCODERS = ("random-cnn", "stain-stats")


def _extract(coords_dir: Path, out: Path, encoder: str, **kw: Any) -> dict[str, str]:
    config = ExtractConfig(
        coords_dir=coords_dir, out_dir=out, encoder=encoder, device="cpu", batch_size=16,
        workers=0, progress=False, lock=False, **kw,
    )  # fmt: skip
    report = run_extraction(config)
    return {r.item_id: r.status for r in report.results}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated slides: a plain grid, a grid with gaps, a resized grid, a corrupt tile,
    and (when the fixture is present) an unaligned grid on the real Aperio slide."""
    root = tmp_path_factory.mktemp("reader")
    coords_dir, slides = make_cohort(root, n_slides=2, width=320, height=256)
    corrupt_first_tile(slides[0])
    # 0.5 -> 1.0 µm/px: 64 px read at level 0, resized to 32, grid shifted off the tiles.
    attrs = coords_attrs(
        slides[1], "resized", target_mpp=1.0, patch_size_px=32, patch_size_level0=64.0,
        read_size_px=64, resize_factor=0.5, stride_level0=64,
    )  # fmt: skip
    coords = grid(320 - 40, 256 - 24, 64) + np.array([40, 24])
    write_coords(coords_dir / "resized.h5", coords, np.ones(len(coords)), attrs)
    if CMU.exists():
        attrs = coords_attrs(
            CMU, "cmu", backend="openslide", vendor="aperio", mpp_x=0.499, mpp_y=0.499,
            patch_size_px=224, patch_size_level0=224.0, read_size_px=224, stride_level0=224,
        )  # fmt: skip
        coords = grid(2220 - 13, 2967 - 7, 224)[::3] + np.array([13, 7])
        write_coords(coords_dir / "cmu.h5", coords, np.ones(len(coords)), attrs)
    return coords_dir


@pytest.mark.parametrize("encoder", BUILTIN_ENCODERS)
def test_features_match_the_openslide_reader(cohort: Path, tmp_path: Path, encoder: str) -> None:
    fast = _extract(cohort, tmp_path / "fast", encoder)
    slow = _extract(cohort, tmp_path / "slow", encoder, backend="openslide")
    assert fast == slow
    assert set(fast.values()) == {"ok"}
    for path in sorted((tmp_path / "fast" / "features" / encoder).glob("*.h5")):
        a = read_features(path)
        b = read_features(tmp_path / "slow" / "features" / encoder / path.name)
        assert a.attrs["reader"] == "tiledecode"
        assert b.attrs["reader"] == "openslide"
        assert a.attrs["extraction_hash"] != b.attrs["extraction_hash"]
        np.testing.assert_array_equal(a.valid, b.valid)
        diff = np.abs(a.features.astype(np.float64) - b.features.astype(np.float64))
        assert diff.max(initial=0.0) <= FEATURE_TOLERANCE, (path.name, diff.max())
    bad = read_features(tmp_path / "fast" / "features" / encoder / "slide0.h5")
    assert not bad.valid[0]  # the corrupt tile...
    assert bad.valid[1:].all()  # ...and only it


def test_switching_reader_extracts_again_and_never_mixes(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert set(_extract(cohort, out, "stain-stats").values()) == {"ok"}
    assert set(_extract(cohort, out, "stain-stats").values()) == {"skipped"}
    again = _extract(cohort, out, "stain-stats", backend="openslide")
    assert set(again.values()) == {"ok"}  # redone, not skipped
    for path in (out / "features" / "stain-stats").glob("*.h5"):
        with h5py.File(path, "r") as h5:
            assert h5.attrs["reader"] == "openslide"


def test_unknown_backend_is_refused(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--backend must be one of"):
        _extract(cohort, tmp_path / "x", "stain-stats", backend="vips")


def test_gpu_decode_needs_a_cuda_device(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--gpu_decode needs a CUDA device"):
        _extract(cohort, tmp_path / "x", "stain-stats", gpu_decode=True)


@pytest.mark.skipif(cucim_available(), reason="cuCIM is installed here")
def test_cucim_backend_without_the_extra_says_how_to_install(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pip install 'wsi-ncmi\[cucim\]'"):
        _extract(cohort, tmp_path / "x", "stain-stats", backend="cucim")


@pytest.mark.skipif(not cucim_available(), reason="needs the cucim extra")
def test_cucim_features_match_the_openslide_reader(cohort: Path, tmp_path: Path) -> None:
    fast = _extract(cohort, tmp_path / "cucim", "stain-stats", backend="cucim")
    slow = _extract(cohort, tmp_path / "slow", "stain-stats", backend="openslide")
    assert fast == slow
    for path in sorted((tmp_path / "cucim" / "features" / "stain-stats").glob("*.h5")):
        if path.stem == "slide0":
            continue  # cuCIM logs the corrupt tile and returns pixels anyway (documented)
        a = read_features(path)
        b = read_features(tmp_path / "slow" / "features" / "stain-stats" / path.name)
        assert a.attrs["reader"] == "cucim"
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_array_equal(a.features, b.features)
