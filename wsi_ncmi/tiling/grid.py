"""The patch grid at an exact physical resolution, and vectorised tissue fractions.

Geometry: a patch is ``patch_size_px`` pixels at ``target_mpp`` µm/px, i.e.
``patch_size_px * target_mpp / slide_mpp`` level-0 pixels (a float). It is read from the
coarsest pyramid level at or finer than the target as ``read_size_px`` pixels of that
level, then resized by the exact factor ``patch_size_px / read_size_px``.

Alignment: the grid is anchored at the slide's level-0 origin; patch ``(i, j)`` starts at
``(round(i * stride), round(j * stride))`` level-0 pixels, so the same slide and
parameters always give the same coordinates, whatever the mask. Every patch starts
inside the slide; the last column and row may reach past the right/bottom edge (that part
is background for the tissue fraction and reads as white).

Tissue fraction: the exact area of the mask (pixels as unit squares) under each patch
rectangle, from the mask's integral image with bilinear interpolation at fractional
corners. One vectorised pass over the grid, no per-patch Python loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.jsontypes import JSONObject


@dataclass(frozen=True)
class GridParams:
    """What the user asks for.

    Attributes:
        target_mpp: Resolution of the patches in µm/px (0.5 ≈ 20×).
        patch_size_px: Patch width and height in pixels at ``target_mpp``.
        overlap_px: Overlap between neighbouring patches, pixels at ``target_mpp``.
        min_tissue: Minimum fraction (0–1) of the patch area inside the tissue mask.
    """

    target_mpp: float = 0.5
    patch_size_px: int = 256
    overlap_px: int = 0
    min_tissue: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_mpp) and self.target_mpp > 0):
            raise ConfigError(f"target_mpp must be a positive µm/px, got {self.target_mpp!r}")
        if int(self.patch_size_px) != self.patch_size_px or self.patch_size_px < 1:
            raise ConfigError(
                f"patch_size_px must be a positive integer, got {self.patch_size_px!r}"
            )
        if not 0 <= self.overlap_px < self.patch_size_px:
            raise ConfigError(
                f"overlap_px must be in [0, patch_size_px={self.patch_size_px}), "
                f"got {self.overlap_px!r}"
            )
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"min_tissue must be a fraction in [0, 1], got {self.min_tissue!r}")

    def to_dict(self) -> JSONObject:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class PatchGeometry:
    """How one patch maps to level 0 and to the pyramid level it is read from.

    Attributes:
        patch_size_level0: Level-0 pixels covered by one patch (float).
        stride_level0: Level-0 distance between neighbouring patches (float).
        read_level: Pyramid level to read.
        read_downsample: That level's downsample.
        read_size_px: Pixels to read at ``read_level`` (square).
        resize_factor: ``patch_size_px / read_size_px`` (< 1 shrinks; > 1 means the slide
            is coarser than the target and patches are upsampled).
        effective_mpp: µm/px actually delivered (differs from the target only by the
            rounding of ``read_size_px``).
    """

    patch_size_level0: float
    stride_level0: float
    read_level: int
    read_downsample: float
    read_size_px: int
    resize_factor: float
    effective_mpp: float

    @property
    def read_extent_level0(self) -> float:
        """Level-0 pixels covered by the region that is actually read."""
        return self.read_size_px * self.read_downsample


def plan_geometry(
    params: GridParams, slide_mpp: float, read_level: int, read_downsample: float
) -> PatchGeometry:
    """Patch geometry for a slide (pure).

    Args:
        params: Grid parameters.
        slide_mpp: Level-0 µm/px.
        read_level: Level chosen by ``Slide.best_level_for_mpp(params.target_mpp)``.
        read_downsample: Downsample of ``read_level``.
    """
    scale = params.target_mpp / slide_mpp  # level-0 px per target px
    size0 = params.patch_size_px * scale
    stride0 = (params.patch_size_px - params.overlap_px) * scale
    read_px = max(1, round(size0 / read_downsample))
    level_mpp = slide_mpp * read_downsample
    return PatchGeometry(
        patch_size_level0=size0,
        stride_level0=stride0,
        read_level=read_level,
        read_downsample=read_downsample,
        read_size_px=read_px,
        resize_factor=params.patch_size_px / read_px,
        effective_mpp=level_mpp * read_px / params.patch_size_px,
    )


def grid_axes(dims0: tuple[int, int], geometry: PatchGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 x and y of every grid column and row starting inside the slide.

    The last column and row may extend past the right/bottom edge; that part counts as
    background in the tissue fraction and reads as white.
    """

    def axis(length: int) -> np.ndarray:
        n = max(0, math.ceil(length / geometry.stride_level0 - 1e-9))
        pos = np.round(np.arange(n) * geometry.stride_level0).astype(np.int64)
        return pos[pos < length]

    return axis(dims0[0]), axis(dims0[1])


def _integral_at(
    integral: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:  # (len(ys), len(xs))
    """Exact area integral of the mask over ``[0, x] × [0, y]`` at real-valued x, y."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    xs = np.clip(xs, 0, w)
    ys = np.clip(ys, 0, h)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 1)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 1)
    ax = (xs - x0)[None, :]
    ay = (ys - y0)[:, None]
    s00 = integral[np.ix_(y0, x0)]
    s01 = integral[np.ix_(y0, x0 + 1)]
    s10 = integral[np.ix_(y0 + 1, x0)]
    s11 = integral[np.ix_(y0 + 1, x0 + 1)]
    return (1 - ay) * ((1 - ax) * s00 + ax * s01) + ay * ((1 - ax) * s10 + ax * s11)


def tissue_fractions(
    mask: np.ndarray,
    scale: tuple[float, float],
    xs: np.ndarray,
    ys: np.ndarray,
    patch_size_level0: float,
) -> np.ndarray:
    """Fraction of each grid patch inside the mask.

    Args:
        mask: ``(H, W)`` 0/1 mask.
        scale: Level-0 pixels per mask pixel ``(sx, sy)``.
        xs: Level-0 x of the grid columns.
        ys: Level-0 y of the grid rows.
        patch_size_level0: Patch side in level-0 pixels.

    Returns:
        ``(len(ys), len(xs))`` float64 array in [0, 1].
    """
    import cv2

    if xs.size == 0 or ys.size == 0:
        return np.zeros((ys.size, xs.size))
    integral = cv2.integral(mask.astype(np.uint8), sdepth=cv2.CV_64F)
    sx, sy = scale
    mx0, mx1 = xs / sx, (xs + patch_size_level0) / sx
    my0, my1 = ys / sy, (ys + patch_size_level0) / sy
    area = (patch_size_level0 / sx) * (patch_size_level0 / sy)
    total = (
        _integral_at(integral, my1, mx1)
        - _integral_at(integral, my0, mx1)
        - _integral_at(integral, my1, mx0)
        + _integral_at(integral, my0, mx0)
    )
    return np.clip(total / area, 0.0, 1.0)


@dataclass(frozen=True)
class PatchGrid:
    """The kept patches.

    Attributes:
        coords: ``(N, 2)`` int64 level-0 top-left ``(x, y)``, row-major order.
        tissue_fraction: ``(N,)`` float32.
        xs: Level-0 x of every grid column (kept or not).
        ys: Level-0 y of every grid row.
        kept: ``(len(ys), len(xs))`` bool.
    """

    coords: np.ndarray
    tissue_fraction: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    kept: np.ndarray


def build_grid(
    mask: np.ndarray,
    scale: tuple[float, float],
    dims0: tuple[int, int],
    geometry: PatchGeometry,
    min_tissue: float,
) -> PatchGrid:
    """Grid patches whose tissue fraction is at least ``min_tissue`` (and above zero)."""
    xs, ys = grid_axes(dims0, geometry)
    frac = tissue_fractions(mask, scale, xs, ys, geometry.patch_size_level0)
    kept = (frac >= min_tissue) & (frac > 0)
    rows, cols = np.nonzero(kept)
    coords = np.stack([xs[cols], ys[rows]], axis=1).astype(np.int64).reshape(-1, 2)
    return PatchGrid(coords, frac[rows, cols].astype(np.float32), xs, ys, kept)
