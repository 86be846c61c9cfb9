"""The slide access layer against the real fixtures and generated slides."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from _slides import corrupt_first_tile, tissue_image, truncate, write_pyramid_tiff

from wsi_ncmi import (
    ConfigError,
    CorruptTileError,
    MissingMppError,
    SlideOpenError,
    UnsupportedFormatError,
)
from wsi_ncmi.slide import SlideRef, close_cached_slides, open_slide, rgba_to_rgb_over_white

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "slides"
CMU = FIXTURES / "CMU-1-Small-Region.svs"
SMALL = FIXTURES / "small.svs"
BOXES = FIXTURES / "boxes.tiff"
DICOM = FIXTURES / "dicom_boxes" / "boxes_0.dcm"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"fixtures missing: {FIXTURES}")

TIFF_BACKENDS = ["openslide", "tiffslide"]


@pytest.mark.parametrize("backend", [*TIFF_BACKENDS, "auto"])
def test_cmu_small_region(backend: str) -> None:
    with open_slide(CMU, backend) as slide:
        assert slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.level_count == 1
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.mpp_source == "aperio.MPP"
        region = slide.read_region((1000, 1000), 0, (64, 32))
        assert region.shape == (32, 64, 3)
        assert region.dtype == np.uint8
        # Real H&E: the centre of this region is stained, not white background.
        assert region.mean() < 230


def test_cmu_backends_agree_on_pixels() -> None:
    with open_slide(CMU, "openslide") as a, open_slide(CMU, "tiffslide") as b:
        ra = a.read_region((480, 960), 0, (240, 240)).astype(int)
        rb = b.read_region((480, 960), 0, (240, 240)).astype(int)
    # Both decode the same JPEG tile; decoders may differ by rounding only.
    assert np.abs(ra - rb).mean() < 2.0


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_small_svs(backend: str) -> None:
    with open_slide(SMALL, backend) as slide:
        assert slide.vendor == "aperio"
        assert slide.dimensions == (16, 16)
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.thumbnail(8).shape == (8, 8, 3)


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_boxes_tiff_levels_and_placeholder_mpp(backend: str) -> None:
    with open_slide(BOXES, backend) as slide:
        assert slide.vendor == "generic-tiff"
        assert slide.level_count == 4
        assert slide.level_dimensions == ((300, 250), (150, 125), (75, 62), (37, 31))
        # Its resolution tags say 72 dpi (352.8 µm/px): a placeholder, never trusted.
        with pytest.raises(MissingMppError, match=r"352\.8.*--mpp_override VALUE.*--mpp_csv FILE"):
            _ = slide.mpp
        for level in range(slide.level_count):
            w, h = slide.level_dimensions[level]
            assert slide.read_region((0, 0), level, (w, h)).shape == (h, w, 3)


def test_boxes_tiff_with_override_and_csv(tmp_path: Path) -> None:
    with open_slide(BOXES, "openslide", mpp_override=0.25) as slide:
        assert slide.mpp == (0.25, 0.25)
        assert slide.mpp_source == "override"
        assert slide.level_mpp(1) == pytest.approx(0.5)
        assert slide.best_level_for_mpp(0.5) == 1
        assert slide.best_level_for_mpp(0.4) == 0
        assert slide.best_level_for_mpp(100.0) == 3
    csv = tmp_path / "mpp.csv"
    csv.write_text("slide,mpp\nboxes.tiff,0.3\n")
    with open_slide(BOXES, "tiffslide", mpp_csv=csv) as slide:
        assert slide.mpp == (0.3, 0.3)
        assert slide.mpp_source == "override-csv"
    csv.write_text("slide,mpp\nboxes.tiff,abc\n")
    with pytest.raises(ConfigError, match=r"mpp\.csv:2.*'abc'"):
        open_slide(BOXES, "tiffslide", mpp_csv=csv)
    with pytest.raises(ConfigError, match="mpp override"):
        _ = open_slide(BOXES, "openslide", mpp_override=-1.0).mpp


@pytest.mark.parametrize("backend", ["openslide", "auto"])
def test_dicom_pair_opens_through_openslide(backend: str) -> None:
    with open_slide(DICOM, backend) as slide:
        assert slide.vendor == "dicom"
        assert slide.dimensions == (16, 16)
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)


def test_dicom_is_unsupported_by_tiffslide() -> None:
    with pytest.raises(UnsupportedFormatError, match="not a TIFF"):
        open_slide(DICOM, "tiffslide")


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_generated_pyramid(tmp_path: Path, backend: str) -> None:
    # Odd sizes expose rounding bugs in level geometry.
    path = write_pyramid_tiff(tmp_path / "odd.tif", tissue_image(333, 251), mpp=0.25, levels=3)
    with open_slide(path, backend) as slide:
        assert slide.level_count == 3
        assert slide.mpp == pytest.approx((0.25, 0.25))
        assert slide.mpp_source == "tiff-resolution"
        # 333 px halves to 166 px: level 1 is 0.2506·2.006 ≈ 0.5015 µm/px, slightly
        # coarser than a 0.5 target, so the exact choice is level 0 unless we allow slack.
        assert slide.level_mpp(1) == pytest.approx(0.25 * 333 / 166, rel=1e-2)
        assert slide.best_level_for_mpp(0.5) == 0
        assert slide.best_level_for_mpp(0.5, rel_tol=0.01) == 1
        assert slide.best_level_for_mpp(1.1) == 2
        thumb = slide.thumbnail(100)
        assert max(thumb.shape[:2]) == 100


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_slide_without_mpp(tmp_path: Path, backend: str) -> None:
    path = write_pyramid_tiff(tmp_path / "no mpp é.tif", tissue_image(), mpp=None)
    with open_slide(path, backend) as slide:
        with pytest.raises(MissingMppError, match=r"no mpp é\.tif.*--mpp_override VALUE"):
            _ = slide.mpp
    with open_slide(path, backend, mpp_override=0.5) as slide:
        assert slide.mpp == (0.5, 0.5)


@pytest.mark.parametrize("backend", [*TIFF_BACKENDS, "auto"])
def test_truncated_file(tmp_path: Path, backend: str) -> None:
    path = truncate(write_pyramid_tiff(tmp_path / "t.tif", tissue_image(), mpp=0.5), 0.4)
    with pytest.raises(SlideOpenError, match="truncated"):
        open_slide(path, backend)


@pytest.mark.parametrize("backend", [*TIFF_BACKENDS, "auto"])
def test_text_file_named_svs(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("this is not a slide\n")
    with pytest.raises(UnsupportedFormatError) as info:
        open_slide(path, backend)
    if backend == "auto":
        # Both backends' reasons are in the message and the OpenSlide error is chained.
        assert "openslide:" in str(info.value)
        assert "tiffslide:" in str(info.value)
        assert isinstance(info.value.__cause__, UnsupportedFormatError)


def test_zero_byte_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(SlideOpenError, match="0-byte"):
        open_slide(empty, "openslide")
    with pytest.raises(SlideOpenError, match="does not exist"):
        open_slide(tmp_path / "nope.svs", "tiffslide")
    with pytest.raises(ConfigError, match="backend must be one of"):
        open_slide(CMU, "bioformats")


@pytest.mark.parametrize("backend", TIFF_BACKENDS)
def test_corrupt_tile_is_recoverable(tmp_path: Path, backend: str) -> None:
    path = corrupt_first_tile(write_pyramid_tiff(tmp_path / "c.tif", tissue_image(), mpp=0.5))
    with open_slide(path, backend) as slide:
        with pytest.raises(CorruptTileError) as info:
            slide.read_region((0, 0), 0, (32, 32))
        err = info.value
        assert (err.location, err.level, err.size) == ((0, 0), 0, (32, 32))
        assert str(path) in str(err)
        # Other tiles of the same slide still read: the handle recovers.
        good = slide.read_region((256, 192), 0, (64, 64))
        assert good.shape == (64, 64, 3)
        assert good.mean() < 240


def test_read_region_validates_arguments() -> None:
    with open_slide(CMU, "openslide") as slide:
        with pytest.raises(ValueError, match="level"):
            slide.read_region((0, 0), 1, (8, 8))
        with pytest.raises(ValueError, match="size"):
            slide.read_region((0, 0), 0, (0, 8))


def test_outside_slide_is_white() -> None:
    with open_slide(SMALL, "openslide") as slide:
        region = slide.read_region((8, 8), 0, (16, 16))
    assert (region[12:, 12:] == 255).all()


def test_rgba_composite_over_white() -> None:
    rgba = np.array([[[100, 50, 0, 0], [100, 50, 0, 255], [0, 0, 0, 128]]], np.uint8)
    rgb = rgba_to_rgb_over_white(rgba)
    assert rgb.tolist() == [[[255, 255, 255], [100, 50, 0], [127, 127, 127]]]


def test_slide_is_not_picklable_but_ref_is(tmp_path: Path) -> None:
    with open_slide(CMU, "openslide") as slide, pytest.raises(TypeError, match="SlideRef"):
        pickle.dumps(slide)
    ref = SlideRef(str(CMU), backend="tiffslide")
    clone = pickle.loads(pickle.dumps(ref))
    assert clone == ref
    opened = clone.open()
    assert opened is clone.open()  # one handle per process, reused
    assert opened.dimensions == (2220, 2967)
    close_cached_slides()


def _worker_read(ref: SlideRef) -> float:
    return float(ref.open().read_region((1000, 1000), 0, (32, 32)).mean())


def test_ref_opens_in_worker_processes(tmp_path: Path) -> None:
    import multiprocessing as mp

    local = tmp_path / "copy.svs"
    shutil.copy(CMU, local)
    ref = SlideRef(str(local), backend="openslide")
    expected = _worker_read(ref)  # the parent opens first, as a DataLoader's parent may
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_worker_read, [ref] * 4)
    assert results == pytest.approx([expected] * 4)
    close_cached_slides()


@pytest.mark.parametrize("path", [CMU, BOXES])
def test_fast_whole_level_equals_openslide_compositor(path: Path, tmp_path: Path) -> None:
    from wsi_ncmi.slide import Slide

    generated = write_pyramid_tiff(tmp_path / "g.tif", tissue_image(333, 251), levels=3)
    for p in (path, generated):
        with open_slide(p, "openslide") as slide:
            for level in range(slide.level_count):
                fast = slide.read_level(level)
                reference = Slide.read_level(slide, level)  # OpenSlide read_region path
                assert fast.shape == reference.shape
                assert np.array_equal(fast, reference)


def test_fast_whole_level_falls_back_on_corrupt_tile(tmp_path: Path) -> None:
    """A whole level is decoded by tifffile when it can; a corrupt tile there hands the
    read to OpenSlide, whose error (naming the region) is what the user gets."""
    from wsi_ncmi.slide.backends import _tifffile_whole_level

    path = corrupt_first_tile(write_pyramid_tiff(tmp_path / "c.tif", tissue_image(), mpp=0.5))
    with open_slide(path, "openslide") as slide:
        with pytest.raises(Exception) as fast:  # the decoder's own error type
            _tifffile_whole_level(slide.path, 0, slide.level_dimensions[0])
        assert not isinstance(fast.value, CorruptTileError)
        with pytest.raises(CorruptTileError) as info:
            slide.read_level(0)
        message = str(info.value)
        assert "failed to decode region at level-0 (0, 0), level 0, size 640x480" in message
        assert "OpenSlideError: Not a JPEG file" in message  # raised by the fallback
        # The intact level 1 takes the fast path, with OpenSlide's compositor's pixels.
        fast_pixels = _tifffile_whole_level(slide.path, 1, slide.level_dimensions[1])
        assert np.array_equal(slide.read_level(1), fast_pixels)
        w, h = slide.level_dimensions[1]
        assert np.array_equal(fast_pixels, slide.read_region((0, 0), 1, (w, h)))
