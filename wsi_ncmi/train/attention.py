"""Attention export: top-k patches per slide, heatmap PNGs, attention mass on true tumour.

Everything is computed from the patch coordinates stored in the features files: nothing is
re-extracted. The heatmap accumulates attention on a grid of one cell per patch stride
(coarsened so that no side exceeds ``max_cells``), so memory is bounded by the grid, not by
the slide. It is drawn over the slide thumbnail when the slide file is found under
``slide_dir`` (``center_K/<slide_id>.tif``, the CAMELYON layout).

When the synthetic generator's ground truth ``<slide>.gt.json`` lies beside the slide, the
attention mass on tumour is the sum of the attention of patches whose centre lies inside a
tumour polygon (level-0 pixels); ``tumour_patch_fraction`` is what uniform attention gets.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.errors import CacheSchemaError
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.train.attention_summary import AttentionSummary, SlideTumourAttention
from wsi_ncmi.train.report import save_png


def read_patch_coords(path: Path) -> NDArray[np.int64]:
    """Level-0 ``(n, 2)`` coordinates of the valid rows of a features file (the bag order).

    Raises:
        CacheSchemaError: The file lacks ``coords``/``valid``.
    """
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            coords = np.asarray(h5["coords"][()], dtype=np.int64)
            valid = np.asarray(h5["valid"][()], dtype=bool)
    except (OSError, KeyError) as err:
        raise CacheSchemaError(f"cannot read coords/valid of {str(path)!r}: {err}") from err
    return coords if valid.all() else coords[valid]


def patch_stride(coords: NDArray[np.int64]) -> int:
    """Grid stride of the patches: the smallest positive gap between distinct x or y."""
    gaps = []
    for axis in (0, 1):
        values = np.unique(coords[:, axis])
        if len(values) > 1:
            gaps.append(int(np.diff(values).min()))
    return min(gaps) if gaps else 1


def tumour_mask(
    coords: NDArray[np.int64], patch_size: int, polygons: Sequence[Sequence[Sequence[float]]]
) -> NDArray[np.bool_]:
    """Patches whose centre lies inside any polygon (level-0 pixels)."""
    from matplotlib.path import Path as PolygonPath

    centres = coords.astype(np.float64) + patch_size / 2.0
    inside = np.zeros(len(coords), dtype=bool)
    for polygon in polygons:
        if len(polygon) >= 3:
            inside |= PolygonPath(np.asarray(polygon, dtype=np.float64)).contains_points(centres)
    return inside


def heat_grid(
    coords: NDArray[np.int64], attention: NDArray[np.float64], stride: int, max_cells: int = 512
) -> tuple[NDArray[np.float64], int]:
    """Accumulate attention on a grid of cells of ``cell`` level-0 pixels.

    Returns:
        ``(grid (rows, cols), cell size in level-0 pixels)``.
    """
    extent = int(coords.max()) + stride if len(coords) else stride
    cell = stride * max(1, -(-extent // (stride * max_cells)))
    cells = coords // cell
    grid = np.zeros((int(cells[:, 1].max()) + 1, int(cells[:, 0].max()) + 1))
    np.add.at(grid, (cells[:, 1], cells[:, 0]), attention)
    return grid, cell


def _thumbnail(slide_path: Path | None) -> tuple[NDArray[np.uint8] | None, tuple[int, int] | None]:
    if slide_path is None or not slide_path.is_file():
        return None, None
    from wsi_ncmi.slide import open_slide

    try:
        with open_slide(slide_path) as slide:
            return slide.thumbnail(1024), slide.dimensions
    except Exception:  # a heatmap without background is still useful
        return None, None


def save_heatmap(
    path: Path,
    coords: NDArray[np.int64],
    attention: NDArray[np.float64],
    stride: int,
    *,
    slide_path: Path | None = None,
    title: str = "",
    polygons: Sequence[Sequence[Sequence[float]]] = (),
    colorbar: bool = False,
) -> Path:
    """Draw the attention grid over the thumbnail (if found), tumour outlines in green.

    With ``colorbar`` a colour scale is drawn beside it: attention per cell relative to
    uniform attention (1 = the mean cell; the slide's weights sum to 1).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, cell = heat_grid(coords, attention, stride)
    thumb, dims = _thumbnail(slide_path)
    width, height = dims or (grid.shape[1] * cell, grid.shape[0] * cell)
    fig, ax = plt.subplots(figsize=(6, 6 * height / max(width, 1) + 0.4))
    if thumb is not None:
        ax.imshow(thumb, extent=(0, width, height, 0))
    masked = np.ma.masked_where(grid <= 0, grid)
    if colorbar:
        masked = masked * max(int((grid > 0).sum()), 1)
    image = ax.imshow(
        masked,
        cmap="inferno",
        alpha=0.6 if thumb is not None else 1.0,
        extent=(0, grid.shape[1] * cell, grid.shape[0] * cell, 0),
        interpolation="nearest",
    )
    for polygon in polygons:
        xy = np.asarray(polygon)
        ax.plot(np.append(xy[:, 0], xy[0, 0]), np.append(xy[:, 1], xy[0, 1]), "g-", lw=1)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    if colorbar:
        fig.colorbar(
            image, ax=ax, fraction=0.046, pad=0.02, label="attention × cells (1 = uniform)"
        )
    fig.tight_layout()
    save_png(fig, path, dpi=100)
    plt.close(fig)
    return path


def export_attention(
    rows: Sequence[ManifestRow],
    predictions: Sequence[Mapping[str, Any]],
    feature_paths: Sequence[Path],
    out_dir: Path,
    *,
    top_k: int = 10,
    max_heatmaps: int = 20,
    slide_dir: Path | None = None,
    class_names: Sequence[str] = (),
) -> AttentionSummary:
    """Write ``attention_topk.csv``, heatmaps and the tumour-attention summary.

    Args:
        rows: Rows of the predicted part (indexed by the predictions' ``index``).
        predictions: ``predict_step`` outputs with ``index``, ``pred`` and ``attention``.
        feature_paths: Features file of each row.
        out_dir: Output folder (``heatmaps/`` is created in it).
        top_k: Patches listed per slide.
        max_heatmaps: Heatmaps drawn (first slides in manifest order; 0 for none).
        slide_dir: Root of the slides (``center_K/<slide_id>.tif``), for thumbnails and
            ground truth.
        class_names: Class names for the titles.

    Returns:
        The attention on true tumour, per slide and averaged (slides with ground truth).
    """
    from wsi_ncmi.batch import write_text_atomic

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["slide_id", "rank", "x", "y", "attention"])
    per_slide: dict[str, SlideTumourAttention] = {}
    drawn = 0
    for item in predictions:
        index = int(item["index"])
        row = rows[index]
        attention = np.asarray(item["attention"], dtype=np.float64).reshape(-1)
        coords = read_patch_coords(feature_paths[index])
        if len(coords) != len(attention):
            raise CacheSchemaError(
                f"{str(feature_paths[index])!r}: {len(coords)} valid coords but "
                f"{len(attention)} attention weights"
            )
        for rank, i in enumerate(np.argsort(-attention, kind="stable")[:top_k]):
            writer.writerow([row.slide_id, rank, *coords[i].tolist(), f"{attention[i]:.6g}"])
        stride = patch_stride(coords)
        slide_path = None if slide_dir is None else slide_dir / row.relative_path
        polygons: list[Any] = []
        gt_path = None if slide_path is None else slide_path.with_suffix(".gt.json")
        if gt_path is not None and gt_path.is_file():
            polygons = json.loads(gt_path.read_text()).get("tumour_polygons", [])
            if polygons:
                inside = tumour_mask(coords, stride, polygons)
                per_slide[row.slide_id] = SlideTumourAttention(
                    label=row.label,
                    tumour_attention=float(attention[inside].sum()),
                    tumour_patch_fraction=float(inside.mean()),
                )
        if drawn < max_heatmaps:
            pred = int(item["pred"])
            label = class_names[pred] if class_names else str(pred)
            save_heatmap(
                out_dir / "heatmaps" / f"{row.slide_id}.png",
                coords,
                attention,
                stride,
                slide_path=slide_path,
                title=f"{row.slide_id}: true {row.label}, predicted {label}",
                polygons=polygons,
            )
            drawn += 1
    write_text_atomic(out_dir / "attention_topk.csv", buffer.getvalue())
    values = list(per_slide.values())
    labels = sorted({v.label for v in values})
    by_class = {
        label: float(np.mean([v.tumour_attention for v in values if v.label == label]))
        for label in labels
    }
    return AttentionSummary(
        slides_with_ground_truth=len(values),
        mean_tumour_attention=(
            float(np.mean([v.tumour_attention for v in values])) if values else None
        ),
        mean_tumour_patch_fraction=(
            float(np.mean([v.tumour_patch_fraction for v in values])) if values else None
        ),
        tumour_attention_by_class=by_class,
        per_slide=per_slide,
    )
