"""Reuse existing tilings: convert CLAM- or TRIDENT-style ``coords`` H5 files.

Both tools store a ``coords`` dataset ``(N, 2)`` of level-0 top-left corners. CLAM
adds ``patch_level`` and ``patch_size`` (pixels at that level) as dataset attributes;
TRIDENT adds ``patch_size`` (pixels at the target magnification) and
``patch_size_level0``. The converter opens the slide for its size and µm/px and writes
a wsi-ncmi coords file that ``wsi-extract`` reads like one from ``wsi-tile``.
Tissue fractions are unknown and stored as NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_ncmi._version import __version__
from wsi_ncmi.batch import atomic_output
from wsi_ncmi.errors import CacheSchemaError
from wsi_ncmi.jsontypes import as_float, as_int
from wsi_ncmi.slide import open_slide
from wsi_ncmi.tiling.schema import (
    CoordsFile,
    decoded_attrs,
    params_hash,
    read_coords,
    write_coords,
)


def import_external_coords(
    h5_path: str | Path,
    slide_path: str | Path,
    out_path: str | Path,
    *,
    backend: str = "auto",
    slide_id: str | None = None,
) -> CoordsFile:
    """Convert one CLAM/TRIDENT coords file into a wsi-ncmi coords file.

    Args:
        h5_path: The external ``.h5`` (a ``coords`` dataset with CLAM or TRIDENT attrs).
        slide_path: The slide it was made from.
        out_path: Where to write the wsi-ncmi coords file (atomically).
        backend: Slide backend to record.
        slide_id: Id to record; default the slide file's stem.

    Returns:
        The written file, read back and validated.

    Raises:
        CacheSchemaError: No ``coords`` dataset, or neither CLAM nor TRIDENT attrs.
    """
    import h5py

    h5_path = Path(h5_path)
    try:
        with h5py.File(h5_path, "r") as h5:
            if "coords" not in h5:
                raise CacheSchemaError(f"{str(h5_path)!r} has no 'coords' dataset")
            coords = np.asarray(h5["coords"][()], dtype=np.int64).reshape(-1, 2)
            attrs = {**decoded_attrs(h5), **decoded_attrs(h5["coords"])}
    except OSError as err:
        raise CacheSchemaError(f"cannot read {str(h5_path)!r}: {err}") from err
    with open_slide(slide_path, backend) as slide:
        mpp_x, mpp_y = slide.mpp
        downsamples = slide.level_downsamples
        if "patch_size_level0" in attrs:  # TRIDENT
            style = "trident"
            patch_size_px = as_int(attrs["patch_size"])
            footprint = as_float(attrs["patch_size_level0"])
            scale = footprint / patch_size_px
            level = max(i for i, d in enumerate(downsamples) if d <= scale * 1.001 or i == 0)
            read_size_px = round(footprint / downsamples[level])
        elif "patch_level" in attrs and "patch_size" in attrs:  # CLAM
            style = "clam"
            level = as_int(attrs["patch_level"])
            read_size_px = patch_size_px = as_int(attrs["patch_size"])
            footprint = read_size_px * downsamples[level]
        else:
            raise CacheSchemaError(
                f"{str(h5_path)!r}: 'coords' lacks CLAM (patch_level, patch_size) or TRIDENT "
                f"(patch_size, patch_size_level0) attributes; found {sorted(attrs)}"
            )
        dx = np.diff(np.unique(coords[:, 0])) if len(coords) > 1 else np.array([])
        stride = int(dx.min()) if dx.size else round(footprint)
        meta = {
            "package_version": __version__,
            "slide_id": slide_id or Path(slide_path).stem,
            "slide_path": str(Path(slide_path).resolve()),
            "slide_width": slide.dimensions[0],
            "slide_height": slide.dimensions[1],
            "backend": backend,
            "vendor": slide.vendor,
            "mpp_x": mpp_x,
            "mpp_y": mpp_y,
            "mpp_source": slide.mpp_source,
            "target_mpp": slide.mpp_info.mean * footprint / patch_size_px,
            "patch_size_px": patch_size_px,
            "patch_size_level0": footprint,
            "read_level": level,
            "read_downsample": downsamples[level],
            "read_size_px": read_size_px,
            "resize_factor": patch_size_px / read_size_px,
            "overlap_px": as_int(attrs.get("overlap", 0)),
            "stride_level0": stride,
            "min_tissue": 0.0,
            "segmentation": {"imported_from": style, "source": str(h5_path)},
            "status": "ok" if len(coords) else "no_tissue",
        }
    meta["params_hash"] = params_hash({k: meta[k] for k in sorted(meta) if k != "slide_path"})
    with atomic_output(out_path) as tmp:
        write_coords(tmp, coords, np.full(len(coords), np.nan, np.float32), meta)
    return read_coords(out_path)
