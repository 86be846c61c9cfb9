"""Lymph-node-like tissue: section outlines, fat, vessels, follicles and lymphocytes.

:func:`plan_tissue` draws the geometry of a slide once (all in level-0 pixels, from the
slide's random generator); :func:`render_tissue` paints any band of rows as hematoxylin and
eosin concentrations. Nuclei are blurred impulses shaped by a soft threshold, so dense
lymphocytes form the dark, grainy carpet typical of a node at patch scale, follicles show
paler germinal centres with larger cells, and perinodal fat shows empty adipocytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import Voronoi

from wsi_ncmi.synth.fields import SmoothField, cell_size_px, random_field
from wsi_ncmi.synth.geometry import blob_polygon, points_in_polygon, snap
from wsi_ncmi.synth.raster import as_float32 as _f32
from wsi_ncmi.synth.raster import fill_polygons, nuclei_field

FloatArray = NDArray[np.float32]
Polygon = NDArray[np.float64]

LYMPHOCYTE_RADIUS_UM = 3.2
LARGE_CELL_RADIUS_UM = 4.6


@dataclass(frozen=True)
class Vessel:
    """An elliptical vessel: wall ring and lumen, in level-0 pixels."""

    center: tuple[float, float]
    axes: tuple[float, float]
    wall_px: float
    angle_deg: float


@dataclass(frozen=True)
class TissueLayout:
    """The geometry of a slide's tissue, in level-0 pixels.

    Attributes:
        sections: Outline polygons of the tissue sections (the tissue ground truth).
        fat_zones: Polygons; tissue inside them is fat.
        adipocytes: Interiors of fat cells (drawn empty).
        vessels: Vessels inside the sections.
        lymphocytes: ``(N, 3)`` rows ``(x, y, amplitude)`` sorted by y.
        large_cells: ``(M, 3)`` larger, paler nuclei (germinal centres, histiocytes).
        red_cells: ``(K, 2)`` red blood cell centres inside vessel lumens.
        eosin_field: Smooth field modulating the stroma eosin.
        fibre_field: Streaky field giving fibrous texture.
    """

    sections: tuple[Polygon, ...]
    fat_zones: tuple[Polygon, ...]
    adipocytes: tuple[Polygon, ...]
    vessels: tuple[Vessel, ...]
    lymphocytes: NDArray[np.float64]
    large_cells: NDArray[np.float64]
    red_cells: NDArray[np.float64]
    eosin_field: SmoothField
    fibre_field: SmoothField


def _fit_inside(poly: Polygon, size_px: tuple[int, int], margin: float) -> Polygon:
    """Shrink a polygon about its centroid until it lies inside the slide with a margin."""
    centre = poly.mean(axis=0)
    lo = np.array([margin, margin])
    hi = np.array([size_px[0] - margin, size_px[1] - margin])
    for _ in range(40):
        if np.all(poly >= lo) and np.all(poly <= hi):
            break
        poly = centre + (poly - centre) * 0.93
    return poly


def _overlaps(poly: Polygon, others: list[Polygon], gap: float) -> bool:
    """Whether ``poly`` (grown by ``gap``) touches any of ``others``."""
    centre = poly.mean(axis=0)
    grown = centre + (poly - centre) * (1.0 + gap)
    for other in others:
        if points_in_polygon(grown, other).any() or points_in_polygon(other, grown).any():
            return True
    return False


def _sections(rng: np.random.Generator, size_px: tuple[int, int]) -> list[Polygon]:
    width, height = size_px
    margin = 0.04 * min(width, height)
    main = blob_polygon(
        rng,
        (width * rng.uniform(0.42, 0.58), height * rng.uniform(0.42, 0.58)),
        (width * rng.uniform(0.32, 0.40), height * rng.uniform(0.32, 0.40)),
        angle=rng.uniform(-0.3, 0.3),
        roughness=0.18,
    )
    sections = [_fit_inside(main, size_px, margin)]
    n_extra = int(rng.choice([0, 1, 2], p=[0.55, 0.3, 0.15]))
    for _ in range(30 * n_extra):
        if len(sections) > n_extra:
            break
        radius = min(width, height) * rng.uniform(0.07, 0.13)
        extra = blob_polygon(
            rng,
            (
                rng.uniform(margin + radius, width - margin - radius),
                rng.uniform(margin + radius, height - margin - radius),
            ),
            (radius * rng.uniform(0.8, 1.3), radius),
            angle=rng.uniform(0.0, np.pi),
            roughness=0.2,
            n_vertices=64,
        )
        extra = _fit_inside(extra, size_px, margin)
        if not _overlaps(extra, sections, 0.1):
            sections.append(extra)
    return [snap(p) for p in sections]


def _jittered_grid(
    rng: np.random.Generator, box: tuple[float, float, float, float], spacing: float, jitter: float
) -> NDArray[np.float64]:
    x0, y0, x1, y1 = box
    xs = np.arange(x0, x1, spacing)
    ys = np.arange(y0, y1, spacing)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    # Offset every other row by half a cell: a near-hexagonal packing.
    odd_rows = (np.round((grid[:, 1] - y0) / spacing).astype(np.int64) % 2) == 1
    grid[odd_rows, 0] += spacing / 2
    return grid + rng.uniform(-jitter, jitter, size=grid.shape) * spacing


def _fat(
    rng: np.random.Generator, sections: list[Polygon], mpp: float
) -> tuple[list[Polygon], list[Polygon]]:
    zones: list[Polygon] = []
    cells: list[Polygon] = []
    for section in sections:
        if rng.random() > 0.7:
            continue
        extent = section.max(axis=0) - section.min(axis=0)
        anchor = section[rng.integers(len(section))]
        radius = float(extent.min()) * rng.uniform(0.15, 0.28)
        zone = snap(
            blob_polygon(
                rng,
                (anchor[0], anchor[1]),
                (radius, radius * 0.8),
                angle=rng.uniform(0, np.pi),
                roughness=0.2,
                n_vertices=64,
            )
        )
        zones.append(zone)
        spacing = rng.uniform(55.0, 85.0) / mpp
        lo = zone.min(axis=0) - 2 * spacing
        hi = zone.max(axis=0) + 2 * spacing
        seeds = _jittered_grid(rng, (lo[0], lo[1], hi[0], hi[1]), spacing, 0.3)
        diagram = Voronoi(seeds)
        membrane = 1.2 / mpp
        keep = points_in_polygon(seeds, zone)
        for index in np.flatnonzero(keep):
            region = diagram.regions[diagram.point_region[index]]
            if not region or -1 in region:
                continue
            vertices = diagram.vertices[region]
            centre = seeds[index]
            shrink = max(0.0, 1.0 - membrane / (spacing / 2))
            cells.append(snap(centre + (vertices - centre) * shrink))
    return zones, cells


def _vessels(
    rng: np.random.Generator, sections: list[Polygon], mpp: float
) -> tuple[list[Vessel], NDArray[np.float64]]:
    vessels: list[Vessel] = []
    red: list[NDArray[np.float64]] = []
    for section in sections:
        lo, hi = section.min(axis=0), section.max(axis=0)
        for _ in range(int(rng.integers(1, 5))):
            centre = rng.uniform(lo, hi)
            if not points_in_polygon(centre[None], section)[0]:
                continue
            long_px = rng.uniform(15.0, 70.0) / mpp
            axes = (long_px, long_px * rng.uniform(0.25, 0.7))
            vessel = Vessel(
                center=(float(centre[0]), float(centre[1])),
                axes=(float(axes[0]), float(axes[1])),
                wall_px=rng.uniform(3.0, 9.0) / mpp,
                angle_deg=float(rng.uniform(0, 180)),
            )
            vessels.append(vessel)
            n_red = int(rng.uniform(0.0, 0.6) * axes[0] * axes[1] * mpp**2 / 20.0)
            radius = rng.uniform(0, 1, n_red) ** 0.5
            phi = rng.uniform(0, 2 * np.pi, n_red)
            inner = (max(axes[0] - vessel.wall_px, 1.0), max(axes[1] - vessel.wall_px, 1.0))
            lx, ly = inner[0] * radius * np.cos(phi), inner[1] * radius * np.sin(phi)
            a = np.deg2rad(vessel.angle_deg)
            red.append(
                np.stack(
                    [
                        centre[0] + lx * np.cos(a) - ly * np.sin(a),
                        centre[1] + lx * np.sin(a) + ly * np.cos(a),
                    ],
                    axis=1,
                )
            )
    red_cells = np.concatenate(red) if red else np.zeros((0, 2))
    return vessels, red_cells


def _density(
    rng: np.random.Generator,
    sections: list[Polygon],
    size_px: tuple[int, int],
    mpp: float,
    size_scale: float,
) -> tuple[SmoothField, SmoothField]:
    """Lymphocyte density (0–1) and germinal-centre indicator, as smooth fields."""
    cell = cell_size_px(16.0, mpp)
    base = random_field(rng, size_px, cell, smooth_cells=6.0)
    sinus = random_field(rng, size_px, cell, smooth_cells=3.0, anisotropy=2.5)
    density = 0.8 + 0.1 * base.grid - 0.45 * np.clip(sinus.grid - 0.9, 0.0, 1.0)
    germinal = np.zeros_like(density)
    rows, cols = density.shape
    gy, gx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    gx = (gx + 0.5) * cell
    gy = (gy + 0.5) * cell
    radius_scale = 2.0 * math.sqrt(size_scale)
    for section in sections:
        centre = section.mean(axis=0)
        for _ in range(int(rng.integers(2, 8))):
            edge = section[rng.integers(len(section))]
            radius = rng.uniform(110.0, 240.0) * radius_scale / mpp
            inward = centre - edge
            inward /= max(float(np.linalg.norm(inward)), 1e-6)
            fx, fy = edge + inward * radius * rng.uniform(1.3, 1.8)
            dist = np.hypot(gx - fx, gy - fy) / radius
            density = np.where(dist < 1.0, np.maximum(density, 1.0), density)
            germinal = np.maximum(germinal, np.clip((0.62 - dist) * 6.0, 0.0, 1.0))
    density = np.clip(density - 0.6 * germinal, 0.05, 1.0)
    return (
        SmoothField(density.astype(np.float32), cell),
        SmoothField(germinal.astype(np.float32), cell),
    )


def plan_tissue(
    rng: np.random.Generator, size_px: tuple[int, int], mpp: float, size_scale: float
) -> TissueLayout:
    """Draw the tissue geometry of one slide.

    Args:
        rng: The slide's random generator.
        size_px: ``(width, height)`` at level 0.
        mpp: Level-0 µm/px.
        size_scale: Preset scale of sections relative to CAMELYON (changes follicle sizes).

    Returns:
        The tissue layout.
    """
    sections = _sections(rng, size_px)
    fat_zones, adipocytes = _fat(rng, sections, mpp)
    vessels, red_cells = _vessels(rng, sections, mpp)
    density, germinal = _density(rng, sections, size_px, mpp, size_scale)

    lo = np.min([s.min(axis=0) for s in sections], axis=0)
    hi = np.max([s.max(axis=0) for s in sections], axis=0)
    box = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
    lymph = _jittered_grid(rng, box, 7.4 / mpp, 0.3)
    keep = rng.random(len(lymph)) < density.sample(lymph)
    lymph = lymph[keep]
    amp = rng.normal(1.0, 0.12, size=(len(lymph), 1))
    large = _jittered_grid(rng, box, 11.0 / mpp, 0.35)
    p_large = 0.03 + 0.7 * germinal.sample(large)
    large = large[rng.random(len(large)) < p_large]
    large_amp = rng.normal(1.0, 0.15, size=(len(large), 1))

    def by_y(points: NDArray[np.float64]) -> NDArray[np.float64]:
        return points[np.argsort(points[:, 1], kind="stable")]

    return TissueLayout(
        sections=tuple(sections),
        fat_zones=tuple(fat_zones),
        adipocytes=tuple(adipocytes),
        vessels=tuple(vessels),
        lymphocytes=by_y(np.hstack([lymph, amp])),
        large_cells=by_y(np.hstack([large, large_amp])),
        red_cells=red_cells,
        eosin_field=random_field(rng, size_px, cell_size_px(24.0, mpp), smooth_cells=2.0),
        fibre_field=random_field(
            rng,
            size_px,
            cell_size_px(3.0, mpp),
            smooth_cells=1.2,
            anisotropy=float(rng.choice([0.3, 3.0])),
        ),
    )


def _vessel_masks(
    layout: TissueLayout, y0: int, shape: tuple[int, int]
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    rows = shape[0]
    wall = np.zeros(shape, dtype=np.uint8)
    lumen = np.zeros(shape, dtype=np.uint8)
    for vessel in layout.vessels:
        if abs(vessel.center[1] - (y0 + rows / 2)) > rows / 2 + vessel.axes[0] + 2:
            continue
        centre = (round(vessel.center[0] * 16), round((vessel.center[1] - y0) * 16))
        outer = (round(vessel.axes[0] * 16), round(vessel.axes[1] * 16))
        inner = (
            round(max(vessel.axes[0] - vessel.wall_px, 1) * 16),
            round(max(vessel.axes[1] - vessel.wall_px, 1) * 16),
        )
        cv2.ellipse(wall, centre, outer, vessel.angle_deg, 0, 360, 1, -1, cv2.LINE_8, 4)
        cv2.ellipse(lumen, centre, inner, vessel.angle_deg, 0, 360, 1, -1, cv2.LINE_8, 4)
    return wall, lumen


def render_tissue(
    layout: TissueLayout,
    y0: int,
    shape: tuple[int, int],
    mpp: float,
    grain: FloatArray,
) -> tuple[FloatArray, FloatArray, NDArray[np.uint8]]:
    """Paint the tissue of level-0 rows ``[y0, y0 + rows)`` as stain concentrations.

    Args:
        layout: The slide's tissue layout.
        y0: First level-0 row.
        shape: ``(rows, cols)`` of the band.
        mpp: Level-0 µm/px.
        grain: Fine uniform noise in ``[0, 1)`` of the band's shape (chromatin texture).

    Returns:
        ``(hematoxylin, eosin, tissue_mask)`` float32, float32, uint8 arrays.
    """
    rows, cols = shape
    tissue = fill_polygons(shape, layout.sections, y0)
    if not tissue.any():
        zeros = np.zeros(shape, dtype=np.float32)
        return zeros, zeros.copy(), tissue
    fat = fill_polygons(shape, layout.fat_zones, y0) & tissue
    empty = fill_polygons(shape, layout.adipocytes, y0) & fat
    wall, lumen = _vessel_masks(layout, y0, shape)
    wall &= tissue
    lumen &= tissue
    # 1 where lymphoid tissue may show nuclei (not fat, not vessel), else 0.
    keep = tissue & ~(fat | wall) & 1

    lymph = nuclei_field(layout.lymphocytes, y0, shape, LYMPHOCYTE_RADIUS_UM / mpp)
    large = nuclei_field(layout.large_cells, y0, shape, LARGE_CELL_RADIUS_UM / mpp)
    # OpenCV's element-wise kernels are several times faster than numpy's here.
    hema = _f32(cv2.max(lymph * np.float32(1.15), large * np.float32(0.6)))
    hema = _f32(cv2.multiply(hema, cv2.addWeighted(grain, 0.5, grain, 0.0, 0.75)))
    hema += np.float32(0.07)
    hema = _f32(cv2.multiply(hema, keep, dtype=cv2.CV_32F))

    fibre = np.maximum(layout.fibre_field.rows(y0, y0 + rows, cols), np.float32(0.0))
    eosin = layout.eosin_field.rows(y0, y0 + rows, cols)
    eosin = _f32(cv2.addWeighted(eosin, 0.06, fibre, 0.12, 0.2))
    eosin = _f32(cv2.multiply(eosin, cv2.addWeighted(lymph, -0.5, lymph, 0.0, 1.0)))
    np.copyto(eosin, np.float32(0.5), where=fat.view(bool))
    np.copyto(eosin, np.float32(0.75), where=wall.view(bool))
    wall_only = (wall & ~lumen & 1).astype(np.float32)
    hema += wall_only * np.float32(0.12)
    hollow = (empty | lumen).view(bool)
    np.copyto(eosin, np.float32(0.0), where=hollow)
    np.copyto(hema, np.float32(0.0), where=hollow)
    if len(layout.red_cells):
        red = np.zeros(shape, dtype=np.uint8)
        radius = max(1, round(3.4 / mpp * 16))
        near = np.abs(layout.red_cells[:, 1] - (y0 + rows / 2)) < rows / 2 + radius / 16 + 1
        for x, y in layout.red_cells[near]:
            cv2.circle(red, (round(x * 16), round((y - y0) * 16)), radius, 1, -1, cv2.LINE_8, 4)
        np.copyto(eosin, np.float32(1.1), where=(red & lumen).view(bool))
    eosin = _f32(cv2.multiply(eosin, tissue, dtype=cv2.CV_32F))
    return hema, eosin, tissue
