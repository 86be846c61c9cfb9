"""Per-item lock files that work on shared filesystems, with stale-lock takeover.

Many independent jobs (a SLURM array, several machines) can split one cohort with no
coordinator: before processing an item a job creates ``<lock_dir>/<item>.lock``, holding JSON
``{host, pid, token, started}``, by hard-linking a fully written private file to that name
(atomic and exclusive on local filesystems and NFS; ``O_CREAT | O_EXCL`` where hard links
are not supported). The holder refreshes the file's mtime while it works.
A lock is stale when its process is gone (same host) or its heartbeat is older than
``stale_after_s`` (any host); a stale lock is renamed away and retaken.

Every stage keeps its locks in ``<output root>/locks/`` (:func:`lock_dir`), names them
with :func:`lock_file` and waits for items other jobs hold with :func:`wait_for_locked`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from wsi_ncmi.batch.atomic import NAME_MAX, pid_alive, short_name

DEFAULT_STALE_AFTER_S = 600.0
#: The lock folder under every output root (tiling, extraction, benchmarks).
LOCK_DIR_NAME = "locks"
#: Lock folders of earlier versions (tiling used ``.locks``), see :func:`sweep_legacy_locks`.
LEGACY_LOCK_DIR_NAMES = (".locks",)

T = TypeVar("T")


def lock_dir(root: str | Path) -> Path:
    """The lock folder of an output root: ``<root>/locks`` (not created).

    Args:
        root: The stage's output root.

    Returns:
        ``<root>/locks``.
    """
    return Path(root) / LOCK_DIR_NAME


def sweep_legacy_locks(root: str | Path) -> int:
    """Remove stale locks that earlier versions left in ``<root>/.locks``.

    A live holder's lock there is left alone (an older job still running); the folder
    goes when it ends up empty.

    Args:
        root: The stage's output root.

    Returns:
        How many stale locks were removed.
    """
    removed = 0
    for name in LEGACY_LOCK_DIR_NAMES:
        legacy = Path(root) / name
        if not legacy.is_dir():
            continue
        removed += sum(ItemLock(path).break_if_stale() for path in legacy.glob("*.lock"))
        with contextlib.suppress(OSError):
            legacy.rmdir()  # only when empty
    return removed


def lock_file(directory: str | Path, key: str) -> Path:
    """The lock file of one work item: ``<directory>/<key>.lock``.

    Characters other than letters, digits and ``._-`` become ``_`` (and a short hash of
    ``key`` is appended, so distinct keys keep distinct files), and a name over the
    filesystem's limit is hash-shortened (long slide ids), leaving room for the
    ``.stale-<token>`` suffix of a takeover.

    Args:
        directory: The lock folder (see :func:`lock_dir`).
        key: The item's id (slide id, ``<encoder>.<slide id>``, cell id).

    Returns:
        The lock path.
    """
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in key)
    if safe != key:  # keep ids that differ only in replaced characters apart
        safe += "~" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
    return Path(directory) / f"{short_name(safe, NAME_MAX - len('.lock') - 32)}.lock"


class ItemLock:
    """An exclusive lock for one work item.

    Args:
        path: Lock file path.
        stale_after_s: Heartbeat age after which another host's lock counts as stale.
        heartbeat_s: How often the holder refreshes the lock (default stale_after_s / 4).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        heartbeat_s: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else stale_after_s / 4
        self.token = secrets.token_hex(8)
        self.took_over: dict[str, object] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- inspection ---------------------------------------------------------------
    def _read(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half-written or garbled: judged by its age alone
        return data if isinstance(data, dict) else {}

    def is_stale(self, info: dict[str, object]) -> bool:
        """Whether a lock whose content is ``info`` belongs to a dead or silent holder."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        pid = info.get("pid")
        if info.get("host") == socket.gethostname() and isinstance(pid, int):
            return not pid_alive(pid)
        return age > self.stale_after_s

    # -- acquire / release --------------------------------------------------------
    def acquire(self) -> bool:
        """Try to take the lock without waiting; True on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._create():
                self._start_heartbeat()
                return True
            info = self._read()
            if info is None:
                continue  # released between our attempts: retry
            if not self.is_stale(info):
                return False
            if self._break(info):
                self.took_over = info
        return False

    def is_held(self) -> bool:
        """Whether a live holder (this process or another) holds the lock now."""
        info = self._read()
        return info is not None and not self.is_stale(info)

    def break_if_stale(self) -> bool:
        """Remove this path's lock if its holder is dead or silent; True if removed.

        Cleans up after a holder killed between finishing an item and releasing it.
        """
        info = self._read()
        if info is None or not self.is_stale(info):
            return False
        return self._break(info)

    def _create(self) -> bool:
        payload = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
            "started": time.time(),
        }
        # Written whole under a private name, then hard-linked to the lock's name (atomic,
        # and it fails if the lock exists), so the lock never exists empty: a holder killed
        # between creating and writing it would leave a lock that only its age could
        # judge stale, a wait of ``stale_after_s`` for everyone else.
        draft = self.path.with_name(f"{self.path.name}.new-{self.token}")
        draft.write_text(json.dumps(payload), encoding="utf-8")
        try:
            os.link(draft, self.path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write
            return self._create_exclusive(payload)
        finally:
            draft.unlink(missing_ok=True)
        return True

    def _create_exclusive(self, payload: dict[str, object]) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh)
        return True

    def _break(self, observed: dict[str, object]) -> bool:
        """Rename a stale lock away; undo if someone else's fresh lock was grabbed."""
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            grabbed = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            grabbed = {}
        if observed and grabbed.get("token") != observed.get("token"):
            # A competitor retook the lock between our read and rename: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        if self.heartbeat_s <= 0:
            return
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                with contextlib.suppress(OSError):
                    os.utime(self.path)

        self._thread = threading.Thread(target=beat, name=f"lock:{self.path.name}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Release the lock if this object holds it (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        info = self._read()
        if info and info.get("token") == self.token:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> ItemLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Release the lock, whether or not the block raised."""
        self.release()


def take_lock(path: str | Path, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> ItemLock | None:
    """Take the lock at ``path`` without waiting: the held lock, or ``None`` if busy.

    The one way a stage claims a whole unit of work (a benchmark cell, a training folder):
    a live holder keeps it, a stale one (dead process, silent host) is taken over.

    Args:
        path: Lock file (see :func:`lock_file`).
        stale_after_s: Heartbeat age after which another host's lock counts as stale.

    Returns:
        The acquired lock (release it, or use it as a context manager), or ``None``
        when a live holder has it.
    """
    lock = ItemLock(path, stale_after_s=stale_after_s)
    return lock if lock.acquire() else None


def lock_holder(path: str | Path) -> str:
    """``"pid 123 on host 'node1', since 2026-12-06 20:40:00"``: who holds a lock file."""
    info = ItemLock(path)._read() or {}
    started = info.get("started")
    since = (
        time.strftime(", since %Y-%m-%d %H:%M:%S", time.localtime(started))
        if isinstance(started, int | float)
        else ""
    )
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')!r}{since}"


def claim_folder(folder: str | Path, what: str, option: str = "--out_dir") -> ItemLock:
    """Take ``<folder>/locks/<what>.lock`` or refuse: one writer per output folder.

    Args:
        folder: The output folder (created if needed).
        what: The work (``"train"``), naming the lock file.
        option: The option that named the folder (for the message).

    Returns:
        The held lock; release it when the work ends (or use it as a context manager).

    Raises:
        ConfigError: A live process holds it (exit code 2); the message names its pid and
            host and what to do. A stale lock (its process dead, or silent for
            :data:`DEFAULT_STALE_AFTER_S` seconds on another host) is taken over.
    """
    from wsi_ncmi.errors import ConfigError

    path = lock_file(lock_dir(folder), what)
    lock = take_lock(path)
    if lock is None:
        raise ConfigError(
            f"{option} {str(folder)!r} is in use by another run ({lock_holder(path)}; lock "
            f"{str(path)!r}); wait for it to finish or choose another {option} (nothing was "
            "written). A lock whose process has died is taken over automatically"
        )
    return lock


@dataclass
class LockWait(Generic[T]):
    """What :func:`wait_for_locked` found.

    Attributes:
        ready: Items whose lock is free or stale: try them again (a stale lock is taken
            over by the next ``acquire``).
        done: Items another job finished meanwhile.
        waiting: Items still held by live jobs.
        expired: Whether the deadline passed (``waiting`` then holds the rest).
    """

    ready: list[T] = field(default_factory=list)
    done: list[T] = field(default_factory=list)
    waiting: list[T] = field(default_factory=list)
    expired: bool = False


def wait_for_locked(
    waiting: Sequence[T],
    lock_of: Callable[[T], ItemLock],
    *,
    is_done: Callable[[T], bool] | None,
    poll_s: float,
    deadline: float | None,
) -> LockWait[T]:
    """Poll items that other jobs hold until one can be taken, all are done, or time is up.

    Every ``poll_s`` seconds each item is checked: finished by its holder (``is_done``)
    → ``done``; its lock released or its holder dead or silent → ``ready``. The poll
    returns as soon as an item is ready or none is left waiting, or at ``deadline``
    (``time.monotonic()`` seconds; ``None``: no limit) with ``expired`` set.

    Args:
        waiting: Items whose lock another job held.
        lock_of: The (not yet acquired) lock of an item.
        is_done: Whether an item's complete output exists.
        poll_s: Seconds between checks.
        deadline: When to give up.

    Returns:
        The items sorted into ready, done and still waiting.
    """
    found: LockWait[T] = LockWait(waiting=list(waiting))
    while found.waiting:
        if deadline is not None and time.monotonic() >= deadline:
            found.expired = True
            return found
        time.sleep(poll_s)
        still: list[T] = []
        for item in found.waiting:
            if is_done is not None and is_done(item):
                found.done.append(item)
            elif lock_of(item).is_held():
                still.append(item)
            else:
                found.ready.append(item)
        found.waiting = still
        if found.ready:
            break
    return found
