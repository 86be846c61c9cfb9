"""User-drawn tissue masks (a PNG, or a GeoJSON of polygons from QuPath), rasterised.

``wsi-tile --mask_dir`` uses these instead of :func:`~wsi_ncmi.tiling.tissue.detect_tissue`
for the slides that have one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.tiling.tissue import TissueMask


def load_user_mask(path: str | Path, shape: tuple[int, int], dims0: tuple[int, int]) -> TissueMask:
    """Rasterise a user mask at mask resolution.

    Args:
        path: A PNG (non-zero = tissue, any size with the slide's aspect ratio) or a
            GeoJSON of polygons in level-0 pixels (QuPath export).
        shape: ``(H, W)`` of the mask.
        dims0: Level-0 ``(width, height)``.

    Raises:
        ConfigError: Unreadable file, wrong aspect ratio, or no polygons.
    """
    import cv2

    path = Path(path)
    h, w = shape
    if path.suffix.lower() in (".geojson", ".json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read GeoJSON mask {str(path)!r}: {err}") from err
        mask = np.zeros((h, w), np.uint8)
        scale = np.array([w / dims0[0], h / dims0[1]])
        polygons = list(_iter_polygons(data))
        if not polygons:
            raise ConfigError(f"GeoJSON mask {str(path)!r} has no Polygon/MultiPolygon")
        for rings in polygons:
            pts = [np.round(np.asarray(r, float)[:, :2] * scale).astype(np.int32) for r in rings]
            cv2.fillPoly(mask, pts[:1], 1)
            if len(pts) > 1:
                cv2.fillPoly(mask, pts[1:], 0)
        return TissueMask(mask, np.zeros((h, w), bool), None, "user-geojson")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ConfigError(f"cannot read mask image {str(path)!r} (expected PNG/TIFF/JPEG)")
    ratio_img, ratio_slide = img.shape[1] / img.shape[0], dims0[0] / dims0[1]
    if abs(ratio_img / ratio_slide - 1) > 0.02:
        raise ConfigError(
            f"mask image {str(path)!r} is {img.shape[1]}x{img.shape[0]} px, whose aspect "
            f"ratio differs from the slide's {dims0[0]}x{dims0[1]} by more than 2%"
        )
    resized = cv2.resize((img > 0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return TissueMask(np.asarray(resized), np.zeros((h, w), bool), None, "user-png")


def _iter_polygons(data: Any) -> Iterator[Any]:
    """Yield each polygon's rings from a GeoJSON object."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        for feature in data.get("features", []):
            yield from _iter_polygons(feature)
    elif kind == "Feature":
        yield from _iter_polygons(data.get("geometry") or {})
    elif kind == "GeometryCollection":
        for geom in data.get("geometries", []):
            yield from _iter_polygons(geom)
    elif kind == "Polygon":
        yield data["coordinates"]
    elif kind == "MultiPolygon":
        yield from data["coordinates"]
    elif isinstance(data, list):
        for item in data:
            yield from _iter_polygons(item)


__all__ = ["load_user_mask"]
