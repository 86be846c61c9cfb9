"""Smooth random fields that render identically whichever strip of the slide is drawn.

A field is a small random grid (one value per ``cell_px`` × ``cell_px`` block of level-0
pixels) that is bilinearly interpolated on demand for any band of rows. Because the
interpolation of a row depends only on the grid, strips rendered separately join without
seams, which lets the ``full`` preset stream huge slides strip by strip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]


def cell_size_px(cell_um: float, mpp: float) -> int:
    """Power-of-two grid cell (in pixels) closest to ``cell_um`` micrometres.

    Args:
        cell_um: Wanted correlation length in µm.
        mpp: Level-0 µm/px.

    Returns:
        Cell edge in pixels, at least 1.
    """
    return int(2 ** max(0, round(math.log2(max(cell_um / mpp, 1.0)))))


@dataclass(frozen=True)
class SmoothField:
    """A random field stored as a coarse grid, sampled bilinearly at level-0 pixels.

    Attributes:
        grid: ``(rows, cols)`` float32 values at cell centres.
        cell_px: Level-0 pixels per grid cell.
    """

    grid: FloatArray
    cell_px: int

    def rows(self, y0: int, y1: int, width: int) -> FloatArray:
        """Evaluate the field on level-0 rows ``[y0, y1)`` and columns ``[0, width)``.

        Args:
            y0: First row.
            y1: One past the last row.
            width: Number of columns.

        Returns:
            ``(y1 - y0, width)`` float32 array.
        """
        n_rows, n_cols = self.grid.shape
        ys = (np.arange(y0, y1, dtype=np.float64) + 0.5) / self.cell_px - 0.5
        ys = np.clip(ys, 0.0, n_rows - 1.0)
        i0 = np.floor(ys).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_rows - 1)
        frac = (ys - i0).astype(np.float32)[:, None]
        band = self.grid[i0] * (1.0 - frac) + self.grid[i1] * frac
        wide = cv2.resize(band, (n_cols * self.cell_px, y1 - y0), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(wide[:, :width])

    def sample(self, points: NDArray[np.float64]) -> FloatArray:
        """Evaluate the field at arbitrary level-0 points (bilinear).

        Args:
            points: ``(N, 2)`` array of ``(x, y)``.

        Returns:
            ``(N,)`` float32 values.
        """
        n_rows, n_cols = self.grid.shape
        gx = np.clip(points[:, 0] / self.cell_px - 0.5, 0.0, n_cols - 1.0)
        gy = np.clip(points[:, 1] / self.cell_px - 0.5, 0.0, n_rows - 1.0)
        x0 = np.floor(gx).astype(np.int64)
        y0 = np.floor(gy).astype(np.int64)
        x1 = np.minimum(x0 + 1, n_cols - 1)
        y1 = np.minimum(y0 + 1, n_rows - 1)
        fx = gx - x0
        fy = gy - y0
        top = self.grid[y0, x0] * (1 - fx) + self.grid[y0, x1] * fx
        bottom = self.grid[y1, x0] * (1 - fx) + self.grid[y1, x1] * fx
        return (top * (1 - fy) + bottom * fy).astype(np.float32)


def random_field(
    rng: np.random.Generator,
    size_px: tuple[int, int],
    cell_px: int,
    *,
    smooth_cells: float = 1.5,
    anisotropy: float = 1.0,
) -> SmoothField:
    """Make a zero-mean, unit-variance smooth random field over a slide.

    Args:
        rng: Random generator.
        size_px: ``(width, height)`` of the slide at level 0.
        cell_px: Grid cell in level-0 pixels.
        smooth_cells: Gaussian smoothing of the grid, in cells.
        anisotropy: Ratio of smoothing along x to along y (> 1 gives horizontal streaks).

    Returns:
        The field.
    """
    cols = size_px[0] // cell_px + 2
    rows = size_px[1] // cell_px + 2
    grid = rng.standard_normal((rows, cols)).astype(np.float32)
    grid = np.asarray(
        cv2.GaussianBlur(
            grid,
            (0, 0),
            sigmaX=smooth_cells * anisotropy,
            sigmaY=smooth_cells,
            borderType=cv2.BORDER_REFLECT,
        ),
        dtype=np.float32,
    )
    grid -= grid.mean()
    grid /= max(float(grid.std()), 1e-6)
    return SmoothField(grid=grid, cell_px=cell_px)
