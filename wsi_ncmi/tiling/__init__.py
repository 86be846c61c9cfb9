"""Tiling: tissue mask, patch grid at an exact µm/px, per-slide job and batch runner."""

from wsi_ncmi.tiling.grid import GridParams, PatchGeometry, PatchGrid, build_grid, plan_geometry
from wsi_ncmi.tiling.job import (
    SlideTask,
    TilingConfig,
    is_tiled,
    output_paths,
    slide_params_hash,
    tile_slide,
)
from wsi_ncmi.tiling.run import (
    discover_slides,
    make_tasks,
    manifest_slides,
    manifest_tasks,
    run_tiling,
)
from wsi_ncmi.tiling.schema import (
    COORDS_SCHEMA_VERSION,
    REQUIRED_ATTRS,
    CoordsFile,
    params_hash,
    read_coords,
    write_coords,
)
from wsi_ncmi.tiling.tissue import TissueMask, TissueParams, detect_tissue, read_mask_image

__all__ = [
    "COORDS_SCHEMA_VERSION",
    "REQUIRED_ATTRS",
    "CoordsFile",
    "GridParams",
    "PatchGeometry",
    "PatchGrid",
    "SlideTask",
    "TilingConfig",
    "TissueMask",
    "TissueParams",
    "build_grid",
    "detect_tissue",
    "discover_slides",
    "is_tiled",
    "make_tasks",
    "manifest_slides",
    "manifest_tasks",
    "output_paths",
    "params_hash",
    "plan_geometry",
    "read_coords",
    "read_mask_image",
    "run_tiling",
    "slide_params_hash",
    "tile_slide",
    "write_coords",
]
