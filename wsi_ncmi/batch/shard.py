"""Deterministic sharding of work items across independent jobs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from wsi_ncmi.errors import ConfigError

T = TypeVar("T")


def parse_shard(spec: str | None) -> tuple[int, int]:
    """Parse ``"i/N"`` (0-based ``i``, as in ``$SLURM_ARRAY_TASK_ID/N``).

    ``None`` or ``""`` means the whole cohort, ``(0, 1)``.

    Raises:
        ConfigError: Not of the form ``i/N`` with ``0 <= i < N``.
    """
    if not spec:
        return 0, 1
    try:
        i_str, n_str = spec.split("/")
        index, count = int(i_str), int(n_str)
    except ValueError as err:
        raise ConfigError(f"--shard must look like 'i/N' (e.g. 0/4), got {spec!r}") from err
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {spec!r}: need N >= 1 and 0 <= i < N (i is 0-based)")
    return index, count


def shard_of(key: str, count: int) -> int:
    """Stable shard number of ``key`` in ``[0, count)``, independent of list order."""
    digest = hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(items: Sequence[T], keys: Sequence[str], spec: str | None) -> list[T]:
    """The items of shard ``spec`` (see :func:`parse_shard`), in their original order."""
    index, count = parse_shard(spec)
    if count == 1:
        return list(items)
    return [item for item, key in zip(items, keys, strict=True) if shard_of(key, count) == index]
