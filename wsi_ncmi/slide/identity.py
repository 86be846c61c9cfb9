"""What a slide file *is*: size, mtime, level-0 dimensions and a fast content fingerprint.

Every coords and features file records the identity of the slide it was made from, so a
slide that was re-scanned or replaced under the same name is noticed: ``wsi-tile`` redoes
it, ``wsi-extract`` refuses stale coordinates, and training can check that a features
file and its coords file belong together.

The fingerprint is a SHA-256 of the file size and of fixed byte ranges: the first
64 KiB (the TIFF header and, for most writers, the first image file directories), the
last 64 KiB (where many writers put the directories), and 16 blocks of 4 KiB spread
evenly through the file (tile data). It reads about 192 KiB whatever the slide's size
(well under a millisecond from the page cache), and changes when a scanner writes
another file: any re-scan changes the tile bytes, the JPEG tables and usually the size.
It is not a full-content hash: an edit confined to bytes it does not read (a flipped bit
inside one tile) is not seen, and is not what it is for.

The modification time is recorded for people reading the files but is **not** used to
decide that a slide changed: a copy (``cp``, a restore from backup) changes the mtime of
an identical file, and redoing a cohort for that would be wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsi_ncmi.jsontypes import JSONObject

#: Bump when the fingerprint's byte ranges change (recorded next to the digest).
FINGERPRINT_VERSION = 1
HEAD_BYTES = 64 * 1024
TAIL_BYTES = 64 * 1024
BLOCK_BYTES = 4 * 1024
N_BLOCKS = 16

#: HDF5 attribute names of a slide identity (coords and features files).
IDENTITY_ATTRS: tuple[str, ...] = (
    "slide_size",
    "slide_mtime",
    "slide_width",
    "slide_height",
    "slide_fingerprint",
)


def fingerprint_file(path: str | Path) -> str:
    """Fast content fingerprint of a file (see the module docstring), ``v1:<hex 32>``.

    Raises:
        OSError: The file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        ranges = [(0, HEAD_BYTES), (max(0, size - TAIL_BYTES), TAIL_BYTES)]
        ranges += [(size * (i + 1) // (N_BLOCKS + 1), BLOCK_BYTES) for i in range(N_BLOCKS)]
        for offset, length in ranges:
            digest.update(os.pread(fh.fileno(), length, offset))
    return f"v{FINGERPRINT_VERSION}:{digest.hexdigest()[:32]}"


@dataclass(frozen=True)
class SlideIdentity:
    """The identity of one slide file.

    Attributes:
        size: File size in bytes.
        mtime: Modification time (seconds since the epoch; recorded, never compared).
        width: Level-0 width in pixels (``-1``, or any value ``<= 0``: unknown).
        height: Level-0 height in pixels (likewise).
        fingerprint: :func:`fingerprint_file` of the file (``""``: unknown, an old file).
    """

    size: int
    mtime: float
    width: int
    height: int
    fingerprint: str

    @classmethod
    def of_file(cls, path: str | Path, dimensions: tuple[int, int] | None = None) -> SlideIdentity:
        """Stat and fingerprint ``path``; ``dimensions`` are the level-0 size if known.

        Raises:
            OSError: The file cannot be read.
        """
        st = os.stat(path)
        width, height = dimensions if dimensions is not None else (-1, -1)
        return cls(st.st_size, st.st_mtime, int(width), int(height), fingerprint_file(path))

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> SlideIdentity:
        """The identity recorded in HDF5 attributes (missing values become unknown)."""
        return cls(
            size=int(attrs.get("slide_size", -1)),
            mtime=float(attrs.get("slide_mtime", -1.0)),
            width=int(attrs.get("slide_width", -1)),
            height=int(attrs.get("slide_height", -1)),
            fingerprint=str(attrs.get("slide_fingerprint", "")),
        )

    def to_attrs(self) -> JSONObject:
        """HDF5 attributes (:data:`IDENTITY_ATTRS`)."""
        return {
            "slide_size": self.size,
            "slide_mtime": self.mtime,
            "slide_width": self.width,
            "slide_height": self.height,
            "slide_fingerprint": self.fingerprint,
        }

    @property
    def has_fingerprint(self) -> bool:
        """Whether the fingerprint is known (files written before it was recorded lack it)."""
        return bool(self.fingerprint)

    def differences(self, other: SlideIdentity) -> list[str]:
        """What differs between two identities, as ``name old -> new`` phrases.

        Only known values are compared (size, dimensions and fingerprint; never mtime),
        so an old record without a fingerprint is compared on what it has.
        """
        found: list[str] = []
        if self.size >= 0 and other.size >= 0 and self.size != other.size:
            found.append(f"size {self.size:,} -> {other.size:,} bytes")
        known = min(self.width, self.height, other.width, other.height) > 0
        if known and (self.width, self.height) != (other.width, other.height):
            found.append(f"level 0 {self.width}x{self.height} -> {other.width}x{other.height}")
        if self.has_fingerprint and other.has_fingerprint and self.fingerprint != other.fingerprint:
            found.append(f"fingerprint {self.fingerprint} -> {other.fingerprint}")
        return found

    def describe(self) -> str:
        """One line for messages: size, dimensions and fingerprint."""
        dims = f"{self.width}x{self.height}" if self.width > 0 else "?x?"
        size = f"{self.size:,} bytes" if self.size >= 0 else "? bytes"
        return f"{size}, level 0 {dims}, fingerprint {self.fingerprint or 'not recorded'}"


__all__ = [
    "FINGERPRINT_VERSION",
    "IDENTITY_ATTRS",
    "SlideIdentity",
    "fingerprint_file",
]
