"""Per-item lock files that work on shared filesystems, with stale-lock takeover.

Many independent jobs (a SLURM array, several machines) can split one cohort with no
coordinator: before processing an item a job creates ``<lock_dir>/<item>.lock`` with
``O_CREAT | O_EXCL`` (atomic on local filesystems and on NFSv3+), holding JSON
``{host, pid, token, started}``. The holder refreshes the file's mtime while it works.
A lock is stale when its process is gone (same host) or its heartbeat is older than
``stale_after_s`` (any host); a stale lock is renamed away and retaken.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

from wsi_ncmi.batch.atomic import pid_alive

DEFAULT_STALE_AFTER_S = 600.0


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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
