"""Writes one slide's features file (schema: :mod:`wsi_ncmi.features.schema`)."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.errors import CacheSchemaError, DiskFullError, NonFiniteFeaturesError
from wsi_ncmi.features.schema import FEATURE_DTYPES, FEATURES_SCHEMA, FEATURES_SCHEMA_VERSION

if TYPE_CHECKING:
    import h5py


class FeatureFileWriter:
    """Builds one slide's features file row block by row block, then writes it to ``path``.

    The HDF5 file is built in memory and written to ``path`` only by :meth:`finish`,
    with plain file I/O (see :mod:`wsi_ncmi.batch.h5image`): a failed write (full disk,
    file-size limit, read-only or unwritable folder, I/O error) raises
    :class:`~wsi_ncmi.errors.OutputWriteError` and can never leave HDF5 in a state that
    crashes the process later.

    Args:
        path: File to create (normally an :func:`~wsi_ncmi.batch.atomic_output` temp).
        coords: ``(N, 2)`` int64 coordinates, copied as is.
        out_dim: Feature dimension ``D``.
        dtype: ``"float16"`` or ``"float32"``.
        attrs: Attributes to store (see the module docstring).
    """

    def __init__(
        self,
        path: str | Path,
        coords: np.ndarray,
        out_dim: int,
        dtype: str,
        attrs: Mapping[str, Any],
    ) -> None:
        from wsi_ncmi.batch.h5image import memory_h5

        if dtype not in FEATURE_DTYPES:
            raise CacheSchemaError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
        n_rows = int(coords.shape[0])
        self.path = Path(path)
        self.n_rows = n_rows
        self.dtype = np.dtype(dtype)
        self._h5: h5py.File | None = None
        self._check_free_space(n_rows * (out_dim * self.dtype.itemsize + 17))
        self._h5 = memory_h5(track_order=True)
        try:
            self._create(coords, out_dim, dtype, attrs)
        except BaseException:
            self.abort()
            raise

    def _create(
        self, coords: np.ndarray, out_dim: int, dtype: str, attrs: Mapping[str, Any]
    ) -> None:
        h5 = self._h5
        assert h5 is not None  # opened by __init__
        n_rows = self.n_rows
        # Contiguous storage: a whole-bag read is one sequential read.
        self._features = h5.create_dataset("features", shape=(n_rows, out_dim), dtype=self.dtype)
        h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
        self._valid = np.zeros(n_rows, dtype=bool)
        self._written = np.zeros(n_rows, dtype=bool)
        base = {
            "schema": FEATURES_SCHEMA,
            "schema_version": FEATURES_SCHEMA_VERSION,
            "out_dim": out_dim,
            "dtype": dtype,
            "n_rows": n_rows,
        }
        for key, value in {**attrs, **base}.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value

    @property
    def rows_written(self) -> int:
        """How many rows have been written so far."""
        return int(self._written.sum())

    @property
    def n_invalid(self) -> int:
        """Rows written with ``valid=False``."""
        return int((self._written & ~self._valid).sum())

    def write_rows(self, start: int, features: np.ndarray, valid: np.ndarray) -> None:
        """Write rows ``start .. start + len(features)``; invalid rows become zeros.

        Raises:
            CacheSchemaError: Rows out of range.
            NonFiniteFeaturesError: NaN/inf values (or values that overflow the dtype).
        """
        from wsi_ncmi.batch.atomic import final_path_of

        stop = start + int(features.shape[0])
        if start < 0 or stop > self.n_rows:
            raise CacheSchemaError(f"rows {start}:{stop} outside 0:{self.n_rows}")
        with np.errstate(over="ignore"):  # an overflow is caught just below, with its fix
            block = np.where(valid[:, None], features, 0).astype(self.dtype)
        if not np.isfinite(block).all():
            raise NonFiniteFeaturesError(
                f"non-finite features (NaN/inf) in rows {start}:{stop} of "
                f"{str(final_path_of(self.path))!r} after casting to {self.dtype} (overflow?); "
                "rerun with --dtype float32, or check the encoder and its weights"
            )
        if self._h5 is None:
            raise CacheSchemaError(f"{str(final_path_of(self.path))!r} was already closed")
        self._features[start:stop] = block
        self._valid[start:stop] = valid
        self._written[start:stop] = True

    def finish(self, extra_attrs: Mapping[str, Any] | None = None) -> None:
        """Write the ``valid`` mask and final attributes, then write the file to ``path``.

        Raises:
            CacheSchemaError: Some rows were never written.
            OutputWriteError: Writing ``path`` failed (``DiskFullError`` for a full disk).
        """
        from wsi_ncmi.batch.atomic import final_path_of, output_write_error, write_errno
        from wsi_ncmi.batch.h5image import write_h5_image

        if self._h5 is None:
            return
        if not self._written.all():
            raise CacheSchemaError(
                f"only {self.rows_written} of {self.n_rows} rows were written; not finishing"
            )
        h5, self._h5 = self._h5, None
        try:
            h5.create_dataset("valid", data=self._valid)
            # Every written block was checked finite (write_rows), so the file is too.
            final = {**(extra_attrs or {}), "n_invalid": self.n_invalid, "all_finite": True}
            for key, value in final.items():
                h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
        except BaseException:
            h5.close()
            raise
        try:
            write_h5_image(h5, self.path)
        except OSError as err:
            code = write_errno(err)
            if code is None:
                raise
            raise output_write_error(final_path_of(self.path), code) from err

    def _check_free_space(self, data_bytes: int) -> None:
        """Refuse to start a file that cannot fit.

        Raises:
            DiskFullError: Less free space than the data plus 1 % and 16 KiB of metadata.
        """
        from wsi_ncmi.batch.atomic import final_path_of

        need = data_bytes + data_bytes // 100 + 16 * 1024
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise DiskFullError(
                f"no space left on the device while writing {str(final_path_of(self.path))!r}"
                f": it needs about {need:,} bytes and {free:,} are free; nothing was written. "
                "Free space or choose another --out_dir directory, then rerun (finished slides "
                "are kept and skipped)",
                errno=errno.ENOSPC,
                path=str(final_path_of(self.path)),
            )

    def close(self) -> None:
        """Drop the unfinished in-memory file (idempotent; nothing is written)."""
        h5, self._h5 = self._h5, None
        if h5 is not None:
            h5.close()

    def abort(self) -> None:
        """Discard an unfinished file (the same as :meth:`close`; never raises).

        The file lives in memory until :meth:`finish`, so there is nothing on disk to
        undo here; a partial ``path`` from a failed :meth:`finish` is removed by the
        caller's :func:`~wsi_ncmi.batch.atomic_output`.
        """
        with contextlib.suppress(Exception):
            self.close()


__all__ = ["FeatureFileWriter"]
