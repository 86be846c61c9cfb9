"""Synthetic CAMELYON-17-like cohort: lymph-node sections, metastases, per-hospital stains.

Demo tiling recommendation: the ``demo`` preset writes level 0 at about 1 µm/px
(0.906–1.0 µm/px depending on the center) on slides of 2.8–3.8 × 2.2–2.8 mm, with 4
pyramid levels. Tile it at ``target_mpp = 1.0`` with ``patch_size_px = 128`` (128 µm
patches, no overlap): that gives about 130–280 tissue patches per slide (median about
200 patches at least half inside the ground-truth tissue polygons). Tumour size classes in
``demo`` are scaled by ``size_scale = 0.25`` (physical ITC ≤ 50 µm, micro ≤ 500 µm, macro
> 500 µm); see :mod:`wsi_ncmi.synth.presets`. The ``full`` preset is CAMELYON-sized (about
0.24 µm/px, tens of thousands of pixels per side, unscaled size classes) and is streamed
strip by strip.
"""

from wsi_ncmi.synth.cohort import CohortResult, generate_cohort, select_slides
from wsi_ncmi.synth.generate import generate_slide, plan_slide, slide_paths, slide_seed
from wsi_ncmi.synth.presets import PRESETS, Preset, get_preset, size_class
from wsi_ncmi.synth.stain import CENTER_PROFILES, CenterProfile, center_profile

__all__ = [
    "CENTER_PROFILES",
    "PRESETS",
    "CenterProfile",
    "CohortResult",
    "Preset",
    "center_profile",
    "generate_cohort",
    "generate_slide",
    "get_preset",
    "plan_slide",
    "select_slides",
    "size_class",
    "slide_paths",
    "slide_seed",
]
