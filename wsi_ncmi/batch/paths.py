"""Paths stored inside outputs: written relative to the storing file, read without the cwd.

A features file records the coords file it was made from. Recorded relative to the
working directory, that path means something else as soon as a later stage runs from
another directory, and a check that cannot find the file would be skipped. So
:func:`stored_path` records a path relative to the folder of the file that stores it
(the pair can be moved together), and :func:`resolve_stored_path` reads it back against
that folder, whatever the working directory is.
"""

from __future__ import annotations

import os
from pathlib import Path


def stored_path(target: str | Path, storing_file: str | Path) -> str:
    """How ``storing_file`` should record ``target``: relative to its own folder.

    Args:
        target: The file to record (relative to the cwd, or absolute).
        storing_file: The output that records it.

    Returns:
        ``target`` relative to ``storing_file``'s folder (POSIX separators), or its
        absolute path where no relative path exists (another drive on Windows).
    """
    absolute = os.path.abspath(target)
    try:
        relative = os.path.relpath(absolute, os.path.dirname(os.path.abspath(storing_file)))
    except ValueError:
        return absolute
    return Path(relative).as_posix()


def resolve_stored_path(recorded: str | Path, storing_file: str | Path) -> Path | None:
    """Find the file that ``storing_file`` recorded as ``recorded``.

    An absolute path is taken as it is. A relative one is read against the storing
    file's folder (:func:`stored_path`), then, for files written by earlier versions
    (which recorded paths relative to the directory they ran in), against each of that
    folder's parents in turn. The working directory is never used.

    Args:
        recorded: The recorded path.
        storing_file: The file that recorded it.

    Returns:
        The existing file, or ``None`` when none of these places holds it.
    """
    path = Path(recorded)
    if path.is_absolute():
        return path if path.is_file() else None
    folder = Path(os.path.abspath(storing_file)).parent
    for base in (folder, *folder.parents):
        candidate = Path(os.path.normpath(base / path))
        if candidate.is_file():
            return candidate
    return None


__all__ = ["resolve_stored_path", "stored_path"]
