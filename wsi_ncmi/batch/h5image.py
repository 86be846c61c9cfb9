"""HDF5 outputs built in memory, then written to disk with plain file I/O.

Why: when a write fails under HDF5 (a full disk, a file-size limit, an I/O error), the
library keeps dirty buffers it cannot flush. Every later operation on that file, even
dropping the last reference to one of its datasets, tries the write again and fails,
and the file's close at interpreter exit can crash the process (a segmentation fault
was measured under ``ulimit -f``). Redirecting the descriptor elsewhere does not help
when the limit is per process (``RLIMIT_FSIZE`` applies to every regular file).

So HDF5 never touches the output file: the file is built with the ``core`` driver in
memory (no backing store), its finished image is taken with ``get_file_image`` and
written with ``open``/``write``, whose failures are ordinary ``OSError`` exceptions with an
errno. A failed write leaves HDF5's state untouched; the caller's
:func:`~wsi_ncmi.batch.atomic_output` deletes the temp file by path. The cost is the
file's size in memory while it is built (plus one copy while it is written).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import h5py

#: Growth step of the in-memory file (bytes).
BLOCK_BYTES = 1 << 20


def memory_h5(*, track_order: bool = True) -> h5py.File:
    """A new, empty HDF5 file that lives only in memory (close it when done)."""
    import h5py

    name = f"wsi-ncmi-memory-{secrets.token_hex(8)}.h5"
    return h5py.File(
        name,
        "w",
        driver="core",
        backing_store=False,
        block_size=BLOCK_BYTES,
        track_order=track_order,
    )


def write_h5_image(h5: h5py.File, path: str | Path) -> int:
    """Close the in-memory file ``h5`` and write its image to ``path``; return its size.

    ``h5`` is closed in every case. A failed write raises the ``OSError`` of ``write``
    (with its errno) and may leave a partial ``path``: write to a temp path (atomic).
    """
    try:
        h5.flush()
        image = h5.id.get_file_image()
    finally:
        h5.close()
    with open(path, "wb") as fh:
        fh.write(image)
    return len(image)


__all__ = ["BLOCK_BYTES", "memory_h5", "write_h5_image"]
