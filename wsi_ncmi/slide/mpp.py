"""Physical resolution (µm/px) of a slide, and where it came from.

Resolution order (the first that yields a plausible value wins):

1. an explicit override: a number, or a CSV mapping ``slide,mpp``;
2. vendor metadata: ``aperio.MPP``, then the backend's normalised
   ``openslide.mpp-x``/``tiffslide.mpp-x`` for vendor formats (Aperio, Hamamatsu, ...);
3. the TIFF ``XResolution``/``YResolution`` tags with their ``ResolutionUnit``.

Nothing is ever assumed silently: when all of these fail, :class:`MissingMppError`
names the slide and both ways to supply the value. Values outside
:data:`PLAUSIBLE_MPP_RANGE` are rejected too, because scanners and converters often
write a placeholder 72 dpi (352.8 µm/px), which would make physical tiling absurd.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsi_ncmi.errors import ConfigError, MissingMppError

#: Inclusive range (µm/px) accepted as a real level-0 resolution. Brightfield scanners
#: span roughly 0.1 (100x oil) to 10 (thumbnail-only scans); 72 dpi = 352.8 µm/px is not.
PLAUSIBLE_MPP_RANGE: tuple[float, float] = (0.05, 50.0)

_UM_PER_UNIT = {"centimeter": 1e4, "inch": 25400.0, "millimeter": 1e3, "micrometer": 1.0}


@dataclass(frozen=True)
class MppInfo:
    """Level-0 resolution of a slide.

    Attributes:
        x: µm per pixel along x (width).
        y: µm per pixel along y (height).
        source: Where the value came from: ``override``, ``override-csv``,
            ``aperio.MPP``, ``openslide.mpp``, ``tiffslide.mpp`` or ``tiff-resolution``.
    """

    x: float
    y: float
    source: str

    @property
    def mean(self) -> float:
        """Geometric mean of x and y resolution (µm/px)."""
        return math.sqrt(self.x * self.y)


def _as_float(value: object) -> float | None:
    if value is None:
        return None
    try:
        out = float(str(value))
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def is_plausible_mpp(value: float) -> bool:
    """Whether ``value`` (µm/px) lies inside :data:`PLAUSIBLE_MPP_RANGE`."""
    lo, hi = PLAUSIBLE_MPP_RANGE
    return lo <= value <= hi


def load_mpp_csv(path: str | Path) -> dict[str, float]:
    """Read a ``slide,mpp`` CSV into a mapping keyed by slide name.

    Keys may be file names (``a.svs``), stems (``a``) or paths; lookups by
    :func:`lookup_mpp_override` try all three.

    Raises:
        ConfigError: The file is missing, lacks the two columns, or has a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"mpp CSV {str(path)!r} does not exist")
    out: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"slide", "mpp"} <= set(reader.fieldnames):
            raise ConfigError(
                f"mpp CSV {str(path)!r} needs a header with columns 'slide,mpp'; "
                f"got {reader.fieldnames!r}"
            )
        for line_no, row in enumerate(reader, start=2):
            value = _as_float(row["mpp"])
            if value is None or not is_plausible_mpp(value):
                raise ConfigError(
                    f"{path}:{line_no}: mpp for slide {row['slide']!r} must be a number in "
                    f"{PLAUSIBLE_MPP_RANGE} µm/px; got {row['mpp']!r}"
                )
            out[row["slide"].strip()] = value
    return out


def lookup_mpp_override(slide_path: str | Path, mapping: Mapping[str, float]) -> float | None:
    """Find ``slide_path`` in an mpp mapping by full path, file name or stem."""
    p = Path(slide_path)
    for key in (str(slide_path), str(p.resolve()), p.name, p.stem):
        if key in mapping:
            return mapping[key]
    return None


def _from_tiff_tags(props: Mapping[str, object]) -> tuple[float, float] | None:
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    um_per_unit = _UM_PER_UNIT.get(unit)
    xres = _as_float(props.get("tiff.XResolution"))
    yres = _as_float(props.get("tiff.YResolution"))
    if um_per_unit is None or xres is None or yres is None:
        return None
    return um_per_unit / xres, um_per_unit / yres


def resolve_mpp(
    slide_path: str | Path,
    properties: Mapping[str, object],
    *,
    vendor: str,
    backend: str,
    override: float | tuple[float, float] | None = None,
    override_source: str = "override",
) -> MppInfo:
    """Resolve the level-0 µm/px of a slide from overrides and metadata.

    Args:
        slide_path: Path of the slide (for messages).
        properties: The backend's property mapping (``openslide.*``, ``tiff.*``, ...).
        vendor: Normalised vendor string (``aperio``, ``generic-tiff``, ...).
        backend: ``openslide`` or ``tiffslide`` (picks the normalised mpp keys).
        override: Explicit µm/px (one value for both axes, or ``(x, y)``).
        override_source: Recorded source label for the override.

    Returns:
        The resolution and its source.

    Raises:
        ConfigError: The override is not a plausible positive number.
        MissingMppError: No source yields a plausible value.
    """
    if override is not None:
        ox, oy = override if isinstance(override, tuple) else (override, override)
        for v in (ox, oy):
            fv = _as_float(v)
            if fv is None or not is_plausible_mpp(fv):
                raise ConfigError(
                    f"mpp override for {str(slide_path)!r} must be a number in "
                    f"{PLAUSIBLE_MPP_RANGE} µm/px; got {v!r}"
                )
        return MppInfo(float(ox), float(oy), override_source)

    rejected: list[str] = []
    candidates: list[tuple[str, tuple[float, float] | None]] = []
    aperio = _as_float(properties.get("aperio.MPP"))
    candidates.append(("aperio.MPP", (aperio, aperio) if aperio else None))
    # The backends derive mpp from the TIFF tags for generic TIFFs; label that honestly.
    norm_source = "tiff-resolution" if vendor in ("generic-tiff", "") else f"{backend}.mpp"
    nx = _as_float(properties.get(f"{backend}.mpp-x"))
    ny = _as_float(properties.get(f"{backend}.mpp-y"))
    candidates.append((norm_source, (nx, ny) if nx and ny else None))
    candidates.append(("tiff-resolution", _from_tiff_tags(properties)))

    for source, value in candidates:
        if value is None:
            continue
        if is_plausible_mpp(value[0]) and is_plausible_mpp(value[1]):
            return MppInfo(value[0], value[1], source)
        note = f"{source} gave {value[0]:.4g}×{value[1]:.4g} µm/px"
        if note not in rejected:
            rejected.append(note)

    detail = (
        "; rejected as implausible (outside "
        f"{PLAUSIBLE_MPP_RANGE[0]}–{PLAUSIBLE_MPP_RANGE[1]} µm/px, e.g. a 72-dpi placeholder): "
        + ", ".join(rejected)
        if rejected
        else "; the file has no vendor mpp and no TIFF resolution tags with a physical unit"
    )
    raise MissingMppError(
        f"cannot determine µm/px for slide {str(slide_path)!r}{detail}. Supply it with "
        "--mpp_override VALUE (one value for every slide) or --mpp_csv FILE (a CSV with columns "
        "'slide,mpp'); in Python pass mpp_override= or mpp_csv= to open_slide()."
    )
