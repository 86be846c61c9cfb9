"""Rasterisation helpers shared by the tissue and tumour painters (level-0 pixel bands)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.synth.geometry import SUBPIXEL_SHIFT, to_fixed

FloatArray = NDArray[np.float32]
Polygon = NDArray[np.float64]


def as_float32(array: Any) -> FloatArray:
    """View an OpenCV result as a float32 numpy array (no copy when already float32)."""
    return np.asarray(array, dtype=np.float32)


def fill_polygons(
    shape: tuple[int, int],
    polygons: list[Polygon] | tuple[Polygon, ...],
    y0: int,
    value: int = 1,
) -> NDArray[np.uint8]:
    """Rasterise polygons into a band starting at level-0 row ``y0``.

    Args:
        shape: ``(rows, cols)`` of the band.
        polygons: Level-0 polygons.
        y0: Level-0 row of the band's first row.
        value: Value written inside.

    Returns:
        uint8 mask.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    visible = [p for p in polygons if p[:, 1].max() >= y0 and p[:, 1].min() < y0 + shape[0]]
    if visible:
        cv2.fillPoly(
            mask,
            [to_fixed(p, (0.0, y0)) for p in visible],
            value,
            lineType=cv2.LINE_8,
            shift=SUBPIXEL_SHIFT,
        )
    return mask


def nuclei_field(
    points: NDArray[np.float64], y0: int, shape: tuple[int, int], radius_px: float
) -> FloatArray:
    """Soft nucleus masks (0–1 scaled by amplitude) of round nuclei centred on ``points``.

    Args:
        points: ``(N, 3)`` rows ``(x, y, amplitude)`` sorted by y.
        y0: Level-0 row of the band's first row.
        shape: ``(rows, cols)`` of the band.
        radius_px: Nucleus radius in pixels.

    Returns:
        float32 ``(rows, cols)``.
    """
    rows, cols = shape
    sigma = max(radius_px / 2.2, 0.5)
    margin = math.ceil(3.5 * sigma) + 1
    first, last = np.searchsorted(points[:, 1], [y0 - margin, y0 + rows + margin])
    sel = points[first:last]
    iy = np.round(sel[:, 1]).astype(np.int64) - (y0 - margin)
    ix = np.clip(np.round(sel[:, 0]).astype(np.int64), 0, cols - 1)
    ok = (iy >= 0) & (iy < rows + 2 * margin)
    weights = sel[ok, 2] * 2.0 * math.pi * sigma**2
    flat = np.bincount(
        iy[ok] * cols + ix[ok], weights=weights, minlength=(rows + 2 * margin) * cols
    )
    canvas = flat.astype(np.float32).reshape(rows + 2 * margin, cols)
    canvas = as_float32(cv2.GaussianBlur(canvas, (0, 0), sigma))[margin : margin + rows]
    # Soft threshold: the 0.09 iso-line of a unit Gaussian (2.2 sigma) is the nucleus edge,
    # so neighbours a nucleus diameter apart stay separate.
    canvas -= 0.06
    canvas *= 1.0 / 0.07
    return np.clip(canvas, 0.0, 1.0, out=canvas)
