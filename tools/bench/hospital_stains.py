"""Stain geometry and patch-level profiles of the ``bench`` cohort's hospitals.

The ``stains`` and ``profile`` measurements of ``tools/bench/hospital_shift.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

BENCH_CONFIG = "configs/bench/synthetic_full.yaml"
COHORT = "outputs/bench_c17/cohort"
FEATURES_ROOT = "outputs/bench_c17/tiles"
ENCODER = "stain-stats"
WORK = "outputs/bench_c17/hosp1"

#: ``stain-stats``'s 24 dimensions (``wsi_ncmi/features/encoders/builtin.py``), in order.
FEATURE_NAMES: tuple[str, ...] = (
    *(f"rgb_mean_{c}" for c in "RGB"),
    *(f"rgb_std_{c}" for c in "RGB"),
    *(f"od_mean_{c}" for c in "RGB"),
    *(f"od_std_{c}" for c in "RGB"),
    *(f"{s}_mean" for s in ("H", "E", "DAB")),
    *(f"{s}_std" for s in ("H", "E", "DAB")),
    "H_q25",
    "H_q75",
    "tissue_fraction",
    "grad_mean",
    "grad_std",
    "laplacian_var",
)

#: The parts of a :class:`~wsi_ncmi.synth.stain.CenterProfile` that ``counterfactual``
#: can take from another center (``full_mpp`` is never swapped: the slide geometry stays).
SWAPS: dict[str, tuple[str, ...]] = {
    "stain_vectors": ("hematoxylin_od", "eosin_od"),
    "hematoxylin_od": ("hematoxylin_od",),
    "stain_gains": ("hematoxylin_gain", "eosin_gain"),
    "optics": ("background_rgb", "blur_sigma_um", "noise_sigma", "jpeg_quality"),
    "all": (
        "hematoxylin_od",
        "eosin_od",
        "hematoxylin_gain",
        "eosin_gain",
        "background_rgb",
        "blur_sigma_um",
        "noise_sigma",
        "jpeg_quality",
    ),
}

#: Ruifrok & Johnston's H, E and DAB optical-density vectors (the rows ``stain-stats``
#: inverts, ``wsi_ncmi/features/encoders/builtin.py``).
RUIFROK_H = (0.65, 0.70, 0.29)
RUIFROK_E = (0.07, 0.99, 0.11)
RUIFROK_DAB = (0.27, 0.57, 0.78)
#: The H and E reference vectors of Macenko et al.'s stain normalisation, as commonly used
#: (``HERef``): a real-slide pair, for scale.
MACENKO_H = (0.5626, 0.7201, 0.4062)
MACENKO_E = (0.2159, 0.8012, 0.5581)


def _angle(a: Sequence[float], b: Sequence[float]) -> float:
    u = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    v = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(u @ v, -1.0, 1.0))))


# ---------------------------------------------------------------------------- stains


def stain_lines() -> list[str]:
    """One line per center: the stain geometry, and what ``stain-stats`` reads from it.

    "H read as" is Ruifrok-Johnston colour deconvolution (what ``stain-stats`` computes)
    of one unit of the center's hematoxylin optical density: the share that lands in the
    H, E and DAB channels. For a center whose hematoxylin is Ruifrok's it is (1, 0, 0).
    """
    from wsi_ncmi.synth.stain import CENTER_PROFILES

    unmix = np.linalg.inv(np.asarray([RUIFROK_H, RUIFROK_E, RUIFROK_DAB], dtype=np.float64))
    lines = [
        "center  H-E angle  H vs Ruifrok H  E vs Ruifrok E  H read as (H, E, DAB)   "
        "H gain  E gain  blur um  noise  jpeg"
    ]
    for p in CENTER_PROFILES:
        h, e, dab = np.asarray(p.hematoxylin_od, dtype=np.float64) @ unmix
        lines.append(
            f"{p.center:>6}  {_angle(p.hematoxylin_od, p.eosin_od):>8.1f}°  "
            f"{_angle(p.hematoxylin_od, RUIFROK_H):>13.1f}°  "
            f"{_angle(p.eosin_od, RUIFROK_E):>13.1f}°  ({h:+.2f}, {e:+.2f}, {dab:+.2f})  "
            f"{p.hematoxylin_gain:>8.2f}  {p.eosin_gain:>6.2f}  {p.blur_sigma_um:>7.2f}  "
            f"{p.noise_sigma:>5.1f}  {p.jpeg_quality:>4}"
        )
    ruifrok = _angle(RUIFROK_H, RUIFROK_E)
    lines.append(f"Ruifrok H-E angle (what stain-stats deconvolves with): {ruifrok:.1f}°")
    macenko = _angle(MACENKO_H, MACENKO_E)
    lines.append(
        f"Macenko reference pair: H-E angle {macenko:.1f}°, H {_angle(MACENKO_H, RUIFROK_H):.1f}° "
        f"from Ruifrok's H"
    )
    return lines


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class HospitalProfile:
    """The tumour-vs-normal profile of one hospital against the other hospitals'.

    Attributes:
        center: The hospital.
        tumour_patches: Patches >= 50 % tumour of its slides.
        normal_patches: Tumour-free patches of its tumour slides.
        difference: Mean normalised tumour patch minus mean normalised normal patch.
        others: The other hospitals' mean ``difference``.
        strength_ratio: ``|difference|`` over the other hospitals' mean ``|difference|``.
        correlation: Pearson correlation with the other hospitals' mean difference.
        flipped: Dimensions whose sign differs from the other hospitals' mean, where that
            mean is at least 0.1 in normalised units.
    """

    center: int
    tumour_patches: int
    normal_patches: int
    difference: list[float]
    others: list[float]
    strength_ratio: float
    correlation: float
    flipped: list[str]


def hospital_profiles(
    cohort: Path, features_dir: Path, slide_norm: str
) -> tuple[list[HospitalProfile], int]:
    """Every hospital's tumour-vs-normal profile (see :class:`HospitalProfile`).

    Returns:
        The profiles, and the number of slides read.
    """
    from wsi_ncmi.synth.separability import TUMOUR_MIN, load_cohort

    slides = load_cohort(cohort, features_dir, slide_norm=slide_norm)
    diffs: dict[int, NDArray[np.float64]] = {}
    counts: dict[int, tuple[int, int]] = {}
    for center in sorted({s.center for s in slides}):
        mine = [s for s in slides if s.center == center and s.label != "negative"]
        tumour = np.concatenate([s.features[s.tumour_fraction >= TUMOUR_MIN] for s in mine])
        normal = np.concatenate([s.features[s.tumour_fraction == 0] for s in mine])
        diffs[center] = tumour.mean(axis=0) - normal.mean(axis=0)
        counts[center] = (len(tumour), len(normal))
    names = FEATURE_NAMES if len(next(iter(diffs.values()))) == len(FEATURE_NAMES) else None
    out = []
    for center, diff in diffs.items():
        others = np.mean([d for c, d in diffs.items() if c != center], axis=0)
        strength = float(
            np.linalg.norm(diff)
            / np.mean([np.linalg.norm(d) for c, d in diffs.items() if c != center])
        )
        flips = np.flatnonzero((np.sign(diff) != np.sign(others)) & (np.abs(others) >= 0.1))
        out.append(
            HospitalProfile(
                center=center,
                tumour_patches=counts[center][0],
                normal_patches=counts[center][1],
                difference=[float(v) for v in diff],
                others=[float(v) for v in others],
                strength_ratio=strength,
                correlation=float(np.corrcoef(diff, others)[0, 1]),
                flipped=[names[i] if names else str(i) for i in flips],
            )
        )
    return out, len(slides)


def profile_lines(profiles: Sequence[HospitalProfile]) -> list[str]:
    """The profiles as text lines."""
    lines = [
        "center  tumour/normal patches  strength vs others  correlation  "
        "flipped dims: this hospital's difference (the others' mean)"
    ]
    for p in profiles:
        names = list(FEATURE_NAMES) if len(p.difference) == len(FEATURE_NAMES) else None
        flips = [
            f"{name} {p.difference[i]:+.2f} ({p.others[i]:+.2f})"
            for name in p.flipped
            for i in [names.index(name) if names else int(name)]
        ]
        lines.append(
            f"{p.center:>6}  {p.tumour_patches:>7} / {p.normal_patches:<11}  "
            f"{p.strength_ratio:>17.2f}x  {p.correlation:>11.2f}  "
            f"{len(p.flipped)}: {', '.join(flips)}"
        )
    return lines


# ------------------------------------------------------------------------------- mil
