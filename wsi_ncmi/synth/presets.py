"""Size presets of the synthetic cohort: ``demo`` (small, fast), ``bench`` and ``full``.

Tumour sizes follow the CAMELYON-17 rules on the *nominal* largest diameter: ITC ≤ 200 µm,
micro-metastasis > 200 µm and ≤ 2 mm, macro-metastasis > 2 mm. The ``demo`` preset
shrinks the sections and tumours by ``size_scale`` = 0.25, so its physical thresholds are
50 µm and 500 µm; the ground truth stores both the physical diameter (from the µm/px in
the file) and the nominal one (physical / ``size_scale``). Cells (nuclei sizes) are never
scaled. ``full`` uses ``size_scale`` = 1.

``bench`` is the benchmark's twin of all 500 labelled CAMELYON-17 slides. Its tumours and
cells have their real sizes (``size_scale`` = 1) and it is meant to be tiled with the same
128-µm field of view as real CAMELYON-17 at 0.5 µm/px with 256-px patches (here 2.0 µm/px
with 64-px patches, :attr:`Preset.tiling`), so the ratio of tumour diameter to patch field
of view is the real one for every class. What shrinks is the section (slides of 6–7 × 4.6–5.4 mm
instead of CAMELYON's 10–20 mm sections) and the pixel count: level 0 is scanned at 8×
CAMELYON's µm/px (≈ 2 µm/px), where a tumour nucleus (11–17 µm) still spans 6–8 pixels.
Macro-metastases are drawn from 2.3–2.8 mm so that they fit the smaller sections. An ITC
slide gets two to four clusters of 130–195 µm (ITC ≤ 200 µm), so that, as on real slides
at 128 µm per patch, an ITC fills most of a patch that it falls on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsi_ncmi.errors import ConfigError

#: CAMELYON-17 largest-diameter limits (nominal µm): ITC ≤ 200 < micro ≤ 2000 < macro.
ITC_MAX_UM = 200.0
MICRO_MAX_UM = 2000.0

#: Nominal (unscaled) largest-diameter range drawn for the main tumour region of each label,
#: kept clear of the class limits so that rasterisation never changes the class.
NOMINAL_DIAMETER_RANGE_UM: dict[str, tuple[float, float]] = {
    "itc": (70.0, 180.0),
    "micro": (320.0, 1800.0),
    "macro": (2300.0, 4400.0),
}


#: The ``bench`` preset's nominal ranges (see the module docstring).
BENCH_DIAMETER_RANGE_UM: dict[str, tuple[float, float]] = {
    "itc": (130.0, 195.0),
    "micro": (320.0, 1800.0),
    "macro": (2300.0, 2800.0),
}

#: Patch field of view of real CAMELYON-17 work: 256 px at 0.5 µm/px.
CAMELYON_FOV_UM = 128.0


@dataclass(frozen=True)
class Preset:
    """Geometry and sampling of one preset.

    Attributes:
        name: ``"demo"``, ``"bench"`` or ``"full"``.
        mpp_factor: Level-0 µm/px = center ``full_mpp`` × this factor.
        size_scale: Scale of sections and tumours relative to real CAMELYON sizes.
        width_um: Range of slide widths in µm.
        height_um: Range of slide heights in µm.
        strip_rows: Level-0 rows rendered at a time (a multiple of the tile size).
        tile_px: TIFF tile edge in pixels.
        min_level_px: Smallest short side kept in the pyramid.
        mask_mpp: Approximate µm/px of the ground-truth mask PNG.
        default_subset: Slides per center generated when no subset is given (None: all).
        diameter_range_um: Nominal largest-diameter range per label (ITC, micro, macro).
        tiling: Recommended ``(target_mpp, patch_size_px)`` of the tiling.
        itc_clusters: ``(low, high)``: an ITC slide gets ``low`` to ``high - 1`` clusters.
    """

    name: str
    mpp_factor: float
    size_scale: float
    width_um: tuple[float, float]
    height_um: tuple[float, float]
    strip_rows: int
    tile_px: int
    min_level_px: int
    mask_mpp: float
    default_subset: int | None
    diameter_range_um: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(NOMINAL_DIAMETER_RANGE_UM)
    )
    tiling: tuple[float, int] = (1.0, 128)
    itc_clusters: tuple[int, int] = (1, 4)

    def fov_ratio(self, nominal_diameter_um: float) -> float:
        """Tumour diameter over the patch field of view, both at CAMELYON scale.

        Args:
            nominal_diameter_um: Nominal largest diameter in µm.

        Returns:
            ``nominal / (patch field of view / size_scale)``; the same number on real
            CAMELYON-17 is ``nominal / 128``.
        """
        mpp, patch_px = self.tiling
        return nominal_diameter_um / (mpp * patch_px / self.size_scale)


PRESETS: dict[str, Preset] = {
    "demo": Preset(
        name="demo",
        mpp_factor=4.0,
        size_scale=0.25,
        width_um=(2800.0, 3800.0),
        height_um=(2200.0, 2800.0),
        strip_rows=512,
        tile_px=256,
        min_level_px=256,
        mask_mpp=8.0,
        default_subset=20,
    ),
    "bench": Preset(
        name="bench",
        mpp_factor=8.0,
        size_scale=1.0,
        width_um=(6000.0, 7000.0),
        height_um=(4600.0, 5400.0),
        strip_rows=512,
        tile_px=256,
        min_level_px=256,
        mask_mpp=16.0,
        default_subset=None,
        diameter_range_um=dict(BENCH_DIAMETER_RANGE_UM),
        tiling=(2.0, 64),
        itc_clusters=(2, 5),
    ),
    "full": Preset(
        name="full",
        mpp_factor=1.0,
        size_scale=1.0,
        width_um=(8500.0, 10500.0),
        height_um=(6500.0, 7500.0),
        strip_rows=256,
        tile_px=256,
        min_level_px=256,
        mask_mpp=8.0,
        default_subset=1,
    ),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name.

    Args:
        name: ``"demo"`` or ``"full"``.

    Returns:
        The preset.

    Raises:
        ConfigError: If the name is unknown.
    """
    try:
        return PRESETS[name]
    except KeyError as err:
        msg = f"preset={name!r} is unknown; allowed: {sorted(PRESETS)}"
        raise ConfigError(msg) from err


def size_class(nominal_diameter_um: float) -> str:
    """Classify a metastasis by its nominal largest diameter (CAMELYON-17 rule).

    Args:
        nominal_diameter_um: Largest diameter in µm at CAMELYON scale (0 for no tumour).

    Returns:
        ``"negative"``, ``"itc"``, ``"micro"`` or ``"macro"``.
    """
    if nominal_diameter_um <= 0.0:
        return "negative"
    if nominal_diameter_um <= ITC_MAX_UM:
        return "itc"
    if nominal_diameter_um <= MICRO_MAX_UM:
        return "micro"
    return "macro"
