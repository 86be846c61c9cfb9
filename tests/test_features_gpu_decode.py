"""GPU decode (``--gpu_decode``): the worker side runs on the CPU here, the device side on CUDA.

The oracle is OpenSlide's ``read_region``. On the CPU: each standalone JPEG built from a
TIFF tile (tables spliced in, colour space marked) decodes with plain libjpeg-turbo, left
to its own colour-space detection, to OpenSlide's pixels, and the placement table rebuilds
every patch exactly. The CUDA test (nvJPEG) is marked ``gpu`` and skips without a device.
"""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.features.gpu_decode import TileBatch, complete_jpeg, read_tile_batch
from wsi_ncmi.slide import open_slide
from wsi_ncmi.slide.tiledecode import TileDecodeSlide

CMU = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "fixtures"
    / "slides"
    / "CMU-1-Small-Region.svs"
)
GPU_MAX_ABS_DIFF = 8  # nvJPEG vs libjpeg-turbo IDCT, assumed until measured on a GPU


def _slides(tmp_path: Path) -> list[Path]:
    paths = [write_pyramid_tiff(tmp_path / "g.tif", tissue_image(333, 290, seed=6), tile=64)]
    if CMU.exists():
        paths.append(CMU)
    return paths


def _assemble_on_cpu(batch: TileBatch, n: int) -> np.ndarray:
    """The device-side paste, on the CPU, decoding each stream with default settings."""
    tiles = [imagecodecs.jpeg8_decode(stream) for stream in batch.jpegs]
    r = batch.read_size
    out = np.full((n, r, r, 3), 255, np.uint8)
    for k, j, sy, sx, dy, dx, h, w in batch.placements.tolist():
        out[k, dy : dy + h, dx : dx + w] = tiles[j][sy : sy + h, sx : sx + w]
    return out


def test_standalone_tile_streams_decode_to_openslide_pixels(tmp_path: Path) -> None:
    for path in _slides(tmp_path):
        with TileDecodeSlide(path) as slide, open_slide(path, "openslide") as ref:
            layout = slide.level_layout(0)
            assert layout is not None
            for index in (0, layout.tiles_across + 1):
                stream = complete_jpeg(
                    slide.tile_bytes(layout, index), layout.jpeg_tables, layout.colorspace
                )
                tile = imagecodecs.jpeg8_decode(stream)  # no colour-space hint
                ty, tx = divmod(index, layout.tiles_across)
                want = ref.read_region(
                    (tx * layout.tile_width, ty * layout.tile_height),
                    0,
                    (layout.tile_width, layout.tile_height),
                )
                np.testing.assert_array_equal(tile, want)


def test_placements_rebuild_every_patch(tmp_path: Path) -> None:
    for path in _slides(tmp_path):
        with TileDecodeSlide(path) as slide, open_slide(path, "openslide") as ref:
            w, h = slide.dimensions
            coords = np.array([[0, 0], [37, 11], [w - 50, h - 20], [w - 100, 5], [-8, 30]])
            batch = read_tile_batch(slide, 0, coords, 96)
            assert len(batch.jpegs) == len({tuple(r) for r in batch.placements[:, 1:2]})
            got = _assemble_on_cpu(batch, len(coords))
            for k, (x, y) in enumerate(coords):
                np.testing.assert_array_equal(got[k], ref.read_region((x, y), 0, (96, 96)))


def test_bad_streams_are_refused() -> None:
    with pytest.raises(ValueError, match="SOI"):
        complete_jpeg(b"\x00\x00", None, "RGB")
    with pytest.raises(ValueError, match="tables"):
        complete_jpeg(b"\xff\xd8\xff\xd9", b"\x00\x01", "YCBCR")


@pytest.mark.gpu
def test_nvjpeg_patches_match_the_cpu_reader(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from wsi_ncmi.features.gpu_decode import assemble_on_device

    for path in _slides(tmp_path):
        with TileDecodeSlide(path) as slide:
            coords = np.array([[0, 0], [64, 64], [37, 11], [120, 90]])
            batch = read_tile_batch(slide, 0, coords, 128)
            images, valid = assemble_on_device(batch, len(coords), 64, torch.device("cuda"))
            assert bool(valid.all())
            for k, (x, y) in enumerate(coords):
                import cv2

                want = cv2.resize(
                    slide.read_region((int(x), int(y)), 0, (128, 128)), (64, 64),
                    interpolation=cv2.INTER_AREA,
                )  # fmt: skip
                diff = np.abs(images[k].cpu().numpy().astype(int) - want.astype(int)).max()
                assert diff <= GPU_MAX_ABS_DIFF
