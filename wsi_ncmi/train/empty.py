"""Blank slides: slides whose features file has no valid patch (tiled as ``no_tissue``).

A blank slide passes tiling and extraction (``no_tissue``, exit code 0) with a 0-row
features file. Training cannot use it, and re-tiling cannot help. By default
:func:`drop_empty` leaves such slides out of training *and* evaluation before the fold
trains, and the run reports how many (``no_tissue_excluded`` in ``metrics.json``,
``summary.txt``, ``report.html``); ``data.include_empty`` keeps them (and the error that
names them).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from wsi_ncmi.features.store import read_feature_attrs
from wsi_ncmi.jsontypes import as_int
from wsi_ncmi.manifest import ManifestRow


def has_no_patches(path: Path) -> bool:
    """Whether a features file holds no valid patch (attributes only)."""
    attrs = read_feature_attrs(path)
    return as_int(attrs.get("n_rows", 0)) - as_int(attrs.get("n_invalid", 0)) <= 0


def drop_empty(
    rows: MutableMapping[Any, list[ManifestRow]], path_of: Callable[[ManifestRow], Path]
) -> list[str]:
    """Remove the slides without a valid patch from every part; return their ids.

    Args:
        rows: ``{part: rows}``, edited in place.
        path_of: The features file of a row.

    Returns:
        The removed slide ids, in part then row order.
    """
    removed: list[str] = []
    for part, part_rows in rows.items():
        empty = [row for row in part_rows if has_no_patches(path_of(row))]
        rows[part] = [row for row in part_rows if row not in empty]
        removed += [row.slide_id for row in empty]
    return removed


def empty_note(slide_ids: list[str]) -> str:
    """The report line on the excluded blank slides (``""`` when there are none)."""
    if not slide_ids:
        return ""
    shown = ", ".join(slide_ids[:10]) + (" ..." if len(slide_ids) > 10 else "")
    return (
        f"{len(slide_ids)} blank slide(s) without tissue (no_tissue) excluded from training "
        f"and evaluation: {shown} (--include_empty keeps them)"
    )


__all__ = ["drop_empty", "empty_note", "has_no_patches"]
