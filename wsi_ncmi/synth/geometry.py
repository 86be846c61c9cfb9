"""Polygon helpers in level-0 pixel coordinates (pure numpy).

Vertices are snapped to a 1/16-pixel grid (:data:`SUBPIXEL_SHIFT`), which is exactly what
OpenCV rasterises with ``shift=4``; the ground-truth polygons and the drawn image therefore
agree to the pixel.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

#: Fractional bits of the fixed-point coordinates given to ``cv2.fillPoly``.
SUBPIXEL_SHIFT = 4
_SUBPIXEL = float(1 << SUBPIXEL_SHIFT)


def snap(points: FloatArray) -> FloatArray:
    """Round coordinates to the 1/16-pixel grid used for rasterisation.

    Args:
        points: ``(..., 2)`` array of ``(x, y)``.

    Returns:
        The snapped coordinates (float64).
    """
    return np.round(np.asarray(points, dtype=np.float64) * _SUBPIXEL) / _SUBPIXEL


def to_fixed(points: FloatArray, offset: tuple[float, float] = (0.0, 0.0)) -> NDArray[np.int32]:
    """Convert ``(x, y)`` pixel coordinates to OpenCV fixed point (``shift=SUBPIXEL_SHIFT``).

    Args:
        points: ``(..., 2)`` array of ``(x, y)``.
        offset: Subtracted from the points first (the origin of the raster).

    Returns:
        int32 array of the same shape.
    """
    shifted = np.asarray(points, dtype=np.float64) - np.asarray(offset, dtype=np.float64)
    return np.round(shifted * _SUBPIXEL).astype(np.int32)


def blob_polygon(
    rng: np.random.Generator,
    center: tuple[float, float],
    radius: tuple[float, float],
    *,
    angle: float = 0.0,
    roughness: float = 0.15,
    n_vertices: int = 96,
) -> FloatArray:
    """Draw an irregular, star-shaped blob: an ellipse with random low-frequency wobble.

    Args:
        rng: Random generator.
        center: ``(x, y)`` of the blob.
        radius: Semi-axes ``(rx, ry)`` before the wobble.
        angle: Rotation in radians.
        roughness: Relative amplitude of the radial wobble.
        n_vertices: Number of vertices.

    Returns:
        ``(n_vertices, 2)`` float64 polygon (not snapped).
    """
    theta = np.linspace(0.0, 2.0 * np.pi, n_vertices, endpoint=False)
    wobble = np.zeros_like(theta)
    for harmonic in range(2, 9):
        amplitude = roughness * rng.normal() / harmonic**1.2
        wobble += amplitude * np.cos(harmonic * theta + rng.uniform(0.0, 2.0 * np.pi))
    scale = np.clip(1.0 + wobble, 0.4, 1.8)
    x = radius[0] * scale * np.cos(theta)
    y = radius[1] * scale * np.sin(theta)
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + cos_a * x - sin_a * y, center[1] + sin_a * x + cos_a * y], axis=1)


def largest_diameter(polygon: FloatArray) -> float:
    """Largest distance between two vertices (maximum Feret diameter) of a polygon.

    Args:
        polygon: ``(N, 2)`` vertices.

    Returns:
        The diameter, in the units of the coordinates.
    """
    pts = np.asarray(polygon, dtype=np.float64)
    diff = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((diff**2).sum(axis=-1).max()))


def points_in_polygon(points: FloatArray, polygon: FloatArray) -> NDArray[np.bool_]:
    """Even–odd ray-casting test of many points against one polygon.

    Args:
        points: ``(M, 2)`` query points.
        polygon: ``(N, 2)`` vertices.

    Returns:
        ``(M,)`` boolean array, True inside.
    """
    px = np.asarray(points, dtype=np.float64)[:, 0:1]
    py = np.asarray(points, dtype=np.float64)[:, 1:2]
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > py) != (y1 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
    inside: NDArray[np.bool_] = (np.count_nonzero(crosses & (px < x_cross), axis=1) % 2) == 1
    return inside
