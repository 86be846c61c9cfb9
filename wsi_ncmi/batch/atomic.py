"""Atomic file outputs: write to a temp file beside the target, then rename.

A killed process leaves at most a ``.*.tmp-*`` file, never a file under the final
name, so "the output exists" always means "the output is complete".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from wsi_ncmi.errors import DiskFullError, OutputWriteError

TEMP_MARKER = ".tmp-"
#: Longest file name (bytes) this package creates: NAME_MAX of ext4, XFS, NFS, tmpfs.
NAME_MAX = 255
#: Bytes a temp name adds after its prefix: marker, host (<= 64), pid, token.
_TEMP_SUFFIX_MAX = len(TEMP_MARKER) + 64 + 1 + 10 + 1 + 8


def short_name(name: str, max_bytes: int) -> str:
    """``name`` if it fits in ``max_bytes`` of UTF-8, else a prefix of it plus a hash.

    The shortened form is ``<prefix>~<12 hex of sha256(name)>``: distinct names stay
    distinct, and the prefix keeps the name recognisable.
    """
    raw = name.encode("utf-8")
    if len(raw) <= max_bytes:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:12]
    keep = raw[: max(0, max_bytes - len(digest) - 1)].decode("utf-8", errors="ignore")
    return f"{keep}~{digest}"


def temp_prefix(final: Path) -> str:
    """The start of every temp name of ``final`` (``.<name>``, hash-shortened if long)."""
    return "." + short_name(final.name, NAME_MAX - _TEMP_SUFFIX_MAX - 1)


def _host_tag() -> str:
    """This host's name, reduced to characters safe in a file name."""
    name = socket.gethostname() or "host"
    return "".join(c if c.isalnum() or c == "." else "_" for c in name)[:64]


def temp_path_for(final: Path) -> Path:
    """A unique temp path in ``final``'s directory (same filesystem, so rename is atomic).

    The name is ``.<final name>.tmp-<host>-<pid>-<token>``: the writer's host and pid let
    :func:`remove_stale_temp_files` tell a dead writer's leftovers from a live one's on a
    filesystem shared by several machines. A final name too long to leave room for that
    suffix within :data:`NAME_MAX` bytes is hash-shortened (:func:`temp_prefix`).
    """
    return final.with_name(
        f"{temp_prefix(final)}{TEMP_MARKER}{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}"
    )


def temp_writer(path: Path) -> tuple[str | None, int] | None:
    """``(host, pid)`` of the writer of a temp file from :func:`temp_path_for`.

    ``host`` is ``None`` for names from before hosts were recorded (``.tmp-<pid>-<token>``).
    Returns ``None`` when ``path`` is not such a temp file.
    """
    name = path.name
    if not name.startswith(".") or TEMP_MARKER not in name:
        return None
    parts = name.split(TEMP_MARKER, 1)[1].rsplit("-", 2)
    try:
        if len(parts) == 3:
            return parts[0], int(parts[1])
        if len(parts) == 2:
            return None, int(parts[0])
    except ValueError:
        return None
    return None


def final_path_of(path: Path) -> Path:
    """The final path a temp path from :func:`temp_path_for` stands for (else ``path``)."""
    name = path.name
    if name.startswith(".") and TEMP_MARKER in name:
        return path.with_name(name[1:].split(TEMP_MARKER, 1)[0])
    return path


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem supports directory fsync
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(final: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """Context manager yielding a temp path that becomes ``final`` on success.

    On any exception the temp file is removed and ``final`` is untouched. A failed
    write (any of :data:`WRITE_ERRNOS`: a full disk or quota, a file-size limit, a
    read-only or unwritable folder, an I/O error) is re-raised as
    :class:`~wsi_ncmi.errors.OutputWriteError` naming the file, its errno and the fix
    (:class:`~wsi_ncmi.errors.DiskFullError` for ``ENOSPC``/``EDQUOT``).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_output(d / "a.txt") as tmp:
        ...     _ = tmp.write_text("done")
        >>> (d / "a.txt").read_text()
        'done'
    """
    final = Path(final)
    if len(final.name.encode("utf-8")) > NAME_MAX:
        raise output_write_error(final, errno.ENAMETOOLONG)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        if fsync and tmp.exists():
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
        if fsync:
            _fsync_dir(final.parent)
    except BaseException as err:
        discard_temp(tmp)
        code = write_errno(err)
        if code is not None and not isinstance(err, OutputWriteError):
            raise output_write_error(final, code) from err
        raise


#: errno codes of a failed write that concern the output, not the input or the code.
WRITE_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.ENAMETOOLONG,
    }
)

_FIXES = {
    errno.ENOSPC: "Free space or choose another --out_dir directory",
    errno.EDQUOT: "Free space within your disk quota or choose another --out_dir directory",
    errno.EFBIG: "The file is larger than this process or filesystem allows (ulimit -f, "
    "FAT32's 4 GiB): raise the limit or choose another --out_dir filesystem",
    errno.EROFS: "The filesystem is mounted read-only: choose a writable --out_dir directory",
    errno.EACCES: "No permission to write there: fix the folder's permissions or choose "
    "another --out_dir directory",
    errno.EPERM: "The operation is not permitted there: fix the folder's permissions or "
    "choose another --out_dir directory",
    errno.EIO: "The device reported an I/O error: check the disk or network share "
    "(dmesg, mount), or choose another --out_dir directory",
    errno.ENAMETOOLONG: f"The file name is longer than the filesystem's {NAME_MAX} bytes: "
    "shorten the slide id (rename the file, or give it a shorter slide_id in the manifest)",
}


def file_identity(path: str | Path) -> tuple[int, int, int, int] | None:
    """``(device, inode, size, mtime in ns)`` of a file, or ``None`` if it cannot be stat'ed.

    Outputs are put in place by rename (:func:`atomic_output`), so a rewritten file gets
    another inode: the identity is a safe key for memoising what was read from a file.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def write_errno(err: BaseException) -> int | None:
    """The errno of a failed output write (one of :data:`WRITE_ERRNOS`), else ``None``.

    HDF5 reports a failed write as a ``RuntimeError`` or an ``OSError`` without errno
    whose text carries ``errno = 27, ...``, so the message is parsed too.
    """
    if isinstance(err, OutputWriteError):
        return err.errno
    if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
        return int(err.errno)
    if isinstance(err, OSError | RuntimeError):
        text = str(err)
        for code in WRITE_ERRNOS:
            if f"errno = {code}," in text:
                return code
    return None


def output_write_error(final: str | Path, code: int | None) -> OutputWriteError:
    """The error for an output ``final`` whose write failed with ``code`` (temp removed).

    :class:`DiskFullError` for ``ENOSPC``/``EDQUOT``, else :class:`OutputWriteError`.
    """
    if code in (errno.ENOSPC, errno.EDQUOT):
        error = disk_full_error(final)
        error.errno = code
        return error
    name = errno.errorcode.get(code, "?") if code is not None else "?"
    reason = os.strerror(code) if code is not None else "write failed"
    fix = _FIXES.get(code or -1, "Check the output folder")
    return OutputWriteError(
        f"cannot write {str(final)!r}: [{name}] {reason}; the partial temp file was "
        f"removed. {fix}, then rerun (finished outputs are kept and skipped)",
        errno=code,
        path=str(final),
    )


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` reports a full disk or quota (``ENOSPC``/``EDQUOT``).

    HDF5 reports a failed flush as a ``RuntimeError`` whose text carries ``errno = 28``
    instead of an ``OSError`` errno, so the message is checked too.
    """
    if isinstance(err, DiskFullError):
        return True
    return write_errno(err) in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(final: str | Path) -> DiskFullError:
    """The :class:`DiskFullError` for an output ``final`` whose temp file was removed."""
    return DiskFullError(
        f"no space left on the device while writing {str(final)!r}; the partial "
        "temp file was removed. Free space or choose another --out_dir directory, "
        "then rerun (finished outputs are kept and skipped).",
        errno=errno.ENOSPC,
        path=str(final),
    )


def discard_temp(tmp: Path) -> None:
    """Remove a temp file, first truncating it to free its space at once.

    A library may still hold the file open (HDF5 keeps a file whose flush failed), and
    an unlinked but open file keeps its blocks until closed: truncating frees them now.
    """
    with contextlib.suppress(OSError):
        os.truncate(tmp, 0)
    tmp.unlink(missing_ok=True)


def write_bytes_atomic(final: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``final`` atomically and return the path.

    ``fsync=False`` keeps the atomic rename (a killed process never leaves a partial
    ``final``) but skips flushing to stable storage, for cheap, regenerable outputs.
    """
    final = Path(final)
    with atomic_output(final, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return final


def write_text_atomic(final: str | Path, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` to ``final`` atomically (UTF-8) and return the path.

    See :func:`write_bytes_atomic` for ``fsync``.
    """
    return write_bytes_atomic(final, text.encode("utf-8"), fsync=fsync)


def find_temp_files(directory: str | Path) -> list[Path]:
    """Temp files left in ``directory`` (recursively) by killed writers."""
    return sorted(p for p in Path(directory).rglob(f".*{TEMP_MARKER}*") if p.is_file())


def remove_stale_temp_files(
    directory: str | Path,
    *,
    live_pids: set[int] | None = None,
    other_hosts_after_s: float = 24 * 3600.0,
) -> int:
    """Delete temp files whose writer is gone; return how many were removed.

    A temp file written on this host is removed when its writer's pid is no longer
    running (and not listed in ``live_pids``). A file written on another host cannot be
    checked that way (that host may share the filesystem and still be writing it), so it
    is removed only when it has not been modified for ``other_hosts_after_s`` seconds.
    Files without a recorded host are treated as this host's (the older naming).
    """
    removed = 0
    here = _host_tag()
    now = time.time()
    for path in find_temp_files(directory):
        writer = temp_writer(path)
        if writer is None:
            continue
        host, pid = writer
        if host is not None and host != here:
            try:
                idle = now - path.stat().st_mtime
            except OSError:
                continue
            if idle < other_hosts_after_s:
                continue
        elif (live_pids and pid in live_pids) or pid_alive(pid):
            continue
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a running (not zombie) process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a killed child that nobody reaped yet is a zombie, i.e. dead
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
