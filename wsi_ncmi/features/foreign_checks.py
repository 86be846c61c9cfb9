"""Checks of foreign (TRIDENT/CLAM) features: layout, µm/px, values, and the fix that works.

Used by :mod:`wsi_ncmi.features.foreign` at registration (a file of the other tool's
layout, a job folder instead of its ``features_<encoder>/``, NaN/inf values) and by the
readers when an imported file turns out bad later (:func:`import_problem`: the source
file, whether it changed since the import, and the fix: re-export, then
``wsi-import-features`` again; re-running ``wsi-extract`` cannot help imported features).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.jsontypes import as_str
from wsi_ncmi.tiling.schema import decode_attr

#: Rows read at a time when checking a foreign file's values.
_CHECK_ROWS = 8192

#: The tool that wrote each format (for the fix in messages).
TOOL_OF = {"trident": "TRIDENT", "clam": "CLAM", "clam-pt": "CLAM"}


def nonfinite_rows(source: Path, n_rows: int) -> int:
    """How many of the ``n_rows`` feature rows of a foreign ``source`` file hold NaN or inf.

    A ``.pt`` tensor is loaded whole; an HDF5 file's ``features`` are read in blocks.
    """
    if source.suffix == ".pt":
        import torch

        tensor = torch.load(source, map_location="cpu", weights_only=True)
        return int((~torch.isfinite(tensor.to(torch.float32))).any(dim=1).sum())
    import h5py

    bad = 0
    with h5py.File(source, "r") as h5:
        ds = h5["features"]
        for start in range(0, n_rows, _CHECK_ROWS):
            block = np.asarray(ds[start : start + _CHECK_ROWS])
            bad += int((~np.isfinite(block)).any(axis=1).sum())
    return bad


def reimport_fix(fmt: str) -> str:
    """The fix for a bad or changed foreign source: re-export, then import again."""
    tool = TOOL_OF.get(fmt, "the tool that wrote it")
    return (
        f"Fix: re-export the features from {tool}, then run wsi-import-features again "
        "(same --out and --encoder); re-running wsi-extract cannot help imported features"
    )


def import_problem(path: Path, attrs: Any) -> str | None:
    """For an imported features file: its source, whether it changed, and the fix.

    Args:
        path: The sidecar (``<out>/features/<encoder>/<slide>.h5``).
        attrs: Its HDF5 attributes.

    Returns:
        ``None`` for a file that ``wsi-extract`` wrote; else a sentence naming the source
        file, what changed since the import (size, modification time), and the fix.
    """
    raw = attrs.get("imported_from") if hasattr(attrs, "get") else None
    if raw is None:
        return None
    try:
        record = json.loads(as_str(decode_attr(raw)))
    except (TypeError, ValueError):
        record = {}
    source = str(record.get("source", "?"))
    fmt = str(record.get("format", "?"))
    changes = []
    try:
        stat = os.stat(source)
    except OSError:
        changes.append("it is gone")
    else:
        if record.get("source_size") not in (None, stat.st_size):
            changes.append(f"size {record['source_size']:,} -> {stat.st_size:,} bytes")
        if record.get("source_mtime") not in (None, stat.st_mtime):
            changes.append("modified since")
    changed = f"; it changed since the import ({', '.join(changes)})" if changes else ""
    return (
        f"{str(path)!r} registers features imported ({fmt}) from {source!r}{changed}. "
        + reimport_fix(fmt)
    )


#: ``coords`` attributes only TRIDENT writes, and the one CLAM writes instead.
_TRIDENT_ATTRS = ("patch_size_level0", "target_magnification", "level0_magnification")
_CLAM_ATTR = "patch_level"


def check_layout(path: Path, fmt: str, attrs: Any) -> None:
    """Refuse files whose ``coords`` attributes say they come from the other tool."""
    trident = [name for name in _TRIDENT_ATTRS if name in attrs]
    clam = _CLAM_ATTR in attrs and not trident
    if fmt == "trident" and clam:
        raise ConfigError(
            f"{str(path)!r} is a CLAM file (its coords carry CLAM's patch_level and none of "
            f"TRIDENT's {list(_TRIDENT_ATTRS)}), not --format trident; use --format clam "
            "with --mpp"
        )
    if fmt == "clam" and trident:
        raise ConfigError(
            f"{str(path)!r} is a TRIDENT file (its coords carry {trident}), not --format "
            "clam; use --format trident"
        )


def folder_hint(src: Path) -> str:
    """Where the feature files of a tool's job folder are, if ``src`` is one."""
    candidates = sorted(
        p for p in (*src.glob("features_*"), *src.glob("*/features_*")) if p.is_dir()
    )
    if candidates:
        shown = ", ".join(repr(str(p)) for p in candidates[:3])
        return (
            f"; {str(src)!r} looks like a TRIDENT job folder: pass its features_<encoder>/ "
            f"folder instead, e.g. {shown}"
        )
    for sub in ("h5_files", "pt_files"):
        if (src / sub).is_dir():
            return f"; {str(src)!r} looks like a CLAM features folder: pass {str(src / sub)!r}"
    return ""


__all__ = [
    "TOOL_OF",
    "check_layout",
    "folder_hint",
    "import_problem",
    "nonfinite_rows",
    "reimport_fix",
]
