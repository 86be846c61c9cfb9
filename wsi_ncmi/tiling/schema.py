"""The coordinates HDF5 schema shared by ``wsi-tile`` (writer) and ``wsi-extract`` (reader).

File ``<out>/coords/<slide_id>.h5``, schema ``wsi-ncmi/coords`` version
:data:`COORDS_SCHEMA_VERSION`:

Datasets:
    ``coords``: ``(N, 2)`` int64, level-0 ``(x, y)`` of each patch's top-left corner.
    ``tissue_fraction``: ``(N,)`` float32, fraction of the patch inside the tissue mask.

Attributes (all required unless noted):
    ``schema`` (``"wsi-ncmi/coords"``), ``schema_version`` (int), ``package_version``,
    ``slide_id``, ``slide_path``, ``slide_width``, ``slide_height``, ``backend``,
    ``vendor``, ``mpp_x``, ``mpp_y``, ``mpp_source``, ``target_mpp``, ``patch_size_px``
    (at the target resolution), ``patch_size_level0`` (float, level-0 pixels covered by
    one patch), ``read_level``, ``read_downsample`` (that level's downsample),
    ``read_size_px`` (pixels read at ``read_level``, before resizing),
    ``resize_factor`` (``patch_size_px / read_size_px``, exact as a float),
    ``overlap_px``, ``stride_level0``, ``min_tissue``, ``segmentation`` (JSON of the
    mask parameters), ``params_hash`` (hex digest of every parameter that changes the
    coordinates), ``status`` (``ok`` or ``no_tissue``).

Provenance attributes (written since the slide-identity change; files without them are
still read, see :mod:`wsi_ncmi.slide.identity`): ``slide_size`` (bytes),
``slide_mtime``, ``slide_fingerprint`` (fast content fingerprint of the slide file) and
``coords_sha256`` (:func:`coords_digest` of the ``coords`` dataset, which features files
copy so that training can check that a features file and its coords file belong
together). ``slide_path`` is the path as given (a symbolic link is not resolved).

Extra attributes are allowed and preserved. A reader refuses a file whose schema name
or version differs, or whose datasets disagree in length, with :class:`CacheSchemaError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.errors import CacheSchemaError
from wsi_ncmi.jsontypes import JSONObject, JSONValue

COORDS_SCHEMA = "wsi-ncmi/coords"
COORDS_SCHEMA_VERSION = 1

REQUIRED_ATTRS: tuple[str, ...] = (
    "schema",
    "schema_version",
    "package_version",
    "slide_id",
    "slide_path",
    "slide_width",
    "slide_height",
    "backend",
    "vendor",
    "mpp_x",
    "mpp_y",
    "mpp_source",
    "target_mpp",
    "patch_size_px",
    "patch_size_level0",
    "read_level",
    "read_downsample",
    "read_size_px",
    "resize_factor",
    "overlap_px",
    "stride_level0",
    "min_tissue",
    "segmentation",
    "params_hash",
    "status",
)


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable hex digest (16 chars) of a JSON-serialisable parameter mapping."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def coords_digest(coords: np.ndarray) -> str:
    """Hex SHA-256 (first 32 chars) of a coordinates array as int64 ``(N, 2)``, C order."""
    blob = np.ascontiguousarray(np.asarray(coords, dtype=np.int64).reshape(-1, 2)).tobytes()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class CoordsFile:
    """Content of one coordinates file.

    Attributes:
        path: Where it was read from.
        coords: ``(N, 2)`` int64 level-0 top-left ``(x, y)``.
        tissue_fraction: ``(N,)`` float32.
        attrs: Every attribute, decoded to Python types.
    """

    path: Path
    coords: np.ndarray
    tissue_fraction: np.ndarray
    attrs: dict[str, Any]

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def slide_id(self) -> str:
        """The slide id."""
        return str(self.attrs["slide_id"])

    @property
    def params_hash(self) -> str:
        """Digest of the tiling parameters that produced these coordinates."""
        return str(self.attrs["params_hash"])

    @property
    def coords_sha256(self) -> str:
        """:func:`coords_digest` of the coordinates (computed for files that lack it)."""
        return str(self.attrs.get("coords_sha256") or coords_digest(self.coords))


def decode_attr(value: object) -> JSONValue:
    """An HDF5 attribute as a plain Python value.

    ``bytes`` → ``str`` (UTF-8), NumPy scalars → ``int``/``float``/``bool``, arrays →
    lists, ``None`` and Python scalars unchanged; anything else a foreign file may hold
    (an ``h5py.Empty``, an object reference) as its ``str``. Used for every coords and
    features file.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        listed: JSONValue = value.tolist()
        return listed
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def decoded_attrs(obj: Any) -> JSONObject:
    """Every attribute of an HDF5 file, group or dataset, through :func:`decode_attr`."""
    return {key: decode_attr(value) for key, value in obj.attrs.items()}


def write_coords(
    path: str | Path,
    coords: np.ndarray,
    tissue_fraction: np.ndarray,
    attrs: Mapping[str, Any],
) -> None:
    """Write a coordinates file at ``path`` (the caller makes it atomic).

    Raises:
        CacheSchemaError: Missing attributes or inconsistent array shapes.
        OSError: Writing ``path`` failed (:func:`~wsi_ncmi.batch.atomic_output` turns it
            into an :class:`~wsi_ncmi.errors.OutputWriteError`).
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    tissue_fraction = np.asarray(tissue_fraction, dtype=np.float32).reshape(-1)
    if coords.shape[0] != tissue_fraction.shape[0]:
        raise CacheSchemaError(
            f"coords ({coords.shape[0]}) and tissue_fraction ({tissue_fraction.shape[0]}) "
            "differ in length"
        )
    full = {"schema": COORDS_SCHEMA, "schema_version": COORDS_SCHEMA_VERSION, **attrs}
    missing = [k for k in REQUIRED_ATTRS if k not in full]
    if missing:
        raise CacheSchemaError(f"cannot write {str(path)!r}: missing attributes {missing}")
    from wsi_ncmi.batch.h5image import memory_h5, write_h5_image

    h5 = memory_h5(track_order=True)  # HDF5 never writes to disk (see batch.h5image)
    try:
        h5.create_dataset("coords", data=coords)
        h5.create_dataset("tissue_fraction", data=tissue_fraction)
        for key, value in full.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
    except BaseException:
        h5.close()
        raise
    write_h5_image(h5, path)


def read_coords(path: str | Path, *, expect_hash: str | None = None) -> CoordsFile:
    """Read and validate a coordinates file.

    Args:
        path: The ``.h5`` file.
        expect_hash: If given, the file's ``params_hash`` must equal it.

    Raises:
        CacheSchemaError: Not a wsi-ncmi coords file, another schema version, missing
            attributes or datasets, inconsistent lengths, or a different parameter hash.
    """
    import h5py

    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise CacheSchemaError(f"cannot read coords file {str(path)!r}: {err}") from err
    with h5:
        attrs = decoded_attrs(h5)
        if attrs.get("schema") != COORDS_SCHEMA:
            raise CacheSchemaError(
                f"{str(path)!r} is not a wsi-ncmi coords file (schema={attrs.get('schema')!r}); "
                "for CLAM/TRIDENT coordinate files use the import helper in "
                "wsi_ncmi.features, or re-run wsi-tile"
            )
        if attrs.get("schema_version") != COORDS_SCHEMA_VERSION:
            raise CacheSchemaError(
                f"{str(path)!r} has coords schema version {attrs.get('schema_version')!r}, "
                f"this wsi-ncmi reads version {COORDS_SCHEMA_VERSION}; re-run wsi-tile into "
                "a fresh --out_dir directory"
            )
        missing = [k for k in REQUIRED_ATTRS if k not in attrs]
        if missing or "coords" not in h5 or "tissue_fraction" not in h5:
            raise CacheSchemaError(
                f"{str(path)!r} is incomplete: missing attributes {missing} or datasets; "
                "delete it and re-run wsi-tile"
            )
        coords = np.asarray(h5["coords"][()], dtype=np.int64).reshape(-1, 2)
        fraction = np.asarray(h5["tissue_fraction"][()], dtype=np.float32)
    if coords.shape[0] != fraction.shape[0]:
        raise CacheSchemaError(
            f"{str(path)!r}: coords has {coords.shape[0]} rows but tissue_fraction has "
            f"{fraction.shape[0]}; delete it and re-run wsi-tile"
        )
    segmentation = attrs.get("segmentation")
    if isinstance(segmentation, str):
        attrs["segmentation"] = json.loads(segmentation)
    if expect_hash is not None and attrs["params_hash"] != expect_hash:
        raise CacheSchemaError(
            f"{str(path)!r} was made with tiling parameters {attrs['params_hash']}, "
            f"expected {expect_hash}; re-run wsi-tile with the intended parameters"
        )
    return CoordsFile(path, coords, fraction, attrs)
