"""Issue 24 #6: a TIFF whose tile table does not fit its header or its file is refused first."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from _cli_args import TILE_SMALL
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.cli.tile import main as tile_main
from wsi_ncmi.errors import SlideOpenError
from wsi_ncmi.slide import open_slide
from wsi_ncmi.slide.tiff_layout import tiff_layout_problem
from wsi_ncmi.tiling import tissue as tissue_module
from wsi_ncmi.tiling.tissue import read_mask_image


def _tiled(path: Path) -> Path:
    tile = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(path, tile, tile=(256, 256), compression="zlib", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")  # fmt: skip
    return path


def _overwrite(path: Path, tag: str, value: object) -> None:
    with tifffile.TiffFile(path, mode="r+") as tif:  # tifffile opens "r+" as "r+b"
        page = tif.pages[0]
        assert isinstance(page, tifffile.TiffPage)
        page.tags[tag].overwrite(value)


def test_a_header_claiming_far_more_tiles_than_present_is_refused(tmp_path: Path) -> None:
    """The issue's 14 KB file that claims 100,000 x 100,000 px with 4 tiles."""
    path = _tiled(tmp_path / "huge.tif")
    _overwrite(path, "ImageWidth", 100_000)
    _overwrite(path, "ImageLength", 100_000)
    problem = tiff_layout_problem(path, path.stat().st_size)
    assert problem is not None
    assert "100000 x 100000 px" in problem
    assert "lists only 4" in problem
    for backend in ("auto", "tiffslide"):
        with pytest.raises(SlideOpenError, match="no pixel was read"):
            open_slide(path, backend)


def test_a_tile_beyond_the_end_of_the_file_is_refused(tmp_path: Path) -> None:
    path = _tiled(tmp_path / "beyond.tif")
    with tifffile.TiffFile(path) as tif:
        offsets = list(tif.pages[0].dataoffsets)
    offsets[1] = path.stat().st_size + 10_000  # not the last tile: a middle one
    _overwrite(path, "TileOffsets", offsets)
    problem = tiff_layout_problem(path, path.stat().st_size)
    assert problem is not None
    assert "beyond the end of the file" in problem
    assert "#1" in problem


def test_zero_byte_tiles_of_a_sparse_tiff_stay_legal(tmp_path: Path) -> None:
    path = _tiled(tmp_path / "sparse.tif")
    with tifffile.TiffFile(path) as tif:
        offsets, counts = list(tif.pages[0].dataoffsets), list(tif.pages[0].databytecounts)
    offsets[2], counts[2] = 0, 0
    _overwrite(path, "TileOffsets", offsets)
    _overwrite(path, "TileByteCounts", counts)
    assert tiff_layout_problem(path, path.stat().st_size) is None


def test_real_pyramids_pass(tmp_path: Path) -> None:
    path = write_pyramid_tiff(tmp_path / "ok.tif", tissue_image(640, 480))
    assert tiff_layout_problem(path, path.stat().st_size) is None


def test_wsi_tile_reports_the_slide_as_failed_without_reading_pixels(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    path = _tiled(slides / "huge.tif")
    _overwrite(path, "ImageWidth", 100_000)
    _overwrite(path, "ImageLength", 100_000)
    write_pyramid_tiff(slides / "ok.tif", tissue_image(640, 480))
    out = tmp_path / "out"
    assert tile_main([str(slides), "--out_dir", str(out), *TILE_SMALL]) == 1  # one failed slide
    assert (out / "coords" / "ok.h5").is_file()
    assert not (out / "coords" / "huge.h5").exists()


def test_mask_reads_have_a_time_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = cv2.resize(tissue_image(640, 480, seed=3), (2560, 1920))
    path = write_pyramid_tiff(tmp_path / "flat.tif", img, mpp=0.5, levels=1, tile=128)
    monkeypatch.setattr(tissue_module, "STRIP_BUDGET_PX", 200_000)
    with open_slide(path) as slide:
        with pytest.raises(SlideOpenError, match="took over"):
            read_mask_image(slide, 8.0, limit_s=-1.0)
        assert read_mask_image(slide, 8.0).strips > 5


def test_a_fifo_named_svs_is_not_reported_as_an_empty_file(tmp_path: Path) -> None:
    """Issue 24 minor: a FIFO is not a regular file (and opening it must not block)."""
    import os

    fifo = tmp_path / "x.svs"
    os.mkfifo(fifo)
    with pytest.raises(SlideOpenError, match="not a regular file") as info:
        open_slide(fifo)
    assert "0-byte" not in str(info.value)
