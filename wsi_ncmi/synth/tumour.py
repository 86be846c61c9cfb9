"""Metastases: irregular regions packed with large, hyperchromatic, pleomorphic nuclei.

The main region's largest diameter follows the slide label under the CAMELYON-17 rule
(see :mod:`wsi_ncmi.synth.presets`); ITC slides get one to three tiny clusters, micro and
macro slides may get extra ITC-sized satellites. Inside a region the lymphoid tissue is
replaced by metastatic carcinoma cells as a pathologist sees them: crowded, often
overlapping nuclei 11–17 µm across (about twice a lymphocyte's, four times its area),
hyperchromatic with coarse chromatin, a dark nuclear rim and a prominent nucleolus, with
variable size and shape, on scant, weakly eosinophilic (amphophilic) cytoplasm.

The tumour differs from the node by *morphology* (nuclear size, crowding, texture) as
well as by colour. Generator version 1 painted it as pale nuclei on pink cytoplasm, a
colour shift along the same axis as the hospitals' stain gains, so a tumour direction
learnt on four hospitals mislabelled whole slides of the fifth (BENCHMARKS.md, demo
section). Everything is clipped to the region polygons, so the image and the ground truth
agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.synth.fields import SmoothField, cell_size_px, random_field
from wsi_ncmi.synth.geometry import (
    SUBPIXEL_SHIFT,
    blob_polygon,
    largest_diameter,
    points_in_polygon,
    snap,
    to_fixed,
)
from wsi_ncmi.synth.presets import NOMINAL_DIAMETER_RANGE_UM
from wsi_ncmi.synth.tissue import TissueLayout

FloatArray = NDArray[np.float32]
Polygon = NDArray[np.float64]

_TONE_LEVELS = np.array([0.0, 0.95, 1.1, 1.25, 1.4], dtype=np.float32)
_NUCLEUS_VERTICES = 12


@dataclass(frozen=True)
class TumourLayout:
    """Tumour geometry of a slide, in level-0 pixels (empty for negative slides).

    Attributes:
        regions: Region polygons (the tumour ground truth).
        nuclei: ``(N, 12, 2)`` nucleus outlines.
        nuclei_tone: ``(N,)`` tone bin 1–4 (hematoxylin level) of each nucleus.
        nucleoli: ``(N, 3)`` rows ``(x, y, radius)``.
        cytoplasm_field: Smooth field modulating the cytoplasm eosin.
    """

    regions: tuple[Polygon, ...]
    nuclei: NDArray[np.float64]
    nuclei_tone: NDArray[np.int64]
    nucleoli: NDArray[np.float64]
    cytoplasm_field: SmoothField | None


def _region(rng: np.random.Generator, diameter_px: float, centre: NDArray[np.float64]) -> Polygon:
    n_vertices = 32 if diameter_px < 80 else 96
    poly = blob_polygon(
        rng,
        (float(centre[0]), float(centre[1])),
        (diameter_px / 2, diameter_px / 2 * rng.uniform(0.55, 1.0)),
        angle=rng.uniform(0, np.pi),
        roughness=0.3,
        n_vertices=n_vertices,
    )
    middle = poly.mean(axis=0)
    poly = middle + (poly - middle) * (diameter_px / largest_diameter(poly))
    return snap(poly)


def _place(
    rng: np.random.Generator,
    diameter_px: float,
    tissue: TissueLayout,
    taken: list[Polygon],
) -> Polygon | None:
    """Find a spot inside a section, away from fat and other tumour regions."""
    sections = sorted(tissue.sections, key=lambda s: -float(np.ptp(s[:, 0]) * np.ptp(s[:, 1])))
    for attempt in range(300):
        section = (
            sections[0]
            if attempt < 200 or len(sections) == 1
            else sections[int(rng.integers(len(sections)))]
        )
        centre = rng.uniform(section.min(axis=0), section.max(axis=0))
        poly = _region(rng, diameter_px, centre)
        middle = poly.mean(axis=0)
        guard = middle + (poly - middle) * 1.08
        if not points_in_polygon(guard, section).all():
            continue
        if any(points_in_polygon(guard, z).any() for z in tissue.fat_zones):
            continue
        if any(
            points_in_polygon(guard, t).any() or points_in_polygon(t, guard).any() for t in taken
        ):
            continue
        return poly
    return None


def _diameters_nominal(
    rng: np.random.Generator,
    label: str,
    ranges: dict[str, tuple[float, float]],
    itc_clusters: tuple[int, int],
) -> list[float]:
    def draw(name: str) -> float:
        lo, hi = ranges[name]
        return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))

    if label == "negative":
        return []
    if label == "itc":
        return [draw("itc") for _ in range(int(rng.integers(*itc_clusters)))]
    return [draw(label)] + [draw("itc") for _ in range(int(rng.integers(0, 3)))]


def _nuclei(
    rng: np.random.Generator, regions: list[Polygon], mpp: float
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]:
    outlines: list[NDArray[np.float64]] = []
    for poly in regions:
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        spacing = 11.5 / mpp  # crowded: neighbouring nuclei touch or overlap
        xs = np.arange(lo[0], hi[0] + spacing, spacing)
        ys = np.arange(lo[1], hi[1] + spacing, spacing)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        grid += rng.uniform(-0.3, 0.3, size=grid.shape) * spacing
        centres = grid[points_in_polygon(grid, poly)]
        if len(centres) == 0:
            centres = poly.mean(axis=0, keepdims=True)
        outlines.append(centres)
    centres = np.concatenate(outlines)
    n = len(centres)
    theta = np.linspace(0, 2 * np.pi, _NUCLEUS_VERTICES, endpoint=False)
    radius = rng.uniform(5.5, 8.5, size=(n, 1)) / mpp
    elongation = rng.uniform(1.0, 1.6, size=(n, 1))
    wobble = 1.0 + rng.normal(0.0, 0.1, size=(n, _NUCLEUS_VERTICES))
    wobble += 0.12 * np.cos(2 * theta + rng.uniform(0, 2 * np.pi, size=(n, 1)))
    angle = rng.uniform(0, np.pi, size=(n, 1))
    lx = radius * elongation * wobble * np.cos(theta)
    ly = radius / elongation * wobble * np.sin(theta)
    xs = centres[:, :1] + lx * np.cos(angle) - ly * np.sin(angle)
    ys = centres[:, 1:] + lx * np.sin(angle) + ly * np.cos(angle)
    nuclei = np.stack([xs, ys], axis=-1)
    tone = rng.integers(1, 5, size=n)
    offset = rng.normal(0.0, 0.25, size=(n, 2)) * radius
    nucleoli = np.hstack([centres + offset, rng.uniform(0.7, 1.3, size=(n, 1)) / mpp])
    order = np.argsort(nuclei[:, :, 1].min(axis=1), kind="stable")
    return nuclei[order], tone[order], nucleoli[np.argsort(nucleoli[:, 1], kind="stable")]


def plan_tumour(
    rng: np.random.Generator,
    label: str,
    tissue: TissueLayout,
    mpp: float,
    size_scale: float,
    size_px: tuple[int, int],
    diameter_range_um: dict[str, tuple[float, float]] | None = None,
    itc_clusters: tuple[int, int] = (1, 4),
) -> TumourLayout:
    """Draw the metastases of one slide.

    Args:
        rng: The slide's random generator.
        label: Slide label (negative, itc, micro, macro).
        tissue: Tissue layout the tumour must sit in.
        mpp: Level-0 µm/px.
        size_scale: Preset scale; physical diameter = nominal × ``size_scale``.
        size_px: ``(width, height)`` at level 0.
        diameter_range_um: Nominal diameter range per label (default
            :data:`~wsi_ncmi.synth.presets.NOMINAL_DIAMETER_RANGE_UM`).
        itc_clusters: An ITC slide gets ``low`` to ``high - 1`` clusters.

    Returns:
        The tumour layout.

    Raises:
        ConfigError: If a region of the drawn size cannot be placed in the tissue.
    """
    regions: list[Polygon] = []
    ranges = NOMINAL_DIAMETER_RANGE_UM if diameter_range_um is None else diameter_range_um
    for index, nominal in enumerate(_diameters_nominal(rng, label, ranges, itc_clusters)):
        diameter_px = nominal * size_scale / mpp
        poly = _place(rng, diameter_px, tissue, regions)
        if poly is None:
            if index == 0:
                msg = (
                    f"could not place a {label} region of {nominal * size_scale:.0f} µm "
                    "in the tissue; use larger slides (preset width_um/height_um)"
                )
                raise ConfigError(msg)
            continue
        regions.append(poly)
    if not regions:
        empty = np.zeros((0, _NUCLEUS_VERTICES, 2))
        return TumourLayout((), empty, np.zeros(0, np.int64), np.zeros((0, 3)), None)
    nuclei, tone, nucleoli = _nuclei(rng, regions, mpp)
    field = random_field(rng, size_px, cell_size_px(20.0, mpp), smooth_cells=1.5)
    return TumourLayout(tuple(regions), nuclei, tone, nucleoli, field)


def render_tumour(
    layout: TumourLayout,
    y0: int,
    hema: FloatArray,
    eosin: FloatArray,
    mpp: float,
    grain: FloatArray,
) -> None:
    """Paint the tumour of a band into its stain maps, in place.

    Only the bounding box of the regions crossing the band is touched.

    Args:
        layout: The slide's tumour layout.
        y0: First level-0 row of the band.
        hema: Hematoxylin concentrations of the band (modified).
        eosin: Eosin concentrations of the band (modified).
        mpp: Level-0 µm/px.
        grain: Fine uniform noise in ``[0, 1)`` of the band's shape.
    """
    rows, cols = hema.shape
    regions = [p for p in layout.regions if p[:, 1].max() >= y0 and p[:, 1].min() < y0 + rows]
    if layout.cytoplasm_field is None or not regions:
        return
    lo = np.min([p.min(axis=0) for p in regions], axis=0)
    hi = np.max([p.max(axis=0) for p in regions], axis=0)
    x0, x1 = max(0, int(lo[0]) - 1), min(cols, int(np.ceil(hi[0])) + 2)
    r0, r1 = max(0, int(lo[1]) - 1 - y0), min(rows, int(np.ceil(hi[1])) + 2 - y0)
    if x1 <= x0 or r1 <= r0:
        return
    window = (r1 - r0, x1 - x0)
    wy0 = y0 + r0
    origin = (float(x0), float(wy0))
    mask = np.zeros(window, dtype=np.uint8)
    cv2.fillPoly(
        mask, [to_fixed(p, origin) for p in regions], 1, lineType=cv2.LINE_8, shift=SUBPIXEL_SHIFT
    )
    y_min = layout.nuclei[:, :, 1].min(axis=1)
    y_max = layout.nuclei[:, :, 1].max(axis=1)
    visible = np.flatnonzero((y_max >= wy0) & (y_min < wy0 + window[0]))
    tone = np.zeros(window, dtype=np.uint8)
    for level in range(1, 5):
        chosen = visible[layout.nuclei_tone[visible] == level]
        if len(chosen):
            cv2.fillPoly(
                tone,
                list(to_fixed(layout.nuclei[chosen], origin)),
                level,
                lineType=cv2.LINE_8,
                shift=SUBPIXEL_SHIFT,
            )
    inside = (tone > 0).astype(np.uint8)
    rim_px = max(1, round(1.4 / mpp))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim_px + 1, 2 * rim_px + 1))
    rim = inside - cv2.erode(inside, kernel)
    dots = np.zeros(window, dtype=np.uint8)
    centre_y = wy0 + window[0] / 2
    near = np.abs(layout.nucleoli[:, 1] - centre_y) < window[0] / 2 + 10.0 / mpp
    for x, y, radius in layout.nucleoli[near]:
        cv2.circle(
            dots,
            (round((x - x0) * 16), round((y - wy0) * 16)),
            max(1, round(radius * 16)),
            1,
            -1,
            cv2.LINE_8,
            4,
        )
    dots &= inside

    texture = grain[r0:r1, x0:x1]
    # Coarse chromatin: the grain, squared, gives dark clumps on a lighter nucleoplasm.
    tumour_hema = _TONE_LEVELS[tone] * (0.55 + 0.9 * texture * texture)
    tumour_hema += 0.35 * rim + 0.5 * dots + 0.12
    tumour_eosin = layout.cytoplasm_field.rows(wy0, wy0 + window[0], x1)[:, x0:]
    tumour_eosin = tumour_eosin * 0.03 + 0.13 - 0.05 * inside
    region = mask.view(bool)
    np.copyto(hema[r0:r1, x0:x1], tumour_hema, where=region)
    np.copyto(eosin[r0:r1, x0:x1], tumour_eosin, where=region)
