"""A TIFF's tile table must cover its image and stay inside the file, checked before reading.

A header can claim any size: a 14 KB file that says 100,000 × 100,000 px with 4 tiles
present would make the tissue mask stream the whole level 0 (OpenSlide fills the missing
tiles) for minutes. :func:`tiff_layout_problem` compares, for every image directory, the
number of tiles (or strips) the header lists with the number its dimensions need, and
checks that every non-empty tile lies inside the file. Zero-byte tiles (offset and byte
count 0) are legal: sparse TIFFs leave empty tiles out that way. Only the directories
are read (no pixel data).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def tiff_layout_problem(path: Path, size: int) -> str | None:
    """What is wrong with the tile table of a TIFF file, or ``None``.

    Args:
        path: A file that starts with a TIFF header.
        size: Its size in bytes.

    Returns:
        ``None`` when every directory lists as many tiles as its dimensions need and
        each non-empty tile lies inside the file; else a sentence naming the directory,
        what its header claims and what the file holds. Files that tifffile cannot
        parse return ``None`` (the backends' own checks judge them).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            for index, page in enumerate(tif.pages):
                problem = _page_problem(page, size)
                if problem is not None:
                    return f"image directory {index}: {problem}"
    except Exception:  # tifffile raises several types; the other checks report those
        return None
    return None


def _page_problem(page: object, size: int) -> str | None:
    offsets = np.asarray(getattr(page, "dataoffsets", ()), dtype=np.int64)
    counts = np.asarray(getattr(page, "databytecounts", ()), dtype=np.int64)
    chunked = getattr(page, "chunked", None)
    if chunked is None or not len(offsets):
        return None
    needed = math.prod(int(n) for n in chunked)
    shape = f"{getattr(page, 'imagewidth', '?')} x {getattr(page, 'imagelength', '?')} px"
    kind = "tiles" if getattr(page, "is_tiled", False) else "strips"
    if len(offsets) < needed or len(counts) < needed:
        return (
            f"its header claims {shape}, which needs {needed:,} {kind}, but it lists only "
            f"{min(len(offsets), len(counts)):,}"
        )
    ends = offsets[:needed] + counts[:needed]
    beyond = np.flatnonzero((counts[:needed] > 0) & (ends > size))
    if beyond.size:
        first = int(beyond[0])
        return (
            f"{beyond.size:,} of its {needed:,} {kind} point beyond the end of the file "
            f"(the first, #{first}, ends at byte {int(ends[first]):,} of {size:,})"
        )
    return None


__all__ = ["tiff_layout_problem"]
