"""Reading patches: one streaming dataset over the patches of many slides (:class:`SlideJob`).

A single DataLoader serves every slide of a rank (no DataLoader per slide). Each item
is a whole batch of consecutive rows of one slide, so a batch is one slide region:
patches that are horizontal neighbours on the grid form a strip, strips of the same
columns on consecutive grid rows form a block, and each block is read with one
``read_region`` call and sliced (fewer calls, every native tile decoded once); with the
tile-decode reader each patch is assembled from JPEG tiles decoded once per batch
(:func:`_fill_by_tiles`). Workers open their own slide handles through
:class:`~wsi_ncmi.slide.SlideRef` (cached per process, so persistent workers reuse them).
Images stay ``uint8`` until the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from wsi_ncmi.errors import CorruptTileError, WsiNcmiError
from wsi_ncmi.slide import Slide, SlideRef
from wsi_ncmi.slide.tiledecode import TileDecodeSlide

MAX_STRIP_PX = 4096  # widest strip read at once (read-level pixels)
MAX_BLOCK_PX = 4096 * 2048  # largest block read at once (read-level pixels, ~32 MB RGBA)


@dataclass(frozen=True)
class SlideJob:
    """One slide to extract: where to read, what to read, where to write.

    Attributes:
        slide_id: Id of the slide (the output file's stem).
        slide: Picklable reference to open the slide in any process.
        coords: ``(N, 2)`` int64 level-0 top-left ``(x, y)``, in output row order.
        read_level: Pyramid level to read from.
        read_size_px: Square side read at ``read_level``.
        patch_size_px: Side after resizing (``read_size_px`` when no resize).
        coords_path: The coords file the job came from.
        coords_hash: That file's ``params_hash``.
        target_mpp: The tiling's target µm/px.
        output: Final features file path.
        coords_sha256: Digest of ``coords`` (recorded in the features file).
        slide_identity: The scan the coords were made from, as HDF5 attributes
            (:class:`~wsi_ncmi.slide.identity.SlideIdentity`), recorded in the features file.
        gpu_decode: Send the tile-decode reader's JPEG tiles to the device undecoded
            (:mod:`~wsi_ncmi.features.gpu_decode`).
    """

    slide_id: str
    slide: SlideRef
    coords: np.ndarray
    read_level: int
    read_size_px: int
    patch_size_px: int
    coords_path: str
    coords_hash: str
    target_mpp: float
    output: Path
    coords_sha256: str = ""
    slide_identity: dict[str, Any] = field(default_factory=dict)
    gpu_decode: bool = False

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def reader(self) -> str:
        """The backend that reads this job's pixels (recorded in its features file)."""
        return f"{self.slide.backend}+nvjpeg" if self.gpu_decode else self.slide.backend


def plan_batches(jobs: list[SlideJob], batch_size: int) -> list[tuple[int, int, int]]:
    """``(job_index, start, stop)`` of every batch; batches never cross slides."""
    plan: list[tuple[int, int, int]] = []
    for index, job in enumerate(jobs):
        for start in range(0, len(job), batch_size):
            plan.append((index, start, min(start + batch_size, len(job))))
    return plan


def read_patch(slide: Slide, job: SlideJob, x: int, y: int) -> np.ndarray:
    """One patch as ``uint8 (P, P, 3)``, resized to ``patch_size_px`` if needed."""
    size = job.read_size_px
    image = slide.read_region((x, y), job.read_level, (size, size))
    return _resize(image, job.patch_size_px)


def _fill_by_tiles(
    slide: TileDecodeSlide,
    job: SlideJob,
    coords: np.ndarray,
    images: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Read each patch of a batch from decoded JPEG tiles (the tile-decode reader).

    A patch that is one whole tile is decoded straight into ``images``; tiles shared by
    several patches (an unaligned grid, or patches larger than a tile) come from the
    reader's cache, so each is decoded once per batch. Patches that need resizing are
    read at ``read_size_px`` and resized with :func:`_resize`, as the other readers' are.

    Args:
        slide: The open slide.
        job: Its job (read level and sizes).
        coords: ``(B, 2)`` level-0 ``(x, y)`` of the batch's patches.
        images: ``uint8 (B, P, P, 3)``, filled in place.
        valid: ``bool (B,)``, set False where a patch's tiles failed to decode.
    """
    size = job.read_size_px
    buffer = None if size == job.patch_size_px else np.empty((size, size, 3), np.uint8)
    for k, (x, y) in enumerate(coords):
        try:
            if buffer is None:
                slide.read_region_into((int(x), int(y)), job.read_level, images[k])
            else:
                slide.read_region_into((int(x), int(y)), job.read_level, buffer)
                images[k] = _resize(buffer, job.patch_size_px)
        except CorruptTileError:
            valid[k] = False


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    import cv2

    shrink = image.shape[0] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def strip_runs(coords: np.ndarray, step_level0: int | None, max_len: int) -> list[tuple[int, int]]:
    """Split rows into runs of horizontal neighbours ``(start, stop)``, in row order.

    Rows ``i`` and ``i + 1`` share a run when they have the same ``y`` and
    ``x[i + 1] - x[i] == step_level0`` exactly (neighbouring, non-overlapping patches).
    ``step_level0=None`` disables merging.
    """
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(coords) + 1):
        end_run = (
            i == len(coords)
            or step_level0 is None
            or i - start >= max_len
            or coords[i, 1] != coords[i - 1, 1]
            or coords[i, 0] - coords[i - 1, 0] != step_level0
        )
        if end_run:
            runs.append((start, i))
            start = i
    return runs


def region_blocks(
    runs: list[tuple[int, int]], coords: np.ndarray, step_level0: int | None, max_rows: int
) -> list[tuple[int, int, int]]:
    """Stack strips into rectangular blocks ``(start, stop, n_cols)``, in row order.

    Consecutive runs join a block when they have the same length and first ``x`` and
    each starts ``step_level0`` below the previous one, so a block's rows are
    ``start .. stop`` in row-major order (``n_cols`` per grid row), at most
    ``max_rows`` grid rows. ``step_level0=None`` keeps one block per run.
    """
    blocks: list[tuple[int, int, int]] = []
    for start, stop in runs:
        n = stop - start
        if blocks and step_level0 is not None:
            b_start, b_stop, n_cols = blocks[-1]
            last_row = b_stop - n_cols
            if (
                n == n_cols
                and b_stop == start
                and (b_stop - b_start) // n_cols < max_rows
                and coords[start, 0] == coords[b_start, 0]
                and coords[start, 1] - coords[last_row, 1] == step_level0
            ):
                blocks[-1] = (b_start, stop, n_cols)
                continue
        blocks.append((start, stop, n))
    return blocks


class PatchBatch(TypedDict):
    """One batch of patches of one slide (see :class:`PatchBatchDataset`)."""

    images: Tensor  #: ``(B, S, S, 3)`` uint8 (empty when ``jpegs`` carries the batch).
    valid: Tensor  #: ``(B,)`` bool: the patch was read.
    job: int  #: Index of the slide's job.
    start: int  #: First row of the batch in the slide's coords.
    error: str  #: The slide's error, if it could not be read.
    jpegs: NotRequired[list[bytes]]  #: ``--gpu_decode``: the covering JPEG tiles.
    placements: NotRequired[Any]  #: Where each tile lands in each patch.
    read_size: NotRequired[int]  #: Side of the region read per patch.
    patch_size: NotRequired[int]  #: Side of the patch written.


class PatchBatchDataset(Dataset[PatchBatch]):
    """Map-style dataset whose item ``i`` is the ``i``-th planned batch.

    Each item is a dict:
        ``images``: uint8 ``(B, P, P, 3)``; ``valid``: bool ``(B,)`` (False where the
        tile failed to decode, with a zero image); ``job``: int; ``start``: int;
        ``error``: ``""`` or the message of a slide-level failure (all rows invalid).

    Args:
        jobs: Slides of this rank.
        batch_size: Rows per batch.
        strip_reads: Read neighbouring patches as one strip or block (see the module
            docstring); off: one ``read_region`` call per patch.
    """

    def __init__(self, jobs: list[SlideJob], batch_size: int, *, strip_reads: bool = True) -> None:
        self.jobs = jobs
        self.plan = plan_batches(jobs, batch_size)
        self.strip_reads = strip_reads

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, index: int) -> PatchBatch:
        job_index, start, stop = self.plan[index]
        job = self.jobs[job_index]
        if job.gpu_decode:
            compressed = self._compressed(job_index, start, stop)
            if compressed is not None:
                return compressed
        p = job.patch_size_px
        images = np.empty((stop - start, p, p, 3), dtype=np.uint8)
        valid = np.ones(stop - start, dtype=bool)
        error = ""
        try:
            self._fill(job, start, stop, images, valid)
        except WsiNcmiError as err:  # the slide itself failed (open, metadata)
            valid[:] = False
            error = f"{type(err).__name__}: {err}"
        images[~valid] = 0
        return {
            "images": torch.from_numpy(images),
            "valid": torch.from_numpy(valid),
            "job": job_index,
            "start": start,
            "error": error,
        }

    def _compressed(self, job_index: int, start: int, stop: int) -> PatchBatch | None:
        """The batch as JPEG tiles for the device to decode, or None to decode here.

        Keys as in the class docstring, ``images`` empty, plus ``jpegs`` (list of bytes),
        ``placements`` ``(M, 8)``, ``read_size`` and ``patch_size``
        (:class:`~wsi_ncmi.features.gpu_decode.TileBatch`).
        """
        from wsi_ncmi.features.gpu_decode import read_tile_batch

        job = self.jobs[job_index]
        try:
            slide = job.slide.open()
            if not (isinstance(slide, TileDecodeSlide) and slide.decodes_level(job.read_level)):
                return None
            batch = read_tile_batch(slide, job.read_level, job.coords[start:stop], job.read_size_px)
        except (WsiNcmiError, OSError, ValueError):
            return None  # decoded here, where bad tiles and slide errors are reported
        return {
            "images": torch.empty(0, dtype=torch.uint8),
            "valid": torch.ones(stop - start, dtype=torch.bool),
            "job": job_index,
            "start": start,
            "error": "",
            "jpegs": batch.jpegs,
            "placements": batch.placements,
            "read_size": batch.read_size,
            "patch_size": job.patch_size_px,
        }

    def _fill(  # bad tiles are isolated here; only slide-level errors escape
        self, job: SlideJob, start: int, stop: int, images: np.ndarray, valid: np.ndarray
    ) -> None:
        slide = job.slide.open()
        coords = job.coords[start:stop]
        if isinstance(slide, TileDecodeSlide) and slide.decodes_level(job.read_level):
            _fill_by_tiles(slide, job, coords, images, valid)
            return
        step = self._strip_step(slide, job)
        max_len = max(1, MAX_STRIP_PX // job.read_size_px)
        size = job.read_size_px
        runs = strip_runs(coords, step, max_len)
        max_rows = max(1, MAX_BLOCK_PX // (size * size * max_len))
        for b_start, b_stop, n_cols in region_blocks(runs, coords, step, max_rows):
            n = b_stop - b_start
            if n > 1:
                x, y = (int(v) for v in coords[b_start])
                n_rows = n // n_cols
                try:
                    block = slide.read_region(
                        (x, y), job.read_level, (size * n_cols, size * n_rows)
                    )
                except CorruptTileError:
                    pass  # fall back to single patches to isolate the bad tile(s)
                else:
                    for k in range(n):
                        r, c = divmod(k, n_cols)
                        tile = block[r * size : (r + 1) * size, c * size : (c + 1) * size]
                        images[b_start + k] = _resize(tile, job.patch_size_px)
                    continue
            for row in range(b_start, b_stop):
                rx, ry = (int(v) for v in coords[row])
                try:
                    images[row] = read_patch(slide, job, rx, ry)
                except CorruptTileError:
                    valid[row] = False

    def _strip_step(self, slide: Slide, job: SlideJob) -> int | None:
        """Level-0 step between neighbouring patches that may share a strip read."""
        if not self.strip_reads:
            return None
        downsample = slide.level_downsamples[job.read_level]
        if abs(downsample - round(downsample)) > 1e-9:
            return None  # non-integer downsample: strip and patch pixels could differ
        return job.read_size_px * round(downsample)
