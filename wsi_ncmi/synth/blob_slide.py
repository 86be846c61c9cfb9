"""Large JPEG-tiled pyramid slides with tissue blobs at known polygons.

Used to measure the tiler at CAMELYON scale (``tools/bench/tile_speed.py``) and to test it
against ground truth on a slide whose tissue pieces have realistic physical sizes (the
small generated slides of the unit tests have pieces a few patches wide, where boundary
patches dominate every area statistic).

Each level is streamed tile by tile: tiles fully inside or outside the blobs reuse a small
bank of pre-encoded JPEG segments, so an 8-gigapixel slide is written in seconds with
memory bounded by one level's coarse raster. The output is deterministic for a given
:class:`BlobSlideSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.batch.atomic import atomic_output

TILE = 256
BACKGROUND = (242, 241, 239)


@dataclass(frozen=True)
class BlobSlideSpec:
    """Geometry of a blob slide (level-0 pixels unless stated).

    Attributes:
        width: Level-0 width.
        height: Level-0 height.
        mpp: Level-0 µm/px, written as the TIFF resolution.
        centers: Blob centres ``((x, y), ...)``.
        semi_axes: ``(a, b)`` semi-axes of every blob before the wobble (±13 %).
        downsamples: Pyramid levels, each a top-level TIFF page.
        quality: JPEG quality.
    """

    width: int = 100_000
    height: int = 80_000
    mpp: float = 0.25
    centers: tuple[tuple[int, int], ...] = (
        (25_000, 20_000),
        (75_000, 20_000),
        (25_000, 60_000),
        (75_000, 60_000),
    )
    semi_axes: tuple[int, int] = (14_000, 11_300)  # 4 blobs: about 25 % of the default slide
    downsamples: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    quality: int = 80


#: The tiling issue's CAMELYON-scale benchmark slide: 100,000 x 80,000 px at 0.25 µm/px.
CAMELYON_SCALE = BlobSlideSpec()


def blob_polygons(spec: BlobSlideSpec) -> list[NDArray[np.float64]]:
    """The blob outlines in level-0 pixels, one ``(1440, 2)`` array of ``(x, y)`` each."""
    theta = np.linspace(0, 2 * np.pi, 1440, endpoint=False)
    polys = []
    a, b = spec.semi_axes
    for k, (cx, cy) in enumerate(spec.centers):
        r = 1 + 0.08 * np.sin(3 * theta + k) + 0.05 * np.sin(5 * theta + 2 * k)
        polys.append(np.stack([cx + a * r * np.cos(theta), cy + b * r * np.sin(theta)], 1))
    return polys


def truth_mask(spec: BlobSlideSpec, downsample: int) -> NDArray[np.uint8]:
    """Ground-truth tissue (1) at ``1/downsample`` of level 0, shape ``(H/ds, W/ds)``."""
    import cv2

    h, w = math.ceil(spec.height / downsample), math.ceil(spec.width / downsample)
    mask = np.zeros((h, w), np.uint8)
    pts = [np.round(p / downsample * 16).astype(np.int32) for p in blob_polygons(spec)]
    cv2.fillPoly(mask, pts, 1, shift=4)
    return mask


def _tissue_bank(n: int = 16, seed: int = 0) -> list[NDArray[np.uint8]]:
    """Textured H&E-like tiles: pink stroma with purple nuclei."""
    import cv2

    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (TILE, TILE)).astype(np.float32), (0, 0), 3)
        base = np.array([215, 140, 185], np.float32) + 25 * noise[..., None]
        img = np.clip(base, 0, 255).astype(np.uint8)
        for _ in range(60):
            x, y = rng.integers(0, TILE, 2)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(2, 6)), (110, 60, 150), -1)
        tiles.append(img)
    return tiles


def _encode(tile: NDArray[np.uint8], quality: int) -> bytes:
    import imagecodecs

    return bytes(
        imagecodecs.jpeg8_encode(
            tile, level=quality, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2)
        )
    )


def _level_tiles(
    spec: BlobSlideSpec,
    ds: int,
    bank_bytes: list[bytes],
    bank: list[NDArray[np.uint8]],
    bg_bytes: bytes,
) -> Iterator[bytes]:
    """Yield the JPEG segments of one level, row by row."""
    import cv2

    w, h = math.ceil(spec.width / ds), math.ceil(spec.height / ds)
    ntx, nty = math.ceil(w / TILE), math.ceil(h / TILE)
    sub = 16  # coarse raster: 16 x 16 samples per tile to classify tiles
    coarse = np.zeros((nty * sub, ntx * sub), np.uint8)
    polys = [p / ds for p in blob_polygons(spec)]
    cv2.fillPoly(coarse, [np.round(p * sub / TILE).astype(np.int32) for p in polys], 1)
    cover = coarse.reshape(nty, sub, ntx, sub).mean(axis=(1, 3))
    for ty in range(nty):
        for tx in range(ntx):
            c = cover[ty, tx]
            pick = (tx * 7919 + ty * 104729) % len(bank)
            if c == 0:
                yield bg_bytes
            elif c == 1:
                yield bank_bytes[pick]
            else:
                m = np.zeros((TILE, TILE), np.uint8)
                off = np.array([tx * TILE, ty * TILE])
                cv2.fillPoly(
                    m, [np.round((p - off) * 16).astype(np.int32) for p in polys], 1, shift=4
                )
                tile = np.empty((TILE, TILE, 3), np.uint8)
                tile[:] = BACKGROUND
                tile[m > 0] = bank[pick][m > 0]
                yield _encode(tile, spec.quality)


def write_blob_slide(path: str | Path, spec: BlobSlideSpec = CAMELYON_SCALE) -> Path:
    """Write the slide as a tiled BigTIFF pyramid (atomically); return ``path``.

    Levels are successive top-level pages (level 0 ``subfiletype=0``, the others 1), so
    OpenSlide and tiffslide both see every level and the µm/px.
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bank = _tissue_bank()
    bank_bytes = [_encode(t, spec.quality) for t in bank]
    bg = np.empty((TILE, TILE, 3), np.uint8)
    bg[:] = BACKGROUND
    bg_bytes = _encode(bg, spec.quality)
    with atomic_output(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, ds in enumerate(spec.downsamples):
            w, h = math.ceil(spec.width / ds), math.ceil(spec.height / ds)
            res = 1e4 / (spec.mpp * ds)
            tif.write(
                _level_tiles(spec, ds, bank_bytes, bank, bg_bytes),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                subsampling=(2, 2),
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0,
                metadata=None,
            )
    return path
