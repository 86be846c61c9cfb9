"""Tile one slide: mask, grid, coords HDF5, overlay PNG and tissue GeoJSON.

Outputs under ``out_dir`` (see :func:`output_paths`), each written atomically:

* ``coords/<slide_id>.h5``: the coordinates (schema in :mod:`wsi_ncmi.tiling.schema`),
  written **last**, so its presence with the expected ``params_hash`` marks the slide done;
* ``thumbnails/<slide_id>.png``: mask contour (green), kept patch grid (orange), rejected
  pen/black artifacts (blue);
* ``geojson/<slide_id>.geojson``: tissue polygons in level-0 pixels (QuPath: File ›
  Import objects).

Parameter hash: :func:`slide_params_hash` digests everything that changes the
coordinates (grid and segmentation parameters, the µm/px override that applies to this
slide, the user mask's content and :data:`TILER_VERSION`). When the existing file has
another hash, the slide is tiled again and the file replaced; nothing is reused silently.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsi_ncmi.batch.atomic import atomic_output, write_text_atomic
from wsi_ncmi.batch.report import ItemResult
from wsi_ncmi.tiling.grid import GridParams
from wsi_ncmi.tiling.schema import params_hash
from wsi_ncmi.tiling.tissue import TissueParams

#: Bump when a change to the algorithm changes coordinates for the same parameters.
TILER_VERSION = 1
MASK_SUFFIXES = (".geojson", ".json", ".png", ".tif", ".tiff")


@dataclass(frozen=True)
class SlideTask:
    """One slide to tile (picklable).

    Attributes:
        slide_id: Output name (file stem or manifest id).
        path: Slide file.
    """

    slide_id: str
    path: str


@dataclass(frozen=True)
class TilingConfig:
    """Everything a tiling job needs besides the slide.

    Attributes:
        out_dir: Output root.
        grid: Patch grid parameters.
        tissue: Segmentation parameters.
        backend: ``auto``, ``openslide`` or ``tiffslide``.
        mpp_override: µm/px for every slide (overrides metadata).
        mpp_table: Per-slide µm/px (from ``--mpp-csv``), keyed by name, stem or path.
        mask_dir: Folder of user masks ``<slide_id>.{geojson,png}`` replacing segmentation.
        thumb_size_px: Longest side of the overlay thumbnail.
    """

    out_dir: str
    grid: GridParams = field(default_factory=GridParams)
    tissue: TissueParams = field(default_factory=TissueParams)
    backend: str = "auto"
    mpp_override: float | None = None
    mpp_table: dict[str, float] | None = None
    mask_dir: str | None = None
    thumb_size_px: int = 1024


@dataclass(frozen=True)
class OutputPaths:
    """Where a slide's outputs go."""

    coords: Path
    thumbnail: Path
    geojson: Path

    def all(self) -> tuple[Path, ...]:
        """Every output, the completion marker (coords) last."""
        return (self.geojson, self.thumbnail, self.coords)


def output_paths(out_dir: str | Path, slide_id: str) -> OutputPaths:
    """Output paths of ``slide_id`` under ``out_dir``."""
    root = Path(out_dir)
    return OutputPaths(
        coords=root / "coords" / f"{slide_id}.h5",
        thumbnail=root / "thumbnails" / f"{slide_id}.png",
        geojson=root / "geojson" / f"{slide_id}.geojson",
    )


def find_user_mask(mask_dir: str | Path | None, slide_id: str) -> Path | None:
    """``<mask_dir>/<slide_id><suffix>`` for the first existing suffix, else None."""
    if mask_dir is None:
        return None
    for suffix in MASK_SUFFIXES:
        candidate = Path(mask_dir) / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def slide_mpp_override(config: TilingConfig, task: SlideTask) -> float | None:
    """The µm/px override that applies to this slide (``--mpp`` wins over the CSV)."""
    if config.mpp_override is not None:
        return config.mpp_override
    if config.mpp_table:
        from wsi_ncmi.slide.mpp import lookup_mpp_override

        return lookup_mpp_override(task.path, config.mpp_table)
    return None


def slide_params(config: TilingConfig, task: SlideTask) -> dict[str, Any]:
    """Every parameter that changes this slide's coordinates (input of the hash)."""
    user_mask = find_user_mask(config.mask_dir, task.slide_id)
    mask_digest = hashlib.sha256(user_mask.read_bytes()).hexdigest()[:16] if user_mask else None
    return {
        "tiler_version": TILER_VERSION,
        "grid": config.grid.to_dict(),
        "segmentation": config.tissue.to_dict(),
        "mpp_override": slide_mpp_override(config, task),
        "user_mask_sha256": mask_digest,
    }


def slide_params_hash(config: TilingConfig, task: SlideTask) -> str:
    """The ``params_hash`` a complete output of this slide must carry."""
    return params_hash(slide_params(config, task))


def read_status(path: Path) -> tuple[str, str] | None:
    """``(params_hash, status)`` of a coords file, or None if unreadable/incomplete."""
    import h5py

    from wsi_ncmi.tiling.schema import COORDS_SCHEMA, COORDS_SCHEMA_VERSION, REQUIRED_ATTRS

    try:
        with h5py.File(path, "r") as h5:
            attrs = h5.attrs
            if attrs.get("schema") != COORDS_SCHEMA:
                return None
            if attrs.get("schema_version") != COORDS_SCHEMA_VERSION:
                return None
            if any(k not in attrs for k in REQUIRED_ATTRS) or "coords" not in h5:
                return None
            if h5["coords"].shape[0] != h5["tissue_fraction"].shape[0]:
                return None
            return str(attrs["params_hash"]), str(attrs["status"])
    except (OSError, KeyError):
        return None


def is_tiled(task: SlideTask, config: TilingConfig) -> bool:
    """Whether a complete output with this slide's parameter hash exists."""
    paths = output_paths(config.out_dir, task.slide_id)
    if not all(p.is_file() for p in paths.all()):
        return False
    found = read_status(paths.coords)
    return found is not None and found[0] == slide_params_hash(config, task)


def tile_slide(task: SlideTask, config: TilingConfig) -> ItemResult:
    """Tile one slide and write its outputs.

    Returns:
        ``ok`` with the patch count, or ``no_tissue`` (outputs still written: an empty
        coords file with ``status="no_tissue"`` and the thumbnail).

    Raises:
        SlideOpenError: Missing, truncated, corrupt or unsupported file.
        MissingMppError: No µm/px and no override.
        CorruptTileError: The mask level failed to decode.
        ConfigError: Bad user mask.
    """
    import cv2

    from wsi_ncmi._version import __version__
    from wsi_ncmi.slide import open_slide
    from wsi_ncmi.tiling.grid import build_grid, plan_geometry
    from wsi_ncmi.tiling.review import (
        dumps_geojson,
        overlay_thumbnail,
        polygons_geojson,
        tissue_polygons,
    )
    from wsi_ncmi.tiling.schema import write_coords
    from wsi_ncmi.tiling.tissue import detect_tissue, load_user_mask, read_mask_image

    start = time.perf_counter()
    timings: dict[str, float] = {}
    params = slide_params(config, task)
    digest = params_hash(params)
    paths = output_paths(config.out_dir, task.slide_id)
    previous = read_status(paths.coords) if paths.coords.is_file() else None
    with open_slide(
        task.path,
        config.backend,
        mpp_override=config.mpp_override,
        mpp_csv=config.mpp_table if config.mpp_override is None else None,
    ) as slide:
        info = slide.mpp_info  # raises MissingMppError early
        dims0 = slide.dimensions
        read_level = slide.best_level_for_mpp(config.grid.target_mpp)
        geometry = plan_geometry(
            config.grid, info.mean, read_level, slide.level_downsamples[read_level]
        )
        image = read_mask_image(slide, config.tissue.mask_mpp)
        timings["read_mask_level_s"] = time.perf_counter() - start
        t = time.perf_counter()
        user_mask = find_user_mask(config.mask_dir, task.slide_id)
        if user_mask is not None:
            tissue = load_user_mask(user_mask, image.rgb.shape[:2], dims0)
        else:
            tissue = detect_tissue(image.rgb, image.mpp, config.tissue)
        timings["segment_s"] = time.perf_counter() - t
        t = time.perf_counter()
        grid = build_grid(tissue.mask, image.scale, dims0, geometry, config.grid.min_tissue)
        timings["grid_s"] = time.perf_counter() - t
        backend, vendor = slide.backend_name, slide.vendor

    t = time.perf_counter()
    n = len(grid.coords)
    tissue_px = int(tissue.mask.sum())
    status: Literal["ok", "no_tissue"] = "ok" if n else "no_tissue"
    reason = ""
    if not n:
        reason = (
            "no tissue found by the mask"
            if tissue_px == 0
            else f"tissue found but no patch reaches min_tissue={config.grid.min_tissue}"
        )
    polygons = tissue_polygons(tissue.mask, image.scale)
    write_text_atomic(paths.geojson, dumps_geojson(polygons_geojson(polygons, task.slide_id)))
    thumb = overlay_thumbnail(
        image.rgb,
        tissue.mask,
        tissue.artifacts,
        grid,
        geometry.stride_level0,
        dims0,
        max_size=config.thumb_size_px,
        note="" if n else "no tissue",
    )
    ok, png = cv2.imencode(".png", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays
        raise RuntimeError(f"PNG encoding of the thumbnail of {task.slide_id!r} failed")
    with atomic_output(paths.thumbnail) as tmp:
        tmp.write_bytes(png.tobytes())
    attrs: dict[str, Any] = {
        "package_version": __version__,
        "tiler_version": TILER_VERSION,
        "slide_id": task.slide_id,
        "slide_path": str(Path(task.path).resolve()),
        "slide_width": dims0[0],
        "slide_height": dims0[1],
        "backend": backend,
        "vendor": vendor,
        "mpp_x": info.x,
        "mpp_y": info.y,
        "mpp_source": info.source,
        "target_mpp": config.grid.target_mpp,
        "effective_mpp": geometry.effective_mpp,
        "patch_size_px": config.grid.patch_size_px,
        "patch_size_level0": geometry.patch_size_level0,
        "read_level": geometry.read_level,
        "read_downsample": geometry.read_downsample,
        "read_size_px": geometry.read_size_px,
        "resize_factor": geometry.resize_factor,
        "overlap_px": config.grid.overlap_px,
        "stride_level0": geometry.stride_level0,
        "min_tissue": config.grid.min_tissue,
        "grid_origin_level0": [0, 0],
        "segmentation": config.tissue.to_dict(),
        "mask_source": tissue.source,
        "mask_mpp": image.mpp,
        "mask_level": image.level,
        "mask_threshold": -1 if tissue.threshold is None else tissue.threshold,
        "tissue_area_um2": tissue_px * image.mpp**2,
        "params": json.dumps(params, sort_keys=True),
        "params_hash": digest,
        "status": status,
    }
    with atomic_output(paths.coords) as tmp:
        write_coords(tmp, grid.coords, grid.tissue_fraction, attrs)
    timings["write_s"] = time.perf_counter() - t
    extra: dict[str, Any] = {
        "params_hash": digest,
        "read_level": geometry.read_level,
        "resize_factor": round(geometry.resize_factor, 6),
        "mask_level": image.level,
        "mask_mpp": round(image.mpp, 4),
        "tissue_area_mm2": round(tissue_px * image.mpp**2 / 1e6, 4),
        **{k: round(v, 4) for k, v in timings.items()},
    }
    if previous is not None and previous[0] != digest:
        extra["replaced_params_hash"] = previous[0]
    return ItemResult(
        task.slide_id,
        status,
        reason=reason,
        count=n,
        seconds=time.perf_counter() - start,
        output=str(paths.coords),
        extra=extra,
    )
