"""Is a features file a finished, usable output of this extraction? And if not, why not.

``wsi-extract`` skips a slide only when its features file would pass training's checks:
schema and lengths (:func:`~wsi_ncmi.features.store.read_feature_attrs`), the same
extraction settings (``extraction_hash``), the same coordinates and slide scan as the
coords file now, and finite values in every row. Anything else is redone, and the run
report says why (``redone: …``).

The value check reads the file's features once (sequential, about as fast as the disk);
every file is finite when written (the writer refuses NaN/inf rows and records
``all_finite``), so a non-finite value found here means the file was changed or damaged
since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_ncmi.errors import CacheSchemaError

#: Rows read at a time by the value check.
CHUNK_ROWS = 16384


def count_nonfinite_rows(path: str | Path) -> int:
    """Rows of a features file holding NaN or infinity (read in chunks).

    Raises:
        CacheSchemaError: The file cannot be read.
    """
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            ds = h5["features"]
            bad = 0
            for start in range(0, ds.shape[0], CHUNK_ROWS):
                block = ds[start : start + CHUNK_ROWS]
                bad += int((~np.isfinite(block)).any(axis=1).sum())
            return bad
    except (OSError, KeyError) as err:
        raise CacheSchemaError(f"cannot read the features of {str(path)!r}: {err}") from err


def features_problem(
    path: str | Path,
    *,
    extraction_hash: str,
    coords: np.ndarray,
    coords_sha256: str = "",
    slide_fingerprint: str = "",
) -> str:
    """Why ``path`` is not a usable output for these inputs, or ``""`` when it is.

    Args:
        path: The features file.
        extraction_hash: The resume key of this run (encoder, dtype, coords parameters).
        coords: The coordinates the features must have been made from.
        coords_sha256: Their digest, compared with the file's record when both exist.
        slide_fingerprint: The slide scan of the coords, compared likewise.
    """
    import h5py

    from wsi_ncmi.features.store import read_feature_attrs

    path = Path(path)
    if not path.is_file():
        return "no features file"
    try:
        attrs = read_feature_attrs(path)
    except CacheSchemaError as err:
        return f"unreadable or incomplete ({str(err).split('; re-run')[0]})"
    if attrs["extraction_hash"] != extraction_hash:
        return (
            "made with other extraction settings (encoder, dtype, slide reader) or coords "
            "parameters"
        )
    recorded_fp = str(attrs.get("slide_fingerprint") or "")
    if recorded_fp and slide_fingerprint and recorded_fp != slide_fingerprint:
        return "made from another scan of the slide"
    recorded_sha = str(attrs.get("coords_sha256") or "")
    if recorded_sha and coords_sha256:
        same = recorded_sha == coords_sha256
    elif attrs["n_rows"] != len(coords):
        same = False
    else:  # an older file without the digest: compare the coordinates themselves
        try:
            with h5py.File(path, "r") as h5:
                same = np.array_equal(h5["coords"][()], np.asarray(coords).reshape(-1, 2))
        except (OSError, KeyError):
            return "unreadable coordinates"
    if not same:
        return "made from other coordinates (the slide was re-tiled)"
    if attrs["n_rows"] != len(coords):
        return f"{attrs['n_rows']} rows, the coords have {len(coords)}"
    try:
        bad = count_nonfinite_rows(path)
    except CacheSchemaError as err:
        return f"unreadable features ({err})"
    if bad:
        return f"NaN/inf features in {bad} of {len(coords)} rows"
    return ""


@dataclass
class CacheJudge:
    """Memoised :func:`features_problem` for one run, with ``--redo`` and ``--force``.

    A file is judged once per (path, size, mtime); ``--force`` and ``--redo`` apply to
    files older than this run, so several concurrent forced jobs still share the slides
    (a file a job of this run wrote is done).

    Attributes:
        redo: Slide ids to extract again even if their files are fine.
        force: Extract every slide again.
        started: Start of this run (``time.time()``); files modified since are this run's.
    """

    redo: frozenset[str] = frozenset()
    force: bool = False
    started: float = 0.0
    _memo: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def problem(
        self,
        slide_id: str,
        path: Path,
        *,
        extraction_hash: str,
        coords: np.ndarray,
        coords_sha256: str = "",
        slide_fingerprint: str = "",
    ) -> str:
        """Why the slide must be extracted (again), or ``""`` when its file is done."""
        try:
            st = os.stat(path)
        except OSError:
            return "no features file"
        if (self.force or slide_id in self.redo) and st.st_mtime < self.started:
            return "--force" if self.force else "--redo"
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._memo:
            self._memo[key] = features_problem(
                path,
                extraction_hash=extraction_hash,
                coords=coords,
                coords_sha256=coords_sha256,
                slide_fingerprint=slide_fingerprint,
            )
        return self._memo[key]


__all__ = ["CHUNK_ROWS", "CacheJudge", "count_nonfinite_rows", "features_problem"]
