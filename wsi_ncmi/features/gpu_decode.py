"""GPU decode for the tile-decode reader: workers read JPEG bytes, nvJPEG decodes them.

With ``--gpu_decode`` on a CUDA device, a batch of a tile-decode slide travels as the
compressed JPEG tiles that cover its patches plus a placement table (which part of which
tile goes where in which patch), built by :func:`read_tile_batch` in the DataLoader
workers. On the device, :func:`assemble_on_device` decodes the tiles in one batched nvJPEG
call (``torchvision.io.decode_jpeg(..., device="cuda")``), pastes the patches, and resizes
them (area interpolation, as the CPU path's OpenCV ``INTER_AREA`` when shrinking);
normalisation is the encoder's, on the device as always. DataLoader prefetching overlaps
the workers' reads with the device's decode and encode.

TIFF tiles are abbreviated JPEG streams (the tables sit once in the TIFF), and Aperio's
tiles are RGB without a colour transform; :func:`complete_jpeg` makes each a standalone
JPEG (the shared tables spliced in, an Adobe marker that says "no transform" for RGB
tiles) that any decoder reads as OpenSlide does. nvJPEG's inverse DCT is not
libjpeg-turbo's, so pixels may differ from OpenSlide's by a few levels: the reader is
recorded as ``tiledecode+nvjpeg``, a resume key of its own. Not measured on a GPU yet
(``tools/bench/gpu_session.sh`` does it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from wsi_ncmi.slide.tiledecode import TileDecodeSlide, TiledJpegLevel

SOI, EOI = b"\xff\xd8", b"\xff\xd9"
# APP14 "Adobe" marker, version 100, flags 0/0, transform 0: components are RGB as stored.
ADOBE_NO_TRANSFORM = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def complete_jpeg(tile: bytes, tables: bytes | None, colorspace: str) -> bytes:
    """A standalone JPEG stream from one abbreviated TIFF tile.

    Args:
        tile: The tile's bytes (``SOI ... EOI``).
        tables: The TIFF's shared JPEG tables (``SOI tables EOI``), or None.
        colorspace: ``"RGB"`` (stored without colour transform: an Adobe marker says so)
            or ``"YCBCR"``.

    Returns:
        ``SOI [Adobe marker] [tables] rest-of-tile``.

    Raises:
        ValueError: ``tile`` or ``tables`` do not start with SOI (or tables lack EOI).
    """
    if tile[:2] != SOI:
        raise ValueError("a JPEG tile must start with SOI (FF D8)")
    head = SOI + (ADOBE_NO_TRANSFORM if colorspace == "RGB" else b"")
    if tables:
        if tables[:2] != SOI or tables[-2:] != EOI:
            raise ValueError("JPEG tables must be an SOI ... EOI stream")
        head += tables[2:-2]
    return head + tile[2:]


@dataclass
class TileBatch:
    """The compressed form of one batch (built in a worker, decoded on the device).

    Attributes:
        jpegs: Standalone JPEG streams, one per distinct tile.
        placements: ``(M, 8)`` int64 rows ``(patch, tile, src_y, src_x, dst_y, dst_x, h,
            w)``: copy ``tile[src_y:src_y+h, src_x:src_x+w]`` to ``patch[dst_y.., dst_x..]``
            (at the read size); uncovered pixels are white.
        read_size: Side of a patch as read (before resizing).
    """

    jpegs: list[bytes]
    placements: np.ndarray
    read_size: int


def read_tile_batch(
    slide: TileDecodeSlide, level: int, coords: np.ndarray, read_size: int
) -> TileBatch:
    """Collect the JPEG tiles that cover a batch of square patches, each tile once.

    Args:
        slide: An open tile-decode slide whose ``level`` is tiled JPEG.
        level: Level to read.
        coords: ``(B, 2)`` level-0 ``(x, y)`` of the patches.
        read_size: Patch side at ``level``.

    Returns:
        The batch's :class:`TileBatch`.

    Raises:
        OSError: A tile's bytes cannot be read (the caller then decodes on the CPU, which
            reports the bad tile).
        ValueError: A tile is not a JPEG stream.
    """
    layout = slide.level_layout(level)
    if layout is None:
        raise ValueError(f"level {level} of {slide.path} is not tiled JPEG")
    downsample = slide.level_downsamples[level]
    ds = round(downsample)
    if abs(downsample - ds) > 1e-9 or bool((np.asarray(coords) % ds).any()):
        raise ValueError("patches at sub-pixel offsets of a reduced level: read on the CPU")
    index_of: dict[int, int] = {}
    jpegs: list[bytes] = []
    rows: list[tuple[int, ...]] = []
    tw, th = layout.tile_width, layout.tile_height
    for k, (x0, y0) in enumerate(coords):
        lx, ly = int(x0) // ds, int(y0) // ds
        x1, y1 = min(lx + read_size, layout.width), min(ly + read_size, layout.height)
        cx0, cy0 = max(lx, 0), max(ly, 0)
        for ty in range(cy0 // th, max(cy0, y1 - 1) // th + 1):
            for tx in range(cx0 // tw, max(cx0, x1 - 1) // tw + 1):
                ax0, ay0 = max(tx * tw, cx0), max(ty * th, cy0)
                ax1, ay1 = min((tx + 1) * tw, x1), min((ty + 1) * th, y1)
                if ax0 >= ax1 or ay0 >= ay1:
                    continue
                index = ty * layout.tiles_across + tx
                if int(layout.byte_counts[index]) == 0:
                    continue  # not stored: stays white
                if index not in index_of:
                    index_of[index] = len(jpegs)
                    jpegs.append(_tile_stream(slide, layout, index))
                rows.append(
                    (k, index_of[index], ay0 - ty * th, ax0 - tx * tw, ay0 - ly, ax0 - lx,
                     ay1 - ay0, ax1 - ax0)
                )  # fmt: skip
    placements = np.asarray(rows, dtype=np.int64).reshape(-1, 8)
    return TileBatch(jpegs=jpegs, placements=placements, read_size=read_size)


def _tile_stream(slide: TileDecodeSlide, layout: TiledJpegLevel, index: int) -> bytes:
    return complete_jpeg(slide.tile_bytes(layout, index), layout.jpeg_tables, layout.colorspace)


def assemble_on_device(
    batch: TileBatch, n_patches: int, patch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode a :class:`TileBatch` with nvJPEG and paste, resize its patches on ``device``.

    Args:
        batch: The compressed batch.
        n_patches: ``B``.
        patch_size: Output side ``P``.
        device: A CUDA device.

    Returns:
        ``(images, valid)``: ``uint8 (B, P, P, 3)`` on ``device`` and ``bool (B,)``
        (False for patches with a tile that failed to decode; their images are zeros).
    """
    import torch
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg

    streams = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in batch.jpegs]
    decoded: list[torch.Tensor | None]
    try:
        decoded = list(decode_jpeg(streams, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad tile fails the batched call: find it tile by tile
        decoded = []
        for stream in streams:
            try:
                decoded.append(decode_jpeg(stream, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
    r = batch.read_size
    canvas = torch.full((n_patches, 3, r, r), 255, dtype=torch.uint8, device=device)
    valid = torch.ones(n_patches, dtype=torch.bool)
    for k, j, sy, sx, dy, dx, h, w in batch.placements.tolist():
        tile = decoded[j]
        if tile is None:
            valid[k] = False
            continue
        canvas[k, :, dy : dy + h, dx : dx + w] = tile[:, sy : sy + h, sx : sx + w]
    if r != patch_size:
        mode = "area" if r > patch_size else "bilinear"
        resized = F.interpolate(canvas.float(), size=(patch_size, patch_size), mode=mode)
        canvas = resized.round_().clamp_(0, 255).to(torch.uint8)
    canvas[~valid.to(device)] = 0
    return canvas.permute(0, 2, 3, 1).contiguous(), valid
