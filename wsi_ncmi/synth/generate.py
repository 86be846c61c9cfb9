"""Generate one synthetic slide: plan, render strip by strip, write TIFF + ground truth.

Outputs for a manifest row with ``slide_id`` S of center K, under the cohort folder:

- ``center_K/S.tif``: the pyramidal JPEG TIFF;
- ``center_K/S.mask.png``: low-resolution mask (0 background, 128 tissue, 255 tumour);
- ``center_K/S.gt.json``: level-0 tissue and tumour polygons, µm/px, label, center, the
  largest tumour diameter (physical and nominal µm) and the preset's ``size_scale``.

Each file is written atomically (:func:`wsi_ncmi.batch.atomic.atomic_output`: a temp
file beside the target, then a rename), so a killed run leaves no partial file; the
JSON comes last, so its presence marks a finished slide. The slide's random generator is
seeded from ``(global seed, preset, slide_id)`` only, so the bytes do not depend on the
worker count or on the order in which slides are made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.batch.atomic import atomic_output, write_bytes_atomic, write_text_atomic
from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.synth.geometry import SUBPIXEL_SHIFT, largest_diameter, to_fixed
from wsi_ncmi.synth.presets import Preset, size_class
from wsi_ncmi.synth.stain import CenterProfile, center_profile, jitter_profile, od_to_rgb
from wsi_ncmi.synth.tissue import TissueLayout, plan_tissue, render_tissue
from wsi_ncmi.synth.tumour import TumourLayout, plan_tumour, render_tumour
from wsi_ncmi.synth.writer import write_pyramid

GT_SCHEMA = "wsi_ncmi.synth.ground_truth/1"
MASK_VALUES = {"background": 0, "tissue": 128, "tumour": 255}


def slide_seed(seed: int, preset: str, slide_id: str) -> int:
    """Derive a slide's 64-bit seed from the global seed, preset and slide id.

    Args:
        seed: Global seed of the run.
        preset: Preset name.
        slide_id: The slide's id.

    Returns:
        A non-negative integer seed.
    """
    digest = hashlib.sha256(f"{seed}|{preset}|{slide_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class SlidePlan:
    """Everything needed to render a slide, drawn up front from its seed."""

    row: ManifestRow
    preset: Preset
    seed: int
    profile: CenterProfile
    mpp: float
    size_px: tuple[int, int]
    tissue: TissueLayout
    tumour: TumourLayout


def plan_slide(row: ManifestRow, preset: Preset, seed: int) -> SlidePlan:
    """Draw the geometry, stain and size of one slide.

    Args:
        row: Manifest row (slide id, center, label).
        preset: Size preset.
        seed: Global seed of the run.

    Returns:
        The slide plan.
    """
    own_seed = slide_seed(seed, preset.name, row.slide_id)
    rng = np.random.default_rng(own_seed)
    base = center_profile(row.center)
    profile = jitter_profile(base, rng)
    mpp = round(base.full_mpp * preset.mpp_factor, 4)
    width = int(rng.uniform(*preset.width_um) / mpp)
    height = int(rng.uniform(*preset.height_um) / mpp)
    tissue = plan_tissue(rng, (width, height), mpp, preset.size_scale)
    tumour = plan_tumour(
        rng,
        row.label,
        tissue,
        mpp,
        preset.size_scale,
        (width, height),
        preset.diameter_range_um,
        preset.itc_clusters,
    )
    return SlidePlan(row, preset, own_seed, profile, mpp, (width, height), tissue, tumour)


def render_strips(plan: SlidePlan) -> Iterator[NDArray[np.uint8]]:
    """Render the slide's level-0 RGB image as strips of ``preset.strip_rows`` rows.

    Args:
        plan: The slide plan.

    Yields:
        ``(rows, width, 3)`` uint8 strips, top to bottom.
    """
    width, height = plan.size_px
    rows_per_strip = plan.preset.strip_rows
    blur_px = plan.profile.blur_sigma_um / plan.mpp
    margin = int(np.ceil(3 * blur_px)) + 1
    rng = np.random.default_rng([plan.seed, 1])
    # One grain texture per slide, rolled by a random shift for each strip: much cheaper
    # than fresh noise, and the repeat is invisible under the nuclei.
    texture = rng.random((rows_per_strip + 2 * margin, width), dtype=np.float32)
    for y0 in range(0, height, rows_per_strip):
        y1 = min(y0 + rows_per_strip, height)
        top, bottom = max(0, y0 - margin), min(height, y1 + margin)
        shape = (bottom - top, width)
        shift = int(rng.integers(width))
        grain = np.ascontiguousarray(np.roll(texture, shift, axis=1)[: shape[0]])
        hema, eosin, _ = render_tissue(plan.tissue, top, shape, plan.mpp, grain)
        render_tumour(plan.tumour, top, hema, eosin, plan.mpp, grain)
        # Sensor noise: the grain seen backwards, centred to zero mean and unit variance.
        noise = np.asarray(
            cv2.addWeighted(grain[:, ::-1], 3.4641, grain, 0.0, -1.7321), dtype=np.float32
        )
        rgb = od_to_rgb(hema, eosin, plan.profile, blur_sigma_px=blur_px, noise=noise)
        yield rgb[y0 - top : y0 - top + (y1 - y0)]


def _polygons_json(polygons: tuple[NDArray[np.float64], ...]) -> list[list[list[float]]]:
    return [[[float(x), float(y)] for x, y in poly] for poly in polygons]


def ground_truth(
    plan: SlidePlan, level_count: int, mask_name: str, mask_downsample: int
) -> JSONObject:
    """Build the ground-truth record of a slide (JSON-ready).

    Args:
        plan: The slide plan.
        level_count: Number of pyramid levels written.
        mask_name: File name of the mask PNG.
        mask_downsample: Level-0 pixels per mask pixel.

    Returns:
        The record.
    """
    diameters_px = [largest_diameter(p) for p in plan.tumour.regions]
    largest_um = max(diameters_px, default=0.0) * plan.mpp
    nominal_um = largest_um / plan.preset.size_scale
    return {
        "schema": GT_SCHEMA,
        "slide_id": plan.row.slide_id,
        "patient_id": plan.row.patient_id,
        "center": plan.row.center,
        "label": plan.row.label,
        "label_from_size": size_class(nominal_um),
        "preset": plan.preset.name,
        "slide_seed": plan.seed,
        "mpp": [plan.mpp, plan.mpp],
        "level0_size": list(plan.size_px),
        "level_count": level_count,
        "size_scale": plan.preset.size_scale,
        "tumour_largest_diameter_um": round(largest_um, 3),
        "tumour_largest_diameter_nominal_um": round(nominal_um, 3),
        "tumour_region_diameters_um": [round(d * plan.mpp, 3) for d in diameters_px],
        "tissue_polygons": _polygons_json(plan.tissue.sections),
        "tumour_polygons": _polygons_json(plan.tumour.regions),
        "mask": {"file": mask_name, "downsample": mask_downsample, "values": MASK_VALUES},
        "coordinates": "level-0 pixels (x, y), origin at the top-left pixel corner",
    }


def render_mask(plan: SlidePlan, downsample: int) -> NDArray[np.uint8]:
    """Rasterise the tissue and tumour polygons at ``1 / downsample`` of level 0.

    Args:
        plan: The slide plan.
        downsample: Level-0 pixels per mask pixel.

    Returns:
        uint8 mask with :data:`MASK_VALUES`.
    """
    width, height = plan.size_px
    mask = np.zeros((height // downsample, width // downsample), dtype=np.uint8)
    for polygons, value in ((plan.tissue.sections, 128), (plan.tumour.regions, 255)):
        if polygons:
            scaled = [to_fixed(p / downsample) for p in polygons]
            cv2.fillPoly(mask, scaled, value, lineType=cv2.LINE_8, shift=SUBPIXEL_SHIFT)
    return mask


def slide_paths(out_dir: Path, row: ManifestRow) -> tuple[Path, Path, Path]:
    """Return the ``(tif, mask_png, gt_json)`` paths of a manifest row under ``out_dir``.

    Args:
        out_dir: Cohort folder.
        row: Manifest row.

    Returns:
        The three paths.
    """
    tif = out_dir / row.relative_path
    return tif, tif.with_suffix(".mask.png"), tif.with_suffix(".gt.json")


def generate_slide(row: ManifestRow, preset: Preset, seed: int, out_dir: Path) -> Path:
    """Generate one slide, its mask and its ground truth under ``out_dir``.

    Args:
        row: Manifest row.
        preset: Size preset.
        seed: Global seed.
        out_dir: Cohort folder.

    Returns:
        Path of the written TIFF.
    """
    tif_path, mask_path, gt_path = slide_paths(out_dir, row)
    tif_path.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_slide(row, preset, seed)
    with atomic_output(tif_path) as tmp:
        sizes = write_pyramid(
            tmp,
            render_strips(plan),
            plan.size_px,
            plan.mpp,
            jpeg_quality=plan.profile.jpeg_quality,
            strip_rows=preset.strip_rows,
            tile_px=preset.tile_px,
            min_level_px=preset.min_level_px,
        )
    downsample = int(2 ** max(0, round(np.log2(preset.mask_mpp / plan.mpp))))
    ok, png = cv2.imencode(".png", render_mask(plan, downsample))
    if not ok:  # pragma: no cover - OpenCV failure
        msg = f"could not encode the mask of {row.slide_id}"
        raise RuntimeError(msg)
    write_bytes_atomic(mask_path, png.tobytes())
    record = ground_truth(plan, len(sizes), mask_path.name, downsample)
    write_text_atomic(gt_path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return tif_path
