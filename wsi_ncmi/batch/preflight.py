"""Checks of an output folder before any work starts.

A run whose ``--out`` cannot be written would otherwise fail on its first output, after
the slides were read (or, worse, deep inside a library). :func:`check_writable_dir`
creates the folder if needed and writes and removes one small probe file in it, so a
folder that is a file, read-only, unwritable for this user or on a full disk is a
:class:`~wsi_ncmi.errors.ConfigError` (exit code 2) naming the folder, the errno and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from wsi_ncmi.errors import ConfigError


def _reason(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or -1, "?")
    return f"[{name}] {err.strerror or err}"


def check_writable_dir(path: str | Path, option: str = "--out_dir") -> Path:
    """Create ``path`` (and parents) if missing and check that files can be written in it.

    Args:
        path: The folder.
        option: The option that named it (for the message).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``path`` (or a parent) is a file, cannot be created, or a file
            cannot be created and written in it.
    """
    folder = Path(path)
    for parent in (folder, *folder.parents):
        if parent.exists() and not parent.is_dir():
            what = "is" if parent == folder else f"is inside {str(parent)!r}, which is"
            raise ConfigError(
                f"{option} {str(folder)!r} {what} a file, not a folder; give a folder path"
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"{option} {str(folder)!r} cannot be created: {_reason(err)}; choose a folder "
            "you can write to"
        ) from err
    probe = folder / f".wsi-ncmi-write-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    except OSError as err:
        raise ConfigError(
            f"{option} {str(folder)!r} is not writable: {_reason(err)}; fix its "
            "permissions, free space, or choose another folder (nothing was processed)"
        ) from err
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return folder


def check_free_space(folder: str | Path, needed_bytes: int, what: str) -> None:
    """Refuse to start when ``folder``'s filesystem cannot hold even ``needed_bytes``.

    A disk that is already full would otherwise let a run compute every item before
    each write fails.

    Args:
        folder: An existing output folder.
        needed_bytes: The smallest output the run will write.
        what: That output, for the message (``"the smallest slide's features"``).

    Raises:
        ConfigError: Fewer bytes are free (exit code 2; nothing was processed).
    """
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): the writes will tell
        return
    free = stats.f_bavail * stats.f_frsize
    if free < needed_bytes:
        raise ConfigError(
            f"{str(folder)!r} has {free:,} bytes free but {what} need about "
            f"{needed_bytes:,}: [ENOSPC] the disk is full; free space or choose another "
            "--out_dir (nothing was processed)"
        )


def check_writable_dirs(paths: Iterable[str | Path], option: str = "--out_dir") -> None:
    """:func:`check_writable_dir` for each of ``paths`` (in order).

    Raises:
        ConfigError: The first folder that cannot be written.
    """
    for path in paths:
        check_writable_dir(path, option)


__all__ = ["check_free_space", "check_writable_dir", "check_writable_dirs"]
