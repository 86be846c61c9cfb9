"""Per-hospital acquisition profiles and the Beer–Lambert H&E colour model.

Each CAMELYON-17 center scanned and stained its slides differently. The synthetic cohort
mimics that with one :class:`CenterProfile` per center: hematoxylin and eosin stain vectors
(optical density per RGB channel), stain intensity gains, a glass/background tint, scanner
blur, JPEG quality and the level-0 µm/px. A classifier can therefore learn the hospital from
colour alone, which is what per-hospital evaluation is meant to expose.

Rendering works in optical-density (OD) space: the tissue generators produce per-pixel
hematoxylin and eosin concentrations, and :func:`od_to_rgb` turns them into RGB with
``I = background · exp(-(c_h · h + c_e · e))``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.errors import ConfigError

FloatArray = NDArray[np.float32]


@dataclass(frozen=True)
class CenterProfile:
    """How one hospital's slides look.

    Attributes:
        center: Center index (0–4).
        hematoxylin_od: Unit OD vector (R, G, B) of hematoxylin.
        eosin_od: Unit OD vector (R, G, B) of eosin.
        hematoxylin_gain: Multiplier on hematoxylin concentration (stain intensity).
        eosin_gain: Multiplier on eosin concentration.
        background_rgb: Colour of empty glass, 0–255 per channel.
        blur_sigma_um: Optical blur of the scanner, in µm (Gaussian sigma).
        noise_sigma: Standard deviation of additive sensor noise, in 8-bit grey levels.
        jpeg_quality: JPEG quality of the tiles (1–100).
        full_mpp: Level-0 µm/px of the ``full`` preset (CAMELYON-like, about 0.24).
    """

    center: int
    hematoxylin_od: tuple[float, float, float]
    eosin_od: tuple[float, float, float]
    hematoxylin_gain: float
    eosin_gain: float
    background_rgb: tuple[float, float, float]
    blur_sigma_um: float
    noise_sigma: float
    jpeg_quality: int
    full_mpp: float


def _unit(vector: tuple[float, float, float]) -> tuple[float, float, float]:
    norm = float(np.linalg.norm(vector))
    x, y, z = (float(v) / norm for v in vector)
    return (x, y, z)


CENTER_PROFILES: tuple[CenterProfile, ...] = (
    CenterProfile(
        center=0,
        hematoxylin_od=_unit((0.65, 0.70, 0.29)),
        eosin_od=_unit((0.07, 0.99, 0.11)),
        hematoxylin_gain=1.00,
        eosin_gain=1.00,
        background_rgb=(238.0, 236.0, 240.0),
        blur_sigma_um=0.35,
        noise_sigma=1.5,
        jpeg_quality=92,
        full_mpp=0.2430,
    ),
    CenterProfile(
        center=1,
        hematoxylin_od=_unit((0.45, 0.78, 0.44)),
        eosin_od=_unit((0.16, 0.92, 0.36)),
        hematoxylin_gain=1.35,
        eosin_gain=0.70,
        background_rgb=(232.0, 233.0, 228.0),
        blur_sigma_um=0.55,
        noise_sigma=2.5,
        jpeg_quality=80,
        full_mpp=0.2456,
    ),
    CenterProfile(
        center=2,
        hematoxylin_od=_unit((0.72, 0.64, 0.26)),
        eosin_od=_unit((0.02, 0.95, 0.30)),
        hematoxylin_gain=0.60,
        eosin_gain=1.50,
        background_rgb=(246.0, 240.0, 246.0),
        blur_sigma_um=0.25,
        noise_sigma=1.0,
        jpeg_quality=95,
        full_mpp=0.2265,
    ),
    CenterProfile(
        center=3,
        hematoxylin_od=_unit((0.68, 0.68, 0.27)),
        eosin_od=_unit((0.26, 0.93, 0.26)),
        hematoxylin_gain=1.10,
        eosin_gain=1.70,
        background_rgb=(226.0, 231.0, 238.0),
        blur_sigma_um=0.60,
        noise_sigma=3.0,
        jpeg_quality=70,
        full_mpp=0.2500,
    ),
    CenterProfile(
        center=4,
        hematoxylin_od=_unit((0.78, 0.58, 0.24)),
        eosin_od=_unit((0.18, 0.97, 0.15)),
        hematoxylin_gain=0.70,
        eosin_gain=0.75,
        background_rgb=(248.0, 246.0, 238.0),
        blur_sigma_um=0.45,
        noise_sigma=2.0,
        jpeg_quality=85,
        full_mpp=0.2398,
    ),
)


def center_profile(center: int) -> CenterProfile:
    """Return the acquisition profile of one center.

    Args:
        center: Center index from the manifest.

    Returns:
        The profile of that center.

    Raises:
        ConfigError: If no profile exists for ``center``.
    """
    if not 0 <= center < len(CENTER_PROFILES):
        msg = (
            f"center={center!r} has no synthetic acquisition profile; "
            f"allowed centers are 0..{len(CENTER_PROFILES) - 1}"
        )
        raise ConfigError(msg)
    return CENTER_PROFILES[center]


def jitter_profile(profile: CenterProfile, rng: np.random.Generator) -> CenterProfile:
    """Perturb a center profile slightly, so slides of one center are not identical.

    The spread (a few percent) is well below the differences between centers.

    Args:
        profile: The center's profile.
        rng: Random generator of the slide.

    Returns:
        A new profile with jittered stain gains and background tint.
    """
    gains = rng.normal(1.0, 0.05, size=2)
    tint = rng.normal(0.0, 1.5, size=3)
    background = tuple(
        float(np.clip(b + t, 200.0, 252.0))
        for b, t in zip(profile.background_rgb, tint, strict=True)
    )
    return replace(
        profile,
        hematoxylin_gain=profile.hematoxylin_gain * float(gains[0]),
        eosin_gain=profile.eosin_gain * float(gains[1]),
        background_rgb=(background[0], background[1], background[2]),
    )


def od_to_rgb(
    hematoxylin: FloatArray,
    eosin: FloatArray,
    profile: CenterProfile,
    *,
    blur_sigma_px: float,
    noise: FloatArray | None = None,
) -> NDArray[np.uint8]:
    """Turn stain concentrations into an RGB image (Beer–Lambert law).

    Args:
        hematoxylin: Hematoxylin concentration, ``(H, W)`` float32, about 0–1.5.
        eosin: Eosin concentration, ``(H, W)`` float32, about 0–1.5.
        profile: Acquisition profile (stain vectors, gains, background).
        blur_sigma_px: Gaussian sigma of the optical blur, in pixels (0 disables it).
        noise: Optional zero-mean, unit-variance field ``(H, W)`` for sensor noise.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    h_vec = np.asarray(profile.hematoxylin_od, dtype=np.float64) * profile.hematoxylin_gain
    e_vec = np.asarray(profile.eosin_od, dtype=np.float64) * profile.eosin_gain
    channels = []
    for channel in range(3):
        # OpenCV's element-wise kernels are several times faster than numpy's here.
        od = cv2.addWeighted(hematoxylin, -h_vec[channel], eosin, -e_vec[channel], 0.0)
        intensity = cv2.exp(od)
        if noise is not None:
            intensity = cv2.addWeighted(
                intensity, profile.background_rgb[channel], noise, profile.noise_sigma, 0.0
            )
        else:
            intensity = intensity * profile.background_rgb[channel]
        channels.append(cv2.convertScaleAbs(intensity))
    rgb = cv2.merge(channels)
    if blur_sigma_px > 0.05:
        rgb = cv2.GaussianBlur(rgb, (0, 0), blur_sigma_px)
    return np.asarray(rgb, dtype=np.uint8)
