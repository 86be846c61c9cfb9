"""Review outputs of a tiled slide: overlay thumbnail (PNG) and tissue polygons (GeoJSON).

Both are pure functions of arrays; the job writes them to disk atomically.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from wsi_ncmi.jsontypes import JSONObject, JSONValue
from wsi_ncmi.tiling.grid import PatchGrid

CONTOUR_RGB = (0, 200, 0)
GRID_RGB = (255, 140, 0)
ARTIFACT_RGB = (40, 80, 255)


def tissue_polygons(mask: np.ndarray, scale: tuple[float, float]) -> list[list[np.ndarray]]:
    """Polygons (outer ring, then holes) of the mask in level-0 pixel coordinates.

    Args:
        mask: ``(H, W)`` 0/1 mask.
        scale: Level-0 pixels per mask pixel ``(sx, sy)``.

    Returns:
        One list of rings per tissue piece; each ring is a closed ``(K, 2)`` float array.
    """
    import cv2

    contours, hierarchy = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE
    )
    if hierarchy is None:
        return []
    hier = hierarchy[0]
    factor = np.array(scale, float)

    def ring(index: int) -> np.ndarray | None:
        pts = contours[index].reshape(-1, 2).astype(float)
        if len(pts) < 3:
            return None
        # Pixel centres to pixel-corner coordinates, then to level 0; close the ring.
        pts = (pts + 0.5) * factor
        return np.vstack([pts, pts[:1]])

    polygons: list[list[np.ndarray]] = []
    for i, (_, _, child, parent) in enumerate(hier):
        if parent != -1:
            continue
        outer = ring(i)
        if outer is None:
            continue
        rings = [outer]
        while child != -1:
            hole = ring(child)
            if hole is not None:
                rings.append(hole)
            child = hier[child][0]
        polygons.append(rings)
    return polygons


def polygons_geojson(polygons: list[list[np.ndarray]], slide_id: str) -> JSONObject:
    """A GeoJSON FeatureCollection that QuPath imports as ``Tissue`` annotations."""
    features: list[JSONValue] = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [np.round(r, 1).tolist() for r in rings],
            },
            "properties": {
                "objectType": "annotation",
                "name": f"{slide_id} tissue {k}",
                "classification": {"name": "Tissue", "color": list(CONTOUR_RGB)},
            },
        }
        for k, rings in enumerate(polygons)
    ]
    return {"type": "FeatureCollection", "features": features}


def dumps_geojson(data: dict[str, Any]) -> str:
    """Compact JSON text (one line per feature)."""
    body = ",\n".join(json.dumps(f, separators=(",", ":")) for f in data["features"])
    return '{"type":"FeatureCollection","features":[\n' + body + "\n]}\n"


def overlay_thumbnail(
    rgb: np.ndarray,
    mask: np.ndarray,
    artifacts: np.ndarray,
    grid: PatchGrid | None,
    stride_level0: float,
    dims0: tuple[int, int],
    max_size: int = 1024,
    note: str = "",
) -> np.ndarray:
    """Thumbnail with the kept patch grid, the mask contour and rejected artifacts.

    Args:
        rgb: Mask-resolution RGB image of the whole slide.
        mask: Tissue mask of the same size.
        artifacts: Rejected pen/black pixels of the same size.
        grid: Kept patches (None: none drawn).
        stride_level0: Grid pitch in level-0 pixels.
        dims0: Level-0 ``(width, height)``.
        max_size: Longest side of the thumbnail in pixels.
        note: Text written in the top-left corner (e.g. ``no tissue``).

    Returns:
        ``(h, w, 3)`` uint8 RGB image.
    """
    import cv2

    h, w = rgb.shape[:2]
    s = min(1.0, max_size / max(h, w))
    tw, th = max(1, round(w * s)), max(1, round(h * s))
    thumb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA) if s < 1 else rgb.copy()
    small_mask = cv2.resize(mask, (tw, th), interpolation=cv2.INTER_NEAREST)
    small_art = cv2.resize(artifacts.astype(np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST)
    if small_art.any():
        sel = small_art.astype(bool)
        thumb[sel] = (0.5 * thumb[sel] + 0.5 * np.array(ARTIFACT_RGB)).astype(np.uint8)
    if grid is not None and grid.kept.any():
        _draw_grid(thumb, grid, stride_level0, dims0)
    contours, _ = cv2.findContours(small_mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(thumb, contours, -1, CONTOUR_RGB, max(1, round(max(tw, th) / 500)))
    if note:
        cv2.putText(thumb, note, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (200, 0, 0), 2)
    return thumb


def _draw_grid(
    thumb: np.ndarray, grid: PatchGrid, stride_level0: float, dims0: tuple[int, int]
) -> None:
    """Tint kept grid cells and outline them (vectorised over pixels, not patches)."""
    th, tw = thumb.shape[:2]
    x0 = (np.arange(tw) + 0.5) * dims0[0] / tw  # level-0 x of each thumbnail column
    y0 = (np.arange(th) + 0.5) * dims0[1] / th
    first_x = grid.xs[0] if grid.xs.size else 0
    first_y = grid.ys[0] if grid.ys.size else 0
    col = np.floor((x0 - first_x) / stride_level0).astype(np.int64)
    row = np.floor((y0 - first_y) / stride_level0).astype(np.int64)
    col_ok = (col >= 0) & (col < grid.kept.shape[1])
    row_ok = (row >= 0) & (row < grid.kept.shape[0])
    kept = np.zeros((th, tw), bool)
    kept[np.ix_(row_ok, col_ok)] = grid.kept[np.ix_(row[row_ok], col[col_ok])]
    edge_x = np.r_[True, col[1:] != col[:-1]]
    edge_y = np.r_[True, row[1:] != row[:-1]]
    cell_px = stride_level0 * tw / dims0[0]
    import cv2

    tinted = cv2.addWeighted(thumb, 0.8, np.full_like(thumb, GRID_RGB), 0.2, 0.0)
    np.copyto(thumb, tinted, where=kept[..., None])
    if cell_px >= 4:
        lines = kept & (edge_y[:, None] | edge_x[None, :])
        np.copyto(thumb, np.array(GRID_RGB, np.uint8), where=lines[..., None])
