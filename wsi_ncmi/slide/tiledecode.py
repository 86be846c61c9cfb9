"""The tile-decode reader: JPEG tiles read straight from a TIFF file and decoded once.

For tiled TIFF-family slides (generic tiled TIFF, Aperio SVS, Philips TIFF) whose pyramid
levels are JPEG-compressed tiles, a region is read by fetching the compressed bytes of the
tiles that cover it (offsets, byte counts and JPEG tables from tifffile), decoding each
with libjpeg-turbo (imagecodecs) and copying the decoded tiles into place. Metadata
(levels, properties, µm/px, vendor) still comes from OpenSlide, so a slide has the same
geometry under both readers.

Pixels equal OpenSlide's: both decode with libjpeg-turbo's default (islow) inverse DCT and
fancy upsampling, and take the JPEG colour space from the TIFF's photometric tag (RGB:
no colour transform, the Aperio convention; YCbCr: converted to RGB). Like OpenSlide,
pixels outside a level (and the padding of edge tiles) are white, and so are tiles that
the file does not store (byte count 0). A read at a level whose level-0 location is not an
exact multiple of the level's downsample, or at a level that is not tiled JPEG, is left to
OpenSlide (which then resamples sub-pixel offsets), so both readers always agree.
Decoded tiles are kept in a small per-process cache, so a tile shared by two reads of a
batch (an unaligned grid) is decoded once.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.slide.backends import OpenSlideSlide

if TYPE_CHECKING:
    from openslide import OpenSlide

TILE_DECODE_VENDORS = ("generic-tiff", "aperio", "philips")
"""OpenSlide vendors whose tiles sit on a plain grid (Ventana overlaps tiles: not here)."""

TILE_CACHE_BYTES = 64 * 1024 * 1024
"""Decoded tiles kept per process (about 340 tiles of 256 × 256 px)."""

_JPEG = 7  # TIFF compression tag value of (new-style) JPEG
_COLORSPACES = {2: "RGB", 6: "YCBCR"}  # TIFF photometric -> JPEG colour space


@dataclass(frozen=True)
class TiledJpegLevel:
    """Where the JPEG tiles of one pyramid level are in the file.

    Attributes:
        width: Level width in pixels.
        height: Level height in pixels.
        tile_width: Tile width in pixels.
        tile_height: Tile height in pixels.
        offsets: ``(tiles_down * tiles_across,)`` int64 byte offsets, row-major.
        byte_counts: Same shape; 0 marks a tile the file does not store.
        jpeg_tables: The shared JPEG tables (``None`` when each tile carries its own).
        colorspace: JPEG colour space of the tiles (``"RGB"`` or ``"YCBCR"``).
    """

    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: np.ndarray
    byte_counts: np.ndarray
    jpeg_tables: bytes | None
    colorspace: str

    @property
    def tiles_across(self) -> int:
        """Tiles per row."""
        return -(-self.width // self.tile_width)


def _level_of_page(page: Any) -> TiledJpegLevel | None:
    """The tile layout of a tifffile page, or None if it is not 8-bit RGB tiled JPEG."""
    if not page.is_tiled or int(page.compression) != _JPEG:
        return None
    if int(page.photometric) not in _COLORSPACES or int(page.planarconfig) != 1:
        return None
    if page.samplesperpixel != 3 or page.bitspersample != 8 or page.imagedepth != 1:
        return None
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    height, width = int(page.imagelength), int(page.imagewidth)
    tw, th = int(page.tilewidth), int(page.tilelength)
    if len(offsets) != (-(-width // tw)) * (-(-height // th)) or len(counts) != len(offsets):
        return None
    return TiledJpegLevel(
        width=width,
        height=height,
        tile_width=tw,
        tile_height=th,
        offsets=offsets,
        byte_counts=counts,
        jpeg_tables=bytes(page.jpegtables) if page.jpegtables else None,
        colorspace=_COLORSPACES[int(page.photometric)],
    )


def tiled_jpeg_levels(
    path: str | Path, level_dimensions: tuple[tuple[int, int], ...]
) -> tuple[TiledJpegLevel | None, ...]:
    """Match each OpenSlide level to the TIFF page that stores it.

    Args:
        path: The slide file.
        level_dimensions: ``(width, height)`` of each level, as OpenSlide reports them.

    Returns:
        One entry per level: its tile layout, or ``None`` when no tiled JPEG page of
        exactly that size exists (that level is then read by OpenSlide).
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages: list[Any] = [p for p in tif.pages if getattr(p, "is_tiled", False)]
        by_size: dict[tuple[int, int], TiledJpegLevel | None] = {}
        for page in pages:
            size = (int(page.imagewidth), int(page.imagelength))
            if size not in by_size:  # the first page of a size, as OpenSlide takes it
                by_size[size] = _level_of_page(page)
    return tuple(by_size.get((int(w), int(h))) for w, h in level_dimensions)


def is_tile_decodable(path: str | Path) -> bool:
    """Whether ``path``'s file format suits the tile-decode reader.

    Decided by the file alone (never by installed extras or GPUs), so every node of a
    sharded run chooses the same reader: a TIFF that OpenSlide reads as one of
    :data:`TILE_DECODE_VENDORS` and whose level 0 is stored as 8-bit RGB JPEG tiles.
    Returns False for anything else, including files that cannot be read.
    """
    import openslide
    import tifffile

    try:
        with Path(path).open("rb") as fh:
            if fh.read(4) not in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
                return False
        if openslide.OpenSlide.detect_format(str(path)) not in TILE_DECODE_VENDORS:
            return False
        with tifffile.TiffFile(path) as tif:
            tiled: list[Any] = [p for p in tif.pages if getattr(p, "is_tiled", False)]
            if not tiled:
                return False
            largest = max(tiled, key=lambda p: int(p.imagewidth) * int(p.imagelength))
            return _level_of_page(largest) is not None
    except Exception:  # unreadable files are the slide job's to report, with its own error
        return False


class _TileCache:
    """Least-recently-used decoded tiles of this process, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._tiles: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> np.ndarray | None:
        tile = self._tiles.get(key)
        if tile is not None:
            self._tiles.move_to_end(key)
        return tile

    def put(self, key: tuple[Any, ...], tile: np.ndarray) -> None:
        if tile.nbytes > self.max_bytes:
            return
        self._tiles[key] = tile
        self.bytes += tile.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._tiles.popitem(last=False)
            self.bytes -= old.nbytes

    def clear(self) -> None:
        self._tiles.clear()
        self.bytes = 0


_CACHE = _TileCache(TILE_CACHE_BYTES)


class TileDecodeSlide(OpenSlideSlide):
    """A tiled-JPEG TIFF slide whose regions are decoded tile by tile (see the module doc).

    Metadata comes from OpenSlide; levels that are not tiled JPEG, and reads at sub-pixel
    level offsets, go through OpenSlide too.
    """

    backend_name = "tiledecode"
    _fd: int | None = None
    _levels: tuple[TiledJpegLevel | None, ...] = ()
    _int_downsamples: tuple[int, ...] = ()

    def _open(self) -> OpenSlide:
        handle = super()._open()
        dims = tuple((int(w), int(h)) for w, h in handle.level_dimensions)
        self._levels = tiled_jpeg_levels(self.path, dims)
        # Integer downsample of each level (0: not an integer, OpenSlide resamples there).
        self._int_downsamples = tuple(
            round(d) if abs(d - round(d)) <= 1e-9 else 0 for d in handle.level_downsamples
        )
        self._close_fd()
        self._fd = os.open(self.path, os.O_RDONLY)
        st = os.fstat(self._fd)
        self._file_key = (str(self.path), st.st_ino, st.st_size, st.st_mtime_ns)
        return handle

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:  # a forked child closes only its own copy of the descriptor
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Release the OpenSlide handle and the file descriptor (idempotent)."""
        self._close_fd()
        super().close()

    def decodes_level(self, level: int) -> bool:
        """Whether ``level`` is read tile by tile (else OpenSlide reads it)."""
        self._ensure_open()
        return self._levels[level] is not None

    def _read_rgba(
        self, handle: OpenSlide, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        origin = self._tile_origin(handle, location, level)
        if origin is None:
            return super()._read_rgba(handle, location, level, size)
        out = np.empty((size[1], size[0], 3), dtype=np.uint8)
        layout = self._levels[level]
        assert layout is not None  # _tile_origin checked it
        self._read_tiles(layout, level, origin, out)
        return out

    def _tile_origin(
        self, handle: OpenSlide, location: tuple[int, int], level: int
    ) -> tuple[int, int] | None:
        """``location`` in ``level`` pixels, or None when OpenSlide must read it.

        None when the level is not tiled JPEG, or when the location is not an exact
        multiple of an integer downsample (OpenSlide resamples sub-pixel offsets).
        """
        ds = self._int_downsamples[level]
        x, y = location
        if self._levels[level] is None or not ds or x % ds or y % ds:
            return None
        return x // ds, y // ds

    def read_region_into(
        self, location_level0: tuple[int, int], level: int, out: np.ndarray
    ) -> None:
        """Read an RGB region into ``out``, as :meth:`read_region` would return it.

        A region that is exactly one stored tile is decoded straight into ``out``.

        Args:
            location_level0: Top-left ``(x, y)`` in level-0 pixels.
            level: Pyramid level to read from.
            out: ``uint8`` C-contiguous array ``(height, width, 3)``; its shape is the size.

        Raises:
            ValueError: Bad level or ``out``.
            CorruptTileError: A tile failed to decode.
        """
        if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
            raise ValueError(f"out must be a uint8 (H, W, 3) array, got {out.dtype} {out.shape}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        handle = self._ensure_open()
        if not 0 <= level < len(self._levels):
            raise ValueError(f"level must be in [0, {len(self._levels)}), got {level}")
        x, y = int(location_level0[0]), int(location_level0[1])
        origin = self._tile_origin(handle, (x, y), level)
        layout = self._levels[level]
        if origin is None or layout is None:
            out[...] = self.read_region((x, y), level, (out.shape[1], out.shape[0]))
            return
        try:
            self._read_tiles(layout, level, origin, out)
        except Exception as err:  # decoder and I/O errors of one region
            raise self._corrupt_tile(err, (x, y), level, (out.shape[1], out.shape[0])) from err

    def _read_tiles(
        self, layout: TiledJpegLevel, level: int, origin: tuple[int, int], out: np.ndarray
    ) -> None:
        """Fill ``out`` ``(h, w, 3)`` with the region at level pixels ``origin``.

        Pixels outside the level are white.
        """
        lx, ly = origin
        h, w = out.shape[:2]
        tw, th = layout.tile_width, layout.tile_height
        x0, y0 = max(lx, 0), max(ly, 0)  # the part of the region inside the level
        x1, y1 = min(lx + w, layout.width), min(ly + h, layout.height)
        if x0 >= x1 or y0 >= y1:
            out.fill(255)
            return
        if (x0, y0, x1, y1) != (lx, ly, lx + w, ly + h):
            out.fill(255)
        elif w == tw and h == th and lx % tw == 0 and ly % th == 0:
            # Exactly one whole tile inside the level: decode it in place, uncached (an
            # aligned grid never reads a tile twice).
            index = (ly // th) * layout.tiles_across + lx // tw
            if _CACHE.get((self._file_key, level, index)) is None:
                if int(layout.byte_counts[index]) == 0:
                    out.fill(255)
                    return
                decoded = decode_jpeg_tile(self.tile_bytes(layout, index), layout, out=out)
                if decoded.shape == out.shape:
                    return
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                # The part of tile (tx, ty) inside both the level and the region.
                ax0, ay0 = max(tx * tw, x0), max(ty * th, y0)
                ax1, ay1 = min((tx + 1) * tw, x1), min((ty + 1) * th, y1)
                dst = out[ay0 - ly : ay1 - ly, ax0 - lx : ax1 - lx]
                tile = self._tile(layout, level, ty * layout.tiles_across + tx)
                if tile is None:
                    dst.fill(255)
                    continue
                src = tile[ay0 - ty * th : ay1 - ty * th, ax0 - tx * tw : ax1 - tx * tw]
                if src.shape != dst.shape:  # a short edge tile: what it lacks stays white
                    dst.fill(255)
                    dst = dst[: src.shape[0], : src.shape[1]]
                dst[...] = src

    def _tile(self, layout: TiledJpegLevel, level: int, index: int) -> np.ndarray | None:
        """Decoded tile ``index`` of ``level`` as ``(th, tw, 3)`` uint8 (None: not stored)."""
        key = (self._file_key, level, index)
        tile = _CACHE.get(key)
        if tile is not None:
            return tile
        count = int(layout.byte_counts[index])
        if count == 0:
            return None
        data = self.tile_bytes(layout, index)
        tile = decode_jpeg_tile(data, layout)
        _CACHE.put(key, tile)
        return tile

    def tile_bytes(self, layout: TiledJpegLevel, index: int) -> bytes:
        """The compressed bytes of tile ``index`` (one ``pread``; thread-safe)."""
        if self._fd is None or self._pid != os.getpid():
            self._ensure_open()
        if self._fd is None:
            raise OSError(f"slide {str(self.path)!r} is closed")
        count = int(layout.byte_counts[index])
        data = os.pread(self._fd, count, int(layout.offsets[index]))
        if len(data) != count:
            raise OSError(
                f"tile {index} of {str(self.path)!r} ends past the end of the file "
                f"(wanted {count} bytes at offset {int(layout.offsets[index])}, got {len(data)})"
            )
        return data

    def level_layout(self, level: int) -> TiledJpegLevel | None:
        """The tile layout of ``level`` (None when OpenSlide reads that level)."""
        self._ensure_open()
        return self._levels[level]


def decode_jpeg_tile(
    data: bytes, layout: TiledJpegLevel, out: np.ndarray | None = None
) -> np.ndarray:
    """Decode one JPEG tile as OpenSlide does (see the module docstring).

    Args:
        data: The tile's compressed bytes.
        layout: Its level (JPEG tables, colour space).
        out: Decode into this ``uint8`` ``(th, tw, 3)`` C-contiguous array when the
            tile has exactly that shape (else a new array is returned).

    Returns:
        ``uint8`` array ``(H, W, 3)``, normally the full tile size (edge tiles included).
    """
    import imagecodecs

    tables, space = layout.jpeg_tables, layout.colorspace
    try:
        image = imagecodecs.jpeg8_decode(
            data, tables=tables, colorspace=space, outcolorspace="RGB", out=out
        )
    except ValueError:  # ``out`` has another shape than this tile (a short edge tile)
        if out is None:
            raise
        image = imagecodecs.jpeg8_decode(data, tables=tables, colorspace=space, outcolorspace="RGB")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB JPEG tile, decoded shape {image.shape}")
    return image


def clear_tile_cache() -> None:
    """Forget every decoded tile of this process (tests, benchmarks)."""
    _CACHE.clear()
