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
    ``patch_size_px``, ``extraction_hash`` (digest of spec, dtype, coords hash, slide
    reader and schema version: the resume key), ``reader`` (the backend that read the
    pixels, since issue 26), ``n_rows``, ``n_invalid``, ``random_init``,
    ``precision`` (compute precision used), ``config`` (JSON of the run config);
    since the slide-identity change also ``all_finite`` (True: every row was checked
    finite when written), ``coords_sha256`` (digest of the coordinates, as in the coords
    file) and the slide scan (``slide_size``, ``slide_mtime``, ``slide_width``,
    ``slide_height``, ``slide_fingerprint``; see :mod:`wsi_ncmi.features.provenance`).

A file exists under its final name only when complete (atomic rename), and readers
refuse files whose schema or version differ, or whose datasets disagree in length.
"""

from __future__ import annotations

from pathlib import Path

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
    """``<out>/features/<encoder>/<slide_id>.h5`` (``:``/``/`` in names become ``_``).

    Raises:
        ConfigError: The path would lead outside ``out_dir`` (an id with ``..`` or ``/``).
    """
    from wsi_ncmi.ids import path_under

    safe = encoder.replace(":", "_").replace("/", "_")
    return path_under(out_dir, Path(out_dir) / "features" / safe / f"{slide_id}.h5")


__all__ = [
    "FEATURES_SCHEMA",
    "FEATURES_SCHEMA_VERSION",
    "FEATURE_DTYPES",
    "REQUIRED_ATTRS",
    "feature_path",
]
