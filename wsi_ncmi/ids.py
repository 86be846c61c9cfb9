"""One rule for slide ids, and output paths that stay under their output folder.

A slide id names files (``<out>/coords/<id>.h5``, ``<out>/features/<enc>/<id>.h5``,
heatmaps, GeoJSON), so every place that creates ids (a manifest, a folder scan, an
import) checks them with :func:`slide_id_problem`: no path separators, no ``..``, no
control characters, at most :data:`MAX_SLIDE_ID_BYTES` bytes, and unique after
case-folding (two ids that differ only in case would share files on a case-insensitive
filesystem, such as macOS's or Windows'). :func:`check_slide_ids` refuses a set of ids
breaking it, listing every offending row; :func:`path_under` checks that a path built
from an id stays inside its output folder.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from wsi_ncmi.errors import ConfigError

#: Longest id in UTF-8 bytes: the longest output name (``<id>.geojson``) must fit in the
#: 255 bytes most filesystems allow for one name.
MAX_SLIDE_ID_BYTES = 255 - len(".geojson")


def slide_id_problem(slide_id: str) -> str | None:
    """Why ``slide_id`` cannot name output files, or ``None`` when it can.

    Args:
        slide_id: The id.

    Returns:
        A short reason (``"contains a path separator '/'"``), or ``None``.
    """
    if not slide_id or not slide_id.strip():
        return "is empty"
    for sep in ("/", "\\"):
        if sep in slide_id:
            return f"contains a path separator {sep!r}"
    if ".." in slide_id:
        return "contains '..'"
    if slide_id == ".":
        return "is '.'"
    bad = [c for c in slide_id if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if bad:
        return f"contains a control character {bad[0]!r}"
    size = len(slide_id.encode("utf-8", "surrogatepass"))
    if size > MAX_SLIDE_ID_BYTES:
        return f"is {size} bytes long (at most {MAX_SLIDE_ID_BYTES}); shorten the slide id"
    return None


def slide_id_problems(ids: Iterable[tuple[str, str]]) -> list[str]:
    """Every id that breaks the rule, as ``"<where>: <id> <reason>"`` lines.

    Args:
        ids: ``(where, slide_id)`` pairs, ``where`` naming the row (``"line 5"``, a file).

    Returns:
        One line per offending row, in input order (empty when every id is fine).
    """
    problems: list[str] = []
    first: dict[str, tuple[str, str]] = {}
    for where, slide_id in ids:
        reason = slide_id_problem(slide_id)
        if reason is None:
            key = unicodedata.normalize("NFC", slide_id).casefold()
            seen = first.setdefault(key, (where, slide_id))
            if seen != (where, slide_id) and seen[1] != slide_id:
                reason = (
                    f"differs from {seen[1]!r} ({seen[0]}) only in case, so both would share "
                    "files on a case-insensitive filesystem"
                )
        if reason is not None:
            problems.append(f"{where}: slide id {slide_id!r} {reason}")
    return problems


def check_slide_ids(ids: Iterable[tuple[str, str]], source: str) -> None:
    """Refuse ids that break the rule, listing every offending row.

    Args:
        ids: ``(where, slide_id)`` pairs.
        source: What the ids came from (a manifest path, ``"SLIDES"``), for the message.

    Raises:
        ConfigError: At least one id breaks the rule (exit code 2).
    """
    problems = slide_id_problems(ids)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ConfigError(
            f"{len(problems)} slide id(s) from {source} cannot name output files:\n  "
            f"{shown}{more}\nFix: rename them (letters, digits, '_', '-', '.'; no '/', '\\', "
            "'..' or control characters), nothing was written"
        )


def path_under(root: str | Path, path: str | Path) -> Path:
    """Return ``path`` after checking that it stays inside ``root`` once normalised.

    The check is on the normalised absolute paths (``..`` removed), so a folder inside
    ``root`` that is a symbolic link to another disk stays allowed.

    Args:
        root: The output folder (``--out_dir``).
        path: A path built under it.

    Returns:
        ``path`` unchanged.

    Raises:
        ConfigError: ``path`` leads outside ``root``.
    """
    top = os.path.abspath(root)
    target = os.path.abspath(path)
    if os.path.commonpath([top, target]) != top:
        raise ConfigError(
            f"output path {str(path)!r} leads outside the output folder {str(root)!r}; the "
            "slide id that named it is not a plain file name: rename the slide"
        )
    return Path(path)


__all__ = [
    "MAX_SLIDE_ID_BYTES",
    "check_slide_ids",
    "path_under",
    "slide_id_problem",
    "slide_id_problems",
]
