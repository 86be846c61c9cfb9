"""Reads features files: the validating reader and the fast bag loader.

The schema is described in :mod:`wsi_ncmi.features.schema` and the files are written by
:class:`~wsi_ncmi.features.writer.FeatureFileWriter`; both are re-exported here, so
``wsi_ncmi.features.store`` names the whole features store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_ncmi.errors import CacheSchemaError
from wsi_ncmi.features.schema import (
    FEATURE_DTYPES,
    FEATURES_SCHEMA,
    FEATURES_SCHEMA_VERSION,
    REQUIRED_ATTRS,
    feature_path,
)
from wsi_ncmi.features.writer import FeatureFileWriter
from wsi_ncmi.jsontypes import JSONObject, as_int, as_str
from wsi_ncmi.tiling.schema import decode_attr, decoded_attrs

if TYPE_CHECKING:
    import h5py
    import torch


def _open_checked(path: Path) -> h5py.File:
    import h5py

    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise CacheSchemaError(
            f"cannot read features file {str(path)!r} (truncated or damaged?): {err}; "
            "re-run wsi-extract on the same --out_dir (it redoes unreadable files)"
        ) from err
    attrs = h5.attrs
    schema, version = decode_attr(attrs.get("schema")), decode_attr(attrs.get("schema_version"))
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
        and h5["features"].shape[0] == decode_attr(attrs["n_rows"])
    ):
        problem = "has datasets of different lengths"
    if problem:
        from wsi_ncmi.features.foreign_checks import import_problem

        imported = import_problem(path, attrs)  # the source and its fix, not wsi-extract
        h5.close()
        raise CacheSchemaError(
            f"{str(path)!r} {problem}; "
            + (imported or "re-run wsi-extract on the same --out_dir (it redoes incomplete or "
               "mismatched files)")
        )  # fmt: skip
    return h5


def read_feature_attrs(path: str | Path) -> JSONObject:
    """Validated attributes of a features file (JSON values decoded).

    Raises:
        CacheSchemaError: Not a complete features file of this schema version.
    """
    with _open_checked(Path(path)) as h5:
        attrs = decoded_attrs(h5)
    for key in ("encoder_spec", "config"):
        value = attrs.get(key)
        if isinstance(value, str):
            attrs[key] = json.loads(value)
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


@dataclass(frozen=True)
class _Layout:
    """What a validated open of a contiguous features file found (see :func:`load_bag`)."""

    encoder: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    offset: int
    valid: np.ndarray | None


#: Layouts of files already validated by this process, keyed by the file's identity
#: (:func:`wsi_ncmi.batch.atomic.file_identity`) and ``valid_only``: a rewritten file has
#: another identity and is validated again.
_LAYOUTS: dict[tuple[int, int, int, int, bool], _Layout] = {}
_MAX_LAYOUTS = 100_000


def _check_expected(
    path: Path, encoder: str, dim: int, expect_encoder: str | None, expect_dim: int | None
) -> None:
    if expect_encoder is not None and encoder != expect_encoder:
        raise CacheSchemaError(
            f"{str(path)!r} holds {encoder!r} features, expected {expect_encoder!r}: "
            "one run uses one encoder; extract or register this slide with it"
        )
    if expect_dim is not None and dim != expect_dim:
        raise CacheSchemaError(
            f"{str(path)!r} has feature dim {dim}, expected {expect_dim}: "
            "one run uses one feature width; extract or register this slide again"
        )


def _read_contiguous(path: Path, layout: _Layout) -> np.ndarray:
    """One plain read of a contiguous ``features`` dataset's bytes, no HDF5 layer."""
    count = int(np.prod(layout.shape))
    out = np.fromfile(path, dtype=layout.dtype, count=count, offset=layout.offset)
    if out.size != count:
        raise CacheSchemaError(
            f"{str(path)!r} is truncated: {out.size} of {count} feature values are in "
            "the file; re-run wsi-extract on the same --out_dir (it redoes unreadable files)"
        )
    out = out.reshape(layout.shape)
    return out if layout.valid is None else out[layout.valid]


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
    any. A contiguous file this process has already validated, unchanged since (same
    inode, size and modification time), is read without opening it through HDF5 again:
    a training run reads every bag once per epoch.

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

    from wsi_ncmi.batch.atomic import file_identity

    path = Path(path)
    identity = file_identity(path)  # None: _open_checked says what is wrong
    key = None if identity is None else (*identity, valid_only)
    known = _LAYOUTS.get(key) if key is not None else None
    if known is not None:
        _check_expected(path, known.encoder, known.shape[1], expect_encoder, expect_dim)
        return torch.from_numpy(_read_contiguous(path, known))
    with _open_checked(path) as h5:
        encoder = as_str(decode_attr(h5.attrs["encoder"]))
        ds = h5["features"]
        _check_expected(path, encoder, ds.shape[1], expect_encoder, expect_dim)
        shape, dtype = ds.shape, ds.dtype
        linked = isinstance(h5.get("features", getlink=True), h5py.ExternalLink)
        # An imported file's features live in another file: read them through HDF5.
        offset = ds.id.get_offset() if ds.chunks is None and not linked else None
        out: np.ndarray | None = None
        if offset is None or not int(np.prod(shape)):
            out = np.empty(shape, dtype=dtype)
            if out.size:
                ds.read_direct(out)
        valid = (
            h5["valid"][()] if valid_only and as_int(decode_attr(h5.attrs["n_invalid"])) else None
        )
    if out is not None:
        return torch.from_numpy(out if valid is None else out[valid])
    layout = _Layout(encoder, tuple(shape), dtype, int(offset or 0), valid)
    out = _read_contiguous(path, layout)
    if key is not None:
        if len(_LAYOUTS) >= _MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = layout
    return torch.from_numpy(out)


__all__ = [
    "FEATURES_SCHEMA",
    "FEATURES_SCHEMA_VERSION",
    "FEATURE_DTYPES",
    "REQUIRED_ATTRS",
    "FeatureBag",
    "FeatureFileWriter",
    "feature_path",
    "is_complete",
    "load_bag",
    "read_feature_attrs",
    "read_features",
]
