"""Write a slide as a pyramidal, tiled, JPEG-compressed TIFF, streaming level 0 by strips.

Layout (readable by OpenSlide's generic-tiff driver and by tiffslide, every level and the
µm/px): each level is a top-level page (not a SubIFD, which OpenSlide ignores); reduced
levels carry ``NewSubfileType = 1``; tiles are 256 px; X/YResolution are in pixels per
centimetre so both libraries report the µm/px. No DateTime tag and a fixed Software tag
keep the bytes reproducible. Level 0 is consumed strip by strip and the reduced levels are
accumulated as they pass (in a temporary memory map when large), so a CAMELYON-sized slide
never sits in RAM at full resolution.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
from numpy.typing import NDArray

from wsi_ncmi.errors import ConfigError

SOFTWARE_TAG = "wsi-ncmi synth"
_MEMMAP_BYTES = 256 * 1024**2
_BIGTIFF_BYTES = 2 * 1024**3

UInt8Image = NDArray[np.uint8]


def level_sizes(size_px: tuple[int, int], min_level_px: int) -> list[tuple[int, int]]:
    """Pyramid level sizes: halve (rounding down) while the short side stays ≥ ``min_level_px``.

    Args:
        size_px: Level-0 ``(width, height)``.
        min_level_px: Smallest short side of a level.

    Returns:
        ``[(width, height), ...]`` from level 0 down.
    """
    sizes = [size_px]
    while min(sizes[-1]) // 2 >= min_level_px:
        width, height = sizes[-1]
        sizes.append((width // 2, height // 2))
    return sizes


def _tiles(image: UInt8Image, tile_px: int) -> Iterator[UInt8Image]:
    for y in range(0, image.shape[0], tile_px):
        for x in range(0, image.shape[1], tile_px):
            yield image[y : y + tile_px, x : x + tile_px]


def _halve(image: UInt8Image, size: tuple[int, int]) -> UInt8Image:
    """2×2 box downsample to ``size`` = (width, rows)."""
    width, rows = size
    crop = image[: 2 * rows, : 2 * width]
    return np.asarray(cv2.resize(crop, (width, rows), interpolation=cv2.INTER_AREA))


def write_pyramid(
    path: Path,
    strips: Iterable[UInt8Image],
    size_px: tuple[int, int],
    mpp: float,
    *,
    jpeg_quality: int,
    strip_rows: int,
    tile_px: int = 256,
    min_level_px: int = 256,
) -> list[tuple[int, int]]:
    """Write level-0 strips and their reduced levels to ``path``.

    Args:
        path: Output file (written in place; callers handle atomic renames).
        strips: Level-0 bands of ``strip_rows`` rows (the last may be shorter), top to
            bottom, each ``(rows, width, 3)`` uint8.
        size_px: Level-0 ``(width, height)``.
        mpp: Level-0 µm/px (written as pixels per centimetre).
        jpeg_quality: JPEG quality 1–100.
        strip_rows: Rows per strip; a multiple of ``tile_px``.
        tile_px: Tile edge (multiple of 16).
        min_level_px: Smallest short side of a level.

    Returns:
        The level sizes written.

    Raises:
        ConfigError: If the strip height does not fit the tiling or the pyramid depth.
    """
    sizes = level_sizes(size_px, min_level_px)
    if strip_rows % tile_px or strip_rows % (1 << (len(sizes) - 1)):
        msg = (
            f"strip_rows={strip_rows} must be a multiple of tile_px={tile_px} and of "
            f"2**{len(sizes) - 1} for a {len(sizes)}-level pyramid"
        )
        raise ConfigError(msg)
    width, height = size_px
    reduced_bytes = sum(w * h * 3 for w, h in sizes[1:])
    bigtiff = width * height * 3 + reduced_bytes > _BIGTIFF_BYTES
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".pyramid-") as scratch:
        levels: list[UInt8Image] = []
        for index, (w, h) in enumerate(sizes[1:], start=1):
            if reduced_bytes > _MEMMAP_BYTES:
                levels.append(
                    np.lib.format.open_memmap(
                        os.path.join(scratch, f"level{index}.npy"),
                        mode="w+",
                        dtype=np.uint8,
                        shape=(h, w, 3),
                    )
                )
            else:
                levels.append(np.zeros((h, w, 3), dtype=np.uint8))
        filled = [0] * len(levels)

        def level0_tiles() -> Iterator[UInt8Image]:
            rows_seen = 0
            for strip in strips:
                if strip.shape[1] != width or strip.dtype != np.uint8:
                    msg = f"strip of shape {strip.shape} does not match width {width}"
                    raise ConfigError(msg)
                rows_seen += strip.shape[0]
                current = strip
                for index, level in enumerate(levels):
                    rows = current.shape[0] // 2
                    if rows == 0:
                        break
                    current = _halve(current, (level.shape[1], rows))
                    level[filled[index] : filled[index] + rows] = current
                    filled[index] += rows
                # Reduce first: the writer stops pulling after the last tile.
                yield from _tiles(strip, tile_px)
            if rows_seen != height:
                msg = f"strips gave {rows_seen} rows, expected {height}"
                raise ConfigError(msg)

        options: dict[str, Any] = {
            "photometric": "rgb",
            "compression": "jpeg",
            "compressionargs": {"level": int(jpeg_quality)},
            "tile": (tile_px, tile_px),
            "resolutionunit": "CENTIMETER",
            "software": SOFTWARE_TAG,
            "metadata": None,
            "maxworkers": 1,
        }
        with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
            pixels_per_cm = 1e4 / mpp
            tif.write(
                level0_tiles(),
                shape=(height, width, 3),
                dtype=np.uint8,
                subfiletype=0,
                resolution=(pixels_per_cm, pixels_per_cm),
                **options,
            )
            for (w, h), level in zip(sizes[1:], levels, strict=True):
                scale_x, scale_y = w / width, h / height
                tif.write(
                    level,
                    subfiletype=1,
                    resolution=(pixels_per_cm * scale_x, pixels_per_cm * scale_y),
                    **options,
                )
    return sizes
