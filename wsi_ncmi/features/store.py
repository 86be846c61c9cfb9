"""The features HDF5 schema: writer, validating reader and the fast bag loader.

File ``<out>/features/<encoder>/<slide_id>.h5``, schema ``wsi-ncmi/features`` version
:data:`FEATURES_SCHEMA_VERSION`:

Datasets:
    ``features``: ``(N, D)`` float16 (default) or float32, contiguous; row ``i`` is
    the patch at ``coords[i]``. Invalid rows are zeros.
    ``coords``: ``(N, 2)`` int64, copied from the coords file (level-0 top-left x, y).
    ``valid``: ``(N,)`` bool; False where the tile failed to decode.

Attributes:
    ``schema``, ``schema_version``, ``package_version``, ``slide_id``, ``encoder``
    (name), ``encoder_spec`` (JSON of the :class:`EncoderSpec`), ``encoder_hash``,
    ``out_dim``, ``dtype``, ``coords_file``, ``coords_params_hash``, ``target_mpp``,
    ``patch_size_px``, ``extraction_hash`` (digest of spec, dtype, coords hash and
    schema version: the resume key), ``n_rows``, ``n_invalid``, ``random_init``,
    ``precision`` (compute precision used), ``config`` (JSON of the run config);
    since the slide-identity change also ``all_finite`` (True: every row was checked
    finite when written), ``coords_sha256`` (digest of the coordinates, as in the coords
    file) and the slide scan (``slide_size``, ``slide_mtime``, ``slide_width``,
    ``slide_height``, ``slide_fingerprint``; see :mod:`wsi_ncmi.features.provenance`).

A file exists under its final name only when complete (atomic rename), and readers
refuse files whose schema or version differ, or whose datasets disagree in length.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.errors import CacheSchemaError, DiskFullError, NonFiniteFeaturesError

if TYPE_CHECKING:
    import h5py
    import torch

FEATURES_SCHEMA = "wsi-ncmi/features"
FEATURES_SCHEMA_VERSION = 1
FEATURE_DTYPES = ("float16", "float32")
REQUIRED_ATTRS = (
    "schema",
    "schema_version",
    "slide_id",
    "encoder",
    "encoder_spec",
    "out_dim",
    "dtype",
    "coords_params_hash",
    "extraction_hash",
    "n_rows",
    "n_invalid",
)


def feature_path(out_dir: str | Path, encoder: str, slide_id: str) -> Path:
    """``<out>/features/<encoder>/<slide_id>.h5`` (``:``/``/`` in names become ``_``)."""
    safe = encoder.replace(":", "_").replace("/", "_")
    return Path(out_dir) / "features" / safe / f"{slide_id}.h5"


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
                "Free space or choose another --out directory, then rerun (finished slides "
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


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _open_checked(path: Path) -> h5py.File:
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise CacheSchemaError(
            f"cannot read features file {str(path)!r} (truncated or damaged?): {err}; "
            "re-run wsi-extract on the same --out (it redoes unreadable files)"
        ) from err
    attrs = h5.attrs
    schema, version = _decode(attrs.get("schema")), _decode(attrs.get("schema_version"))
    if "imported_from" in attrs:
        from wsi_ncmi.features.foreign import source_missing

        gone = source_missing(path)
        if gone is not None:
            h5.close()
            raise CacheSchemaError(
                f"{str(path)!r} registers imported features whose file {gone!r} is gone; "
                "put it back, or run wsi-import-features again on its new folder"
            )
    problem = ""
    if schema != FEATURES_SCHEMA:
        problem = f"is not a wsi-ncmi features file (schema={schema!r})"
    elif version != FEATURES_SCHEMA_VERSION:
        problem = f"has features schema version {version!r}, expected {FEATURES_SCHEMA_VERSION}"
    elif missing := [k for k in REQUIRED_ATTRS if k not in attrs]:
        problem = f"lacks attributes {missing}"
    elif not all(k in h5 for k in ("features", "coords", "valid")):
        problem = "lacks one of the datasets features/coords/valid"
    elif not (
        h5["features"].shape[0] == h5["coords"].shape[0] == h5["valid"].shape[0]
        and h5["features"].shape[0] == _decode(attrs["n_rows"])
    ):
        problem = "has datasets of different lengths"
    if problem:
        h5.close()
        raise CacheSchemaError(
            f"{str(path)!r} {problem}; re-run wsi-extract on the same --out (it redoes "
            "incomplete or mismatched files)"
        )
    return h5


def read_feature_attrs(path: str | Path) -> dict[str, Any]:
    """Validated attributes of a features file (JSON values decoded).

    Raises:
        CacheSchemaError: Not a complete features file of this schema version.
    """
    with _open_checked(Path(path)) as h5:
        attrs = {k: _decode(v) for k, v in h5.attrs.items()}
    for key in ("encoder_spec", "config"):
        if isinstance(attrs.get(key), str):
            attrs[key] = json.loads(attrs[key])
    return attrs


def is_complete(path: str | Path, *, extraction_hash: str, n_rows: int) -> bool:
    """Whether ``path`` is a valid features file made with the same inputs and settings."""
    if not Path(path).is_file():
        return False
    try:
        attrs = read_feature_attrs(path)
    except CacheSchemaError:
        return False
    return attrs["extraction_hash"] == extraction_hash and attrs["n_rows"] == n_rows


@dataclass(frozen=True)
class FeatureBag:
    """One slide's features file in memory.

    Attributes:
        features: ``(N, D)`` as stored (float16 or float32).
        coords: ``(N, 2)`` int64 level-0 top-left.
        valid: ``(N,)`` bool.
        attrs: Validated attributes.
    """

    features: np.ndarray
    coords: np.ndarray
    valid: np.ndarray
    attrs: dict[str, Any]


def read_features(path: str | Path) -> FeatureBag:
    """Read a whole features file (validated).

    Raises:
        CacheSchemaError: Wrong schema/version or inconsistent content.
    """
    path = Path(path)
    attrs = read_feature_attrs(path)
    with _open_checked(path) as h5:
        return FeatureBag(h5["features"][()], h5["coords"][()], h5["valid"][()], attrs)


def load_bag(
    path: str | Path,
    *,
    valid_only: bool = True,
    expect_encoder: str | None = None,
    expect_dim: int | None = None,
) -> torch.Tensor:
    """Load one slide's bag of features for training, fast.

    One validated open, then one plain read of the contiguous ``features`` bytes
    (``read_direct`` for chunked files); invalid rows are dropped only when there are
    any.

    Args:
        path: A features ``.h5`` file.
        valid_only: Drop rows whose tile failed to decode.
        expect_encoder: If given, the file's encoder name must equal it.
        expect_dim: If given, the feature dimension must equal it.

    Returns:
        ``(N, D)`` tensor in the stored dtype (float16 by default); cast as needed.

    Raises:
        CacheSchemaError: Wrong schema, version, encoder or dimension.
    """
    import h5py
    import torch

    path = Path(path)
    with _open_checked(path) as h5:
        encoder = _decode(h5.attrs["encoder"])
        ds = h5["features"]
        if expect_encoder is not None and encoder != expect_encoder:
            raise CacheSchemaError(
                f"{str(path)!r} holds {encoder!r} features, expected {expect_encoder!r}: "
                "one run uses one encoder; extract or register this slide with it"
            )
        if expect_dim is not None and ds.shape[1] != expect_dim:
            raise CacheSchemaError(
                f"{str(path)!r} has feature dim {ds.shape[1]}, expected {expect_dim}: "
                "one run uses one feature width; extract or register this slide again"
            )
        shape, dtype = ds.shape, ds.dtype
        linked = isinstance(h5.get("features", getlink=True), h5py.ExternalLink)
        # An imported file's features live in another file: read them through HDF5.
        offset = ds.id.get_offset() if ds.chunks is None and not linked else None
        out: np.ndarray | None = None
        if offset is None or not int(np.prod(shape)):
            out = np.empty(shape, dtype=dtype)
            if out.size:
                ds.read_direct(out)
        valid = h5["valid"][()] if valid_only and int(_decode(h5.attrs["n_invalid"])) else None
    if out is None:  # contiguous: one plain read of the file's bytes, no HDF5 layer
        count = int(np.prod(shape))
        out = np.fromfile(path, dtype=dtype, count=count, offset=int(offset or 0))
        if out.size != count:
            raise CacheSchemaError(
                f"{str(path)!r} is truncated: {out.size} of {count} feature values are in "
                "the file; re-run wsi-extract on the same --out (it redoes unreadable files)"
            )
        out = out.reshape(shape)
    if valid is not None:
        out = out[valid]
    return torch.from_numpy(out)
