"""The tile-decode reader: OpenSlide's pixels, from JPEG tiles decoded straight from the file.

The oracle is OpenSlide's ``read_region`` on the same file (a different code path: its own
TIFF parser, tile cache and cairo compositor). Both decode with libjpeg-turbo's default
settings, so the documented bound is 0: every pixel is identical.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _slides import corrupt_first_tile, tissue_image, write_pyramid_tiff

from wsi_ncmi.errors import ConfigError, CorruptTileError
from wsi_ncmi.slide import choose_reader, open_slide
from wsi_ncmi.slide.tiledecode import TileDecodeSlide, is_tile_decodable

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "slides"
CMU = FIXTURES / "CMU-1-Small-Region.svs"
MAX_ABS_DIFF = 0  # the documented bound (docs/extraction.md): identical pixels


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"fixture {path} not present")
    return path


def _ycbcr_slide(path: Path) -> Path:
    """A JPEG-tiled TIFF stored as YCbCr 4:2:0 with self-contained tiles (no shared tables)."""
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            tissue_image(300, 200, seed=3), photometric="ycbcr", subsampling=(2, 2),
            tile=(64, 64), compression="jpeg", metadata=None, resolution=(2e4, 2e4),
            resolutionunit="CENTIMETER",
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every JPEG-tiled slide the reader supports: real Aperio files and generated TIFFs."""
    root = tmp_path_factory.mktemp("tiledecode")
    return {
        "cmu-aperio": _fixture("CMU-1-Small-Region.svs"),
        "small-aperio": _fixture("small.svs"),
        "pyramid-odd": write_pyramid_tiff(
            root / "odd.tif", tissue_image(701, 499, seed=1), tile=64, levels=3
        ),
        "ycbcr": _ycbcr_slide(root / "ycbcr.tif"),
    }


def _regions(
    slide: TileDecodeSlide, level: int, n: int, seed: int
) -> list[tuple[int, int, int, int]]:
    """Random regions at ``level``: inside, across tile edges, past the slide's edges."""
    rng = np.random.default_rng(seed)
    ds = round(slide.level_downsamples[level])
    w0, h0 = slide.dimensions
    out = []
    for _ in range(n):
        x = int(rng.integers(-40 * ds, w0)) // ds * ds
        y = int(rng.integers(-40 * ds, h0)) // ds * ds
        out.append((x, y, int(rng.integers(1, 300)), int(rng.integers(1, 300))))
    return out


@pytest.mark.parametrize("name", ["cmu-aperio", "small-aperio", "pyramid-odd", "ycbcr"])
def test_pixels_equal_openslide_on_every_level(slides: dict[str, Path], name: str) -> None:
    path = slides[name]
    assert is_tile_decodable(path)
    with TileDecodeSlide(path) as fast, open_slide(path, "openslide") as ref:
        assert fast.level_dimensions == ref.level_dimensions
        assert fast.mpp == ref.mpp
        for level in range(fast.level_count):
            assert fast.decodes_level(level)
            for x, y, w, h in _regions(fast, level, 40, seed=level):
                got = fast.read_region((x, y), level, (w, h))
                want = ref.read_region((x, y), level, (w, h))
                assert got.shape == want.shape == (h, w, 3)
                diff = np.abs(got.astype(int) - want.astype(int)).max()
                assert diff <= MAX_ABS_DIFF, (name, level, (x, y, w, h), diff)


def test_whole_cmu_level_equals_openslide() -> None:
    path = _fixture("CMU-1-Small-Region.svs")
    with TileDecodeSlide(path) as fast, open_slide(path, "openslide") as ref:
        w, h = fast.dimensions
        np.testing.assert_array_equal(
            fast.read_region((0, 0), 0, (w, h)), ref.read_region((0, 0), 0, (w, h))
        )


def test_read_region_into_fills_the_same_pixels(slides: dict[str, Path]) -> None:
    path = slides["pyramid-odd"]
    with TileDecodeSlide(path) as fast, open_slide(path, "openslide") as ref:
        # One whole interior tile (decoded in place), a region across tiles, the edge.
        for x, y, size in [(64, 128, 64), (30, 50, 100), (640, 448, 64)]:
            out = np.full((size, size, 3), 7, np.uint8)
            fast.read_region_into((x, y), 0, out)
            np.testing.assert_array_equal(out, ref.read_region((x, y), 0, (size, size)))


def test_odd_offset_on_a_reduced_level_is_left_to_openslide(slides: dict[str, Path]) -> None:
    path = slides["pyramid-odd"]  # level 1 is 2x: an odd level-0 x is a half-pixel offset
    with TileDecodeSlide(path) as fast, open_slide(path, "openslide") as ref:
        out = np.empty((40, 50, 3), np.uint8)
        fast.read_region_into((31, 17), 1, out)
        np.testing.assert_array_equal(out, ref.read_region((31, 17), 1, (50, 40)))


def test_corrupt_tile_fails_only_the_regions_that_touch_it(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "bad.tif", tissue_image(256, 192, seed=2), tile=64)
    corrupt_first_tile(path)
    with TileDecodeSlide(path) as fast, open_slide(path, "openslide") as ref:
        with pytest.raises(CorruptTileError, match="failed to decode region"):
            fast.read_region((0, 0), 0, (64, 64))
        with pytest.raises(CorruptTileError):
            fast.read_region_into((32, 32), 0, np.empty((64, 64, 3), np.uint8))
        np.testing.assert_array_equal(  # the slide stays usable
            fast.read_region((64, 64), 0, (128, 64)), ref.read_region((64, 64), 0, (128, 64))
        )


def test_replaced_file_is_not_served_from_the_tile_cache(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "s.tif", tissue_image(256, 256, seed=4), tile=64)
    with TileDecodeSlide(path) as slide:
        before = slide.read_region((60, 60), 0, (100, 100))
    other = write_pyramid_tiff(tmp_path / "o.tif", tissue_image(256, 256, seed=5), tile=64)
    shutil.move(other, path)
    os.utime(path, ns=(1, 1))
    with TileDecodeSlide(path) as slide, open_slide(path, "openslide") as ref:
        after = slide.read_region((60, 60), 0, (100, 100))
        np.testing.assert_array_equal(after, ref.read_region((60, 60), 0, (100, 100)))
    assert not np.array_equal(before, after)


def test_auto_chooses_by_file_format(slides: dict[str, Path], tmp_path: Path) -> None:
    assert choose_reader(slides["cmu-aperio"], "auto", fallback="openslide") == "tiledecode"
    assert choose_reader(slides["pyramid-odd"], "auto", fallback="tiffslide") == "tiledecode"
    deflate = write_pyramid_tiff(
        tmp_path / "deflate.tif", tissue_image(128, 128), compression="zlib"
    )
    assert choose_reader(deflate, "auto", fallback="tiffslide") == "tiffslide"
    assert choose_reader(tmp_path / "missing.svs", "auto", fallback="openslide") == "openslide"
    not_a_slide = tmp_path / "x.svs"
    not_a_slide.write_bytes(b"II*\x00" + b"\x00" * 64)
    assert choose_reader(not_a_slide, "auto", fallback="openslide") == "openslide"
    # An explicit reader is kept, whatever the file.
    assert choose_reader(slides["cmu-aperio"], "openslide") == "openslide"
    with pytest.raises(ConfigError, match="backend must be one of"):
        choose_reader(slides["cmu-aperio"], "vips")


def test_real_fixtures_outside_the_reader_are_refused_by_auto() -> None:
    assert not is_tile_decodable(_fixture("boxes.tiff"))  # deflate tiles
    dicom = FIXTURES / "dicom_boxes" / "boxes_0.dcm"
    if dicom.exists():
        assert not is_tile_decodable(dicom)


def test_open_slide_opens_the_tile_decode_reader(slides: dict[str, Path]) -> None:
    with open_slide(slides["small-aperio"], "tiledecode") as slide:
        assert isinstance(slide, TileDecodeSlide)
        assert slide.backend_name == "tiledecode"
        assert slide.vendor == "aperio"
        assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)
