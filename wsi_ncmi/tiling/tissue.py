"""Tissue segmentation on a low-resolution image of the slide (OpenCV, vectorised).

The mask is computed at about :attr:`TissueParams.mask_mpp` µm/px (8 by default), read
from the coarsest pyramid level that is at least that fine. Level 0 is read only when
the slide has no coarser level, and then in horizontal strips that are downscaled one at
a time, so memory stays bounded by the mask size, not the slide size.

Default method (``otsu``): saturation and optical density are smoothed; a pixel is tissue
when its saturation is above an Otsu threshold (computed on all non-artifact pixels, so it
separates background from tissue; never below ``min_saturation``) and its optical density
is above ``min_od``. Pen marks (green and blue ink) and black artifacts are rejected, then
the mask is closed and opened, and small pieces and small holes are removed by area in µm².
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.jsontypes import JSONObject

if TYPE_CHECKING:
    from wsi_ncmi.slide import Slide

#: Pixels (level pixels) read per strip when a level must be downscaled on the fly.
STRIP_BUDGET_PX = 16_000_000
#: Longest time the mask read of one slide may take (checked between strips): a slide
#: whose mask takes longer (no usable pyramid level, or a header that claims far more
#: pixels than the file holds) fails with its own error instead of holding a worker.
MASK_READ_LIMIT_S = 900.0
#: Masks get at least this many pixels along the slide's long side (small slides).
MIN_MASK_LONG_SIDE_PX = 1024
#: ... but never more than this many times finer than the requested mask µm/px.
MAX_MASK_REFINE = 4.0


@dataclass(frozen=True)
class TissueParams:
    """Segmentation parameters (all physical sizes in µm, areas in µm²).

    Attributes:
        mask_mpp: Resolution of the mask in µm/px (a coarser mask is never used; small
            slides get a finer one, down to ``mask_mpp / 4``, so the mask has about
            1024 px on its long side).
        blur_um: Median-filter width applied to saturation and optical density.
        min_saturation: Floor (0–255) for the Otsu saturation threshold; keeps blank
            slides blank.
        saturation_threshold: Fixed saturation threshold (0–255) instead of Otsu.
        min_od: Minimum optical density (mean over RGB, log10) of tissue.
        close_um: Diameter of the morphological closing (bridges small gaps).
        open_um: Diameter of the morphological opening (removes specks).
        min_tissue_area_um2: Tissue pieces smaller than this area (µm²) are dropped.
        min_hole_area_um2: Holes smaller than this area (µm²) are filled; larger ones are kept.
        fill_holes: Fill every hole regardless of size.
        reject_pen: Reject green/blue pen ink.
        reject_black: Reject black artifacts (ink, dirt, folds) darker than ``black_value``.
        black_value: HSV value (0–255) below which a pixel is a black artifact.
    """

    mask_mpp: float = 8.0
    blur_um: float = 24.0
    min_saturation: int = 20
    saturation_threshold: int | None = None
    min_od: float = 0.04
    close_um: float = 64.0
    open_um: float = 16.0
    min_tissue_area_um2: float = 10_000.0
    min_hole_area_um2: float = 50_000.0
    fill_holes: bool = False
    reject_pen: bool = True
    reject_black: bool = True
    black_value: int = 45

    def __post_init__(self) -> None:
        positive = {"mask_mpp": self.mask_mpp, "blur_um": self.blur_um}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number of µm, got {value!r}")
        for name, value in {
            "close_um": self.close_um,
            "open_um": self.open_um,
            "min_tissue_area_um2": self.min_tissue_area_um2,
            "min_hole_area_um2": self.min_hole_area_um2,
            "min_od": self.min_od,
        }.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number ≥ 0, got {value!r}")
        thr = self.saturation_threshold
        if thr is not None and not 0 <= thr <= 255:
            raise ConfigError(f"saturation_threshold must be in [0, 255], got {thr!r}")

    def to_dict(self) -> JSONObject:
        """JSON-ready form (recorded in the coords file and the parameter hash)."""
        return asdict(self)


@dataclass(frozen=True)
class MaskImage:
    """An RGB image of the whole slide at mask resolution.

    Attributes:
        rgb: ``(H, W, 3)`` uint8.
        mpp: µm/px of ``rgb`` (mean of x and y).
        scale: Level-0 pixels per mask pixel, ``(sx, sy)``.
        level: Pyramid level that was read.
        strips: Number of strips read (1 when the level was read whole).
    """

    rgb: np.ndarray
    mpp: float
    scale: tuple[float, float]
    level: int
    strips: int


@dataclass(frozen=True)
class TissueMask:
    """Result of segmentation.

    Attributes:
        mask: ``(H, W)`` uint8, 1 = tissue.
        artifacts: ``(H, W)`` bool, pixels rejected as pen ink or black artifacts.
        threshold: Saturation threshold used (None for user masks).
        source: ``otsu``, ``user-png`` or ``user-geojson``.
    """

    mask: np.ndarray
    artifacts: np.ndarray
    threshold: int | None
    source: str


def effective_mask_mpp(slide_mpp: float, dims0: tuple[int, int], mask_mpp: float) -> float:
    """µm/px of the mask: ``mask_mpp``, finer for small slides, never finer than level 0."""
    long_side_um = max(dims0) * slide_mpp
    finer = max(mask_mpp / MAX_MASK_REFINE, min(mask_mpp, long_side_um / MIN_MASK_LONG_SIDE_PX))
    return max(slide_mpp, finer)


def read_mask_image(
    slide: Slide, mask_mpp: float, *, limit_s: float = MASK_READ_LIMIT_S
) -> MaskImage:
    """Read the slide at about ``mask_mpp`` µm/px without ever holding level 0 whole.

    Args:
        slide: An open slide with known µm/px.
        mask_mpp: Requested mask resolution (see :func:`effective_mask_mpp`).
        limit_s: Time bound of a read in strips (:data:`MASK_READ_LIMIT_S`).

    Returns:
        The downscaled RGB image and its geometry.

    Raises:
        SlideOpenError: The read in strips took longer than ``limit_s``.
    """
    import time

    import cv2

    mpp0 = slide.mpp_info.mean
    w0, h0 = slide.dimensions
    mpp = effective_mask_mpp(mpp0, (w0, h0), mask_mpp)
    out_w = max(1, round(w0 * mpp0 / mpp))
    out_h = max(1, round(h0 * mpp0 / mpp))
    level = slide.best_level_for_mpp(mpp)
    lw, lh = slide.level_dimensions[level]
    if lw * lh <= STRIP_BUDGET_PX or lh <= 1:
        rgb = slide.read_level(level)
        if (lw, lh) != (out_w, out_h):
            rgb = cv2.resize(rgb, (out_w, out_h), interpolation=cv2.INTER_AREA)
        strips = 1
    else:
        rgb = np.empty((out_h, out_w, 3), np.uint8)
        down = slide.level_downsamples[level]
        fy = lh / out_h  # level rows per mask row
        rows_per_strip = max(1, int(STRIP_BUDGET_PX / (lw * fy)))
        strips = 0
        started = time.monotonic()
        for r0 in range(0, out_h, rows_per_strip):
            if time.monotonic() - started > limit_s:
                from wsi_ncmi.errors import SlideOpenError

                raise SlideOpenError(
                    f"slide {str(slide.path)!r}: reading its tissue mask from level {level} "
                    f"({lw} x {lh} px) took over {limit_s:.0f} s ({strips} of "
                    f"{math.ceil(out_h / rows_per_strip)} strips); the slide has no pyramid "
                    "level near the mask resolution, or claims more pixels than it holds: "
                    "re-export it with a pyramid"
                )
            r1 = min(out_h, r0 + rows_per_strip)
            y0, y1 = math.floor(r0 * fy), min(lh, math.ceil(r1 * fy))
            strip = slide.read_region((0, round(y0 * down)), level, (lw, max(1, y1 - y0)))
            rgb[r0:r1] = cv2.resize(strip, (out_w, r1 - r0), interpolation=cv2.INTER_AREA)
            strips += 1
    return MaskImage(rgb, mpp, (w0 / out_w, h0 / out_h), level, strips)


def otsu_threshold(values: np.ndarray, where: np.ndarray | None = None) -> int:
    """Otsu threshold (0–255) of uint8 ``values`` (only where ``where`` is non-zero).

    Returns 255 when the values are all equal.
    """
    import cv2

    img = np.ascontiguousarray(
        values.reshape(values.shape[0], -1) if values.ndim > 1 else values[None]
    )
    sel = None if where is None else np.ascontiguousarray(where.reshape(img.shape)).astype(np.uint8)
    hist = cv2.calcHist([img], [0], sel, [256], [0, 256]).ravel().astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 255
    bins = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * bins)
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0 * total) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    if between.max() <= 0:
        return 255
    return int(np.argmax(between))


def _odd(px: float, lo: int = 1, hi: int = 255) -> int:
    k = round(px)
    k = min(max(k, lo), hi)
    return k if k % 2 else k + 1


def _morph(mask: np.ndarray, op: str, diameter_px: float) -> np.ndarray:
    """Binary dilate/erode/close/open by a disk, via distance transforms.

    Small disks use ``cv2.morphologyEx``; large ones distance transforms, whose cost does
    not grow with the disk size.
    """
    import cv2

    radius = diameter_px / 2
    if radius < 1:
        return mask
    if diameter_px <= 15:
        k = round(diameter_px) | 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        ops = {"dilate": cv2.MORPH_DILATE, "erode": cv2.MORPH_ERODE}
        ops.update({"close": cv2.MORPH_CLOSE, "open": cv2.MORPH_OPEN})
        return cv2.morphologyEx(mask, ops[op], kernel)
    if op == "dilate":
        return (cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5) <= radius).astype(np.uint8)
    if op == "erode":
        return (cv2.distanceTransform(mask, cv2.DIST_L2, 5) > radius).astype(np.uint8)
    if op == "close":
        return _morph(_morph(mask, "dilate", diameter_px), "erode", diameter_px)
    return _morph(_morph(mask, "erode", diameter_px), "dilate", diameter_px)


def artifact_mask(rgb: np.ndarray, hsv: np.ndarray, params: TissueParams) -> np.ndarray:
    """Pen ink and black artifacts (bool ``(H, W)``).

    Green ink: hue 70°–190°, saturated. Blue ink: hue 190°–235° (blue above red *and*
    green above red), saturated and not dark-purple; hematoxylin stays above 240°
    because its red exceeds its green. Black: HSV value below ``black_value``.
    """
    import cv2

    out: np.ndarray = np.zeros(hsv.shape[:2], np.uint8)
    if params.reject_pen:
        # OpenCV hue is degrees / 2; bounds are inclusive.
        green = cv2.inRange(hsv, (35, 61, 41), (94, 255, 255))
        blue = cv2.inRange(hsv, (95, 91, 41), (117, 255, 255))
        out = cv2.bitwise_or(out, cv2.bitwise_or(green, blue))
    if params.reject_black:
        dark = cv2.inRange(np.ascontiguousarray(hsv[..., 2]), 0, params.black_value - 1)
        out = cv2.bitwise_or(out, dark)
    return np.asarray(out) > 0


def filter_by_area(mask: np.ndarray, min_piece_px: float, max_hole_px: float | None) -> np.ndarray:
    """Drop tissue pieces below ``min_piece_px`` and fill holes below ``max_hole_px``.

    Works on contours (areas by the shoelace formula), not on per-pixel labels, so its
    cost grows with the length of the tissue outline rather than with the image size.
    ``max_hole_px=None`` fills every hole.
    """
    import cv2

    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return mask
    out = mask.copy()
    parents = hierarchy[0][:, 3]
    areas = np.array([cv2.contourArea(c) for c in contours])
    outer = parents == -1
    small = [contours[int(i)] for i in np.nonzero(outer & (areas < min_piece_px))[0]]
    holes = ~outer if max_hole_px is None else ~outer & (areas < max_hole_px)
    # A hole is filled only if its piece is kept.
    holes &= ~np.isin(parents, np.nonzero(outer & (areas < min_piece_px))[0])
    fill = [contours[int(i)] for i in np.nonzero(holes)[0]]
    if small:
        cv2.drawContours(out, small, -1, 0, thickness=cv2.FILLED)
    if fill:
        cv2.drawContours(out, fill, -1, 1, thickness=cv2.FILLED)
    return out


def detect_tissue(rgb: np.ndarray, mpp: float, params: TissueParams) -> TissueMask:
    """Segment tissue in an RGB image at ``mpp`` µm/px (pure function).

    Args:
        rgb: ``(H, W, 3)`` uint8 image of the whole slide.
        mpp: Its resolution in µm/px (converts µm and µm² parameters to pixels).
        params: Segmentation parameters.

    Returns:
        The binary mask, the rejected artifacts and the threshold used.
    """
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    blur = _odd(params.blur_um / mpp, lo=1, hi=31)
    artifacts = artifact_mask(rgb, hsv, params)
    if artifacts.any():
        # Ink strokes and black smudges are large; dark nuclei and stray dye specks are not.
        artifacts = _morph(artifacts.astype(np.uint8), "open", params.blur_um / mpp) > 0
    sat = hsv[..., 1]
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if blur > 1:
        sat = cv2.medianBlur(sat, blur)
        gray = cv2.medianBlur(gray, blur)
    # OD of the luminance; tissue is darker than 255 * 10**-min_od.
    max_gray = 256.0 * 10.0 ** (-params.min_od) - 1.0
    if params.saturation_threshold is not None:
        threshold = int(params.saturation_threshold)
    else:
        where = (~artifacts).view(np.uint8) if artifacts.any() else None
        threshold = max(params.min_saturation, otsu_threshold(sat, where))
    mask = ((sat > threshold) & (gray <= max_gray) & ~artifacts).astype(np.uint8)
    mask = _morph(mask, "close", params.close_um / mpp)
    mask = _morph(mask, "open", params.open_um / mpp)
    px_area = mpp * mpp
    max_hole = None if params.fill_holes else params.min_hole_area_um2 / px_area
    mask = filter_by_area(mask, params.min_tissue_area_um2 / px_area, max_hole)
    if artifacts.any():
        mask &= 1 - _morph(artifacts.astype(np.uint8), "dilate", params.open_um / mpp)
        mask = filter_by_area(mask, params.min_tissue_area_um2 / px_area, 0.0)
    return TissueMask(mask, artifacts, threshold, "otsu")
