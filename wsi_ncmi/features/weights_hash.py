"""Content hashes of local checkpoints (``--weights PATH``), memoised on disk.

The resume key of a features file must change when the weights change, even when a new
checkpoint replaces the old one under the same path, and must not change when the same
file is only moved. So the key holds the file's SHA-256, not its path. Hashing a
multi-GB checkpoint takes seconds to minutes, so the digest is memoised in a small JSON
file keyed by ``(resolved path, size, mtime_ns)``: any rewrite of the file changes its
mtime (and usually its size) and forces a rehash. The memo is written atomically; two
runs writing it at once only cost a rehash, never a wrong digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from wsi_ncmi.jsontypes import JSONObject

CACHE_VERSION = 1
CHUNK_BYTES = 8 * 1024 * 1024
_MAX_ENTRIES = 256


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 8 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _load(cache: Path) -> JSONObject:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(cache.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
            entries = data.get("entries")
            if isinstance(entries, dict):
                return entries
    return {}


def weights_sha256(path: str | Path, cache: str | Path | None = None) -> str:
    """SHA-256 of the checkpoint at ``path``, memoised in the JSON file ``cache``.

    Args:
        path: The checkpoint file.
        cache: Memo file (created if missing); ``None`` hashes every time.

    Returns:
        The hex digest (64 characters).

    Raises:
        OSError: The checkpoint cannot be read (missing file, permissions).
    """
    resolved = Path(path).resolve()
    st = resolved.stat()
    key = str(resolved)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entries = _load(Path(cache)) if cache is not None else {}
    entry = entries.get(key)
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()):
        sha = entry.get("sha256")
        if isinstance(sha, str) and len(sha) == 64:
            return sha
    sha = sha256_file(resolved)
    if cache is not None:
        from wsi_ncmi.batch import write_text_atomic

        entries = _load(Path(cache))  # re-read: another run may have added entries
        entries[key] = {**stamp, "sha256": sha}
        if len(entries) > _MAX_ENTRIES:  # keep the memo small: drop the oldest entries
            entries = dict(list(entries.items())[-_MAX_ENTRIES:])
        text = json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1) + "\n"
        with contextlib.suppress(OSError):  # a read-only out dir only costs a rehash later
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cache, text, fsync=False)
    return sha


__all__ = ["sha256_file", "weights_sha256"]
