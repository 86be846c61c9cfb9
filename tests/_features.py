"""Helpers for the feature-extraction tests: tiny slides with coords files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.tiling.schema import params_hash, write_coords


def coords_attrs(slide_path: Path, slide_id: str, **overrides: Any) -> dict[str, Any]:
    """Attributes of a wsi-ncmi coords file for a 0.5 µm/px generated slide."""
    attrs: dict[str, Any] = {
        "package_version": "test",
        "slide_id": slide_id,
        "slide_path": str(slide_path),
        "slide_width": 0,
        "slide_height": 0,
        "backend": "tiffslide",
        "vendor": "generic-tiff",
        "mpp_x": 0.5,
        "mpp_y": 0.5,
        "mpp_source": "tiff",
        "target_mpp": 0.5,
        "patch_size_px": 64,
        "patch_size_level0": 64.0,
        "read_level": 0,
        "read_downsample": 1.0,
        "read_size_px": 64,
        "resize_factor": 1.0,
        "overlap_px": 0,
        "stride_level0": 64,
        "min_tissue": 0.5,
        "segmentation": {"method": "test"},
        "status": "ok",
    }
    attrs.update(overrides)
    attrs.setdefault(
        "params_hash", params_hash({k: attrs[k] for k in ("target_mpp", "patch_size_px")})
    )
    return attrs


def grid(width: int, height: int, step: int, skip_every: int = 0) -> np.ndarray:
    """Row-major level-0 grid; ``skip_every`` drops every k-th patch (gaps in runs)."""
    xs, ys = np.meshgrid(
        np.arange(0, width - step + 1, step), np.arange(0, height - step + 1, step)
    )
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    if skip_every:
        coords = coords[np.arange(len(coords)) % skip_every != skip_every - 1]
    return coords


def make_cohort(
    root: Path, n_slides: int = 3, width: int = 448, height: int = 320, **attr_overrides: Any
) -> tuple[Path, list[Path]]:
    """``n_slides`` slides under ``root/slides`` and their coords under ``root/coords``."""
    (root / "slides").mkdir(parents=True, exist_ok=True)
    coords_dir = root / "coords"
    coords_dir.mkdir(parents=True, exist_ok=True)
    slides = []
    for i in range(n_slides):
        path = write_pyramid_tiff(
            root / "slides" / f"slide{i}.tif", tissue_image(width, height, seed=i), tile=64
        )
        slides.append(path)
        attrs = coords_attrs(path, f"slide{i}", **attr_overrides)
        step = int(attrs["patch_size_level0"])
        coords = grid(width, height, step, skip_every=5 if i == 1 else 0)
        write_coords(coords_dir / f"slide{i}.h5", coords, np.ones(len(coords)), attrs)
    return coords_dir, slides
