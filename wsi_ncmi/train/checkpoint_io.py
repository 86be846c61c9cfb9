"""Checkpoints written like every other output, and resumed only from loadable ones.

Lightning's own save serialises into memory, writes a temp file under ``$TMPDIR`` and
then *copies* it to the destination when that is another filesystem: a full disk leaves a
truncated ``last.ckpt`` under its final name, and so does a ``kill -9`` during the copy.
:class:`AtomicCheckpointIO` writes the temp file in the destination folder, fsyncs it
and renames it (:func:`wsi_ncmi.batch.atomic_output`), so a checkpoint under its final
name is always complete; a failed write is an
:class:`~wsi_ncmi.errors.OutputWriteError` naming the file and the fix.
:func:`resume_checkpoint` picks the checkpoint a ``--resume`` run continues from,
setting aside one that cannot be loaded (written by an earlier version, or damaged) and
falling back to the newest good one.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from wsi_ncmi.batch.atomic import atomic_output

#: Suffix given to a checkpoint that cannot be loaded when a resume sets it aside.
UNLOADABLE_SUFFIX = ".unloadable"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose save is temp file in the destination, fsync, rename."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically.

        Args:
            checkpoint: The model and trainer state.
            path: The checkpoint file (a local path).
            storage_options: Not supported (as in ``TorchCheckpointIO``).

        Raises:
            TypeError: ``storage_options`` was given.
            OutputWriteError: The write failed (``DiskFullError`` for a full disk); no
                file is left under ``path`` or beside it.
        """
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first: torch's own file errors lose errno
        with atomic_output(Path(path)) as tmp, tmp.open("wb") as fh:
            fh.write(buffer.getbuffer())


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be loaded as a checkpoint, or ``None`` when it is whole.

    Reads the file through (the zip container and every member's CRC) without unpickling.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return None if bad is None else f"damaged member {bad!r}"


def _epoch(path: Path) -> int:
    found = re.search(r"epoch=(\d+)", path.name)
    return int(found.group(1)) if found else -1


def resume_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint a resumed fold continues from: ``last.ckpt``, else the newest good one.

    A checkpoint that cannot be loaded is renamed to ``<name>.unloadable`` (kept for
    inspection, never loaded again) with a warning naming it and the fallback.

    Args:
        checkpoints: The fold's ``checkpoints/`` folder.

    Returns:
        The checkpoint to resume from, or ``None`` (start the fold over).
    """
    last = checkpoints / "last.ckpt"
    others = sorted(checkpoints.glob("*.ckpt"), key=lambda p: (_epoch(p), p.stat().st_mtime))
    candidates = [last] if last.is_file() else []
    candidates += [p for p in reversed(others) if p != last]
    set_aside: list[str] = []
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            if set_aside:
                warnings.warn(
                    f"cannot load checkpoint(s) {set_aside}; resuming from {str(candidate)!r}",
                    stacklevel=2,
                )
            return candidate
        aside = candidate.with_name(candidate.name + UNLOADABLE_SUFFIX)
        candidate.replace(aside)
        set_aside.append(f"{str(candidate)!r} ({problem}; renamed to {aside.name})")
    if set_aside:
        warnings.warn(
            f"cannot load checkpoint(s) {set_aside} and no other checkpoint is left; the "
            "fold starts over",
            stacklevel=2,
        )
    return None


__all__ = ["UNLOADABLE_SUFFIX", "AtomicCheckpointIO", "checkpoint_problem", "resume_checkpoint"]
