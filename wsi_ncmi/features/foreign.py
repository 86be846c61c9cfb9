"""Bring your own features: register TRIDENT or CLAM feature files without re-extraction.

Many labs have already extracted UNI, CONCH or other features with TRIDENT or CLAM. Their
files hold what training needs: ``features`` ``(N, D)`` and ``coords`` ``(N, 2)`` (level-0
top-left corners) in HDF5, and CLAM also writes ``pt_files/<slide>.pt`` tensors.
:func:`register_foreign_features` writes, for each slide, a small wsi-ncmi features file at
``<out>/features/<encoder>/<slide_id>.h5`` (a few KiB) whose ``features`` and ``coords``
are HDF5 *external links* to the original file, with the attributes our readers check and
the provenance of the import. Training, the bench, attention maps and QuPath export then
read them like ``wsi-extract`` output; nothing is copied, except CLAM ``.pt`` tensors (not
HDF5), which are stored in the sidecar.

Layouts read (as those tools write them):

* ``trident``: ``<job>/<mag>x_<ps>px_<overlap>px_overlap/features_<encoder>/<slide>.h5``
  with ``features`` and ``coords``; the coords dataset's attributes (``patch_size``,
  ``patch_size_level0``, ``target_magnification``) give the patch size, and µm/px is
  ``10 / target_magnification`` unless given.
* ``clam``: ``<feat_dir>/h5_files/<slide>.h5`` with ``features`` and ``coords``; ``coords``
  attributes ``patch_size``/``patch_level``; µm/px must be given (CLAM does not record it).

A file whose ``coords`` attributes belong to the other tool is refused (``--format``
names the wrong layout), a CLAM import without µm/px is refused, and so is a file with
NaN/inf values (checked at registration, naming the file and the fix).
* ``clam-pt``: ``<feat_dir>/pt_files/<slide>.pt`` plus the coords of CLAM's patching step
  (``<patch_dir>/patches/<slide>.h5``, dataset ``coords``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wsi_ncmi.errors import CacheSchemaError, ConfigError, NonFiniteFeaturesError
from wsi_ncmi.features.foreign_checks import (
    check_layout,
    folder_hint,
    nonfinite_rows,
    reimport_fix,
)
from wsi_ncmi.jsontypes import JSONValue, as_float, as_int
from wsi_ncmi.tiling.schema import decode_attr

ForeignFormat = Literal["trident", "clam", "clam-pt"]
FORMATS: tuple[str, ...] = ("trident", "clam", "clam-pt")


@dataclass(frozen=True)
class ForeignBag:
    """What one foreign file provides.

    Attributes:
        slide_id: The file's stem.
        source: The file read (``.h5`` or ``.pt``).
        coords_source: The HDF5 file holding ``coords``.
        n_rows: Patches ``N``.
        out_dim: Feature width ``D``.
        dtype: Stored dtype of the features.
        patch_size_px: Patch side at the features' resolution, if recorded.
        target_mpp: µm/px of the patches, if recorded or given.
    """

    slide_id: str
    source: Path
    coords_source: Path
    n_rows: int
    out_dim: int
    dtype: str
    patch_size_px: int | None
    target_mpp: float | None


def _attr(attrs: Any, *names: str) -> JSONValue:
    for name in names:
        if name in attrs:
            return decode_attr(attrs[name])
    return None


def inspect_foreign(
    path: Path,
    fmt: ForeignFormat,
    *,
    coords_dir: Path | None = None,
    mpp: float | None = None,
    patch_size_px: int | None = None,
) -> ForeignBag:
    """Read the shape and patch geometry of one foreign features file.

    Args:
        path: The TRIDENT/CLAM ``.h5`` file, or a CLAM ``.pt`` file.
        fmt: ``trident``, ``clam`` or ``clam-pt``.
        coords_dir: ``clam-pt``: the folder of CLAM's patch ``.h5`` files.
        mpp: µm/px of the patches (overrides what the file implies).
        patch_size_px: Patch side in pixels (overrides the file's attributes).

    Returns:
        The bag's description.

    Raises:
        CacheSchemaError: The file lacks ``features``/``coords`` or they disagree.
        ConfigError: ``clam-pt`` without ``coords_dir``, or an unknown format.
    """
    import h5py

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    coords_source = path
    if fmt == "clam-pt":
        if coords_dir is None:
            raise ConfigError("format 'clam-pt' needs --coords_dir (CLAM's patches/ folder)")
        import torch

        features = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(features, torch.Tensor) or features.ndim != 2:
            raise CacheSchemaError(f"{str(path)!r} does not hold an (N, D) tensor")
        n_rows, out_dim, dtype = int(features.shape[0]), int(features.shape[1]), "float32"
        coords_source = coords_dir / f"{path.stem}.h5"
    try:
        with h5py.File(coords_source, "r") as h5:
            if "coords" not in h5 or (fmt != "clam-pt" and "features" not in h5):
                raise CacheSchemaError(
                    f"{str(coords_source)!r} lacks the 'coords'"
                    + ("" if fmt == "clam-pt" else " or 'features'")
                    + f" dataset of a {fmt} file"
                )
            coords = h5["coords"]
            attrs = coords.attrs
            if fmt != "clam-pt":
                ds = h5["features"]
                if ds.ndim == 3 and ds.shape[0] == 1:  # some CLAM versions store (1, N, D)
                    raise CacheSchemaError(
                        f"{str(path)!r} stores features as (1, N, D); re-save them as (N, D)"
                    )
                n_rows, out_dim = int(ds.shape[0]), int(ds.shape[1])
                dtype = str(ds.dtype)
            if coords.shape != (n_rows, 2):
                raise CacheSchemaError(
                    f"{str(coords_source)!r}: coords {coords.shape} do not match {n_rows} "
                    "feature rows"
                )
            check_layout(path, fmt, attrs)
            recorded_size = _attr(attrs, "patch_size")
            size = patch_size_px or (None if recorded_size is None else as_int(recorded_size))
            recorded_mpp = _attr(attrs, "mpp", "target_mpp")
            file_mpp = None if recorded_mpp is None else as_float(recorded_mpp)
            magnification = _attr(attrs, "target_magnification")
            if magnification:
                file_mpp = 10.0 / as_float(magnification)
    except OSError as err:
        raise CacheSchemaError(f"cannot read {str(coords_source)!r}: {err}") from err
    if fmt != "trident" and mpp is None and file_mpp is None:
        raise ConfigError(
            f"--format {fmt}: CLAM does not record the patches' µm/px and {str(coords_source)!r} "
            "does not either; give --mpp (the µm/px of the level CLAM read, e.g. 0.5 for "
            "20x or 0.25 for 40x)"
        )
    return ForeignBag(
        slide_id=path.stem,
        source=path,
        coords_source=coords_source,
        n_rows=n_rows,
        out_dim=out_dim,
        dtype=dtype,
        patch_size_px=None if size is None else int(size),
        target_mpp=mpp if mpp is not None else file_mpp,
    )


def write_sidecar(bag: ForeignBag, out_root: Path, encoder: str, fmt: ForeignFormat) -> Path:
    """Write the wsi-ncmi features file that points at ``bag``'s data (atomically).

    Returns:
        ``<out_root>/features/<encoder>/<slide_id>.h5``.
    """
    import h5py

    from wsi_ncmi.batch import atomic_output
    from wsi_ncmi.batch.h5image import memory_h5, write_h5_image
    from wsi_ncmi.features.schema import FEATURES_SCHEMA, FEATURES_SCHEMA_VERSION, feature_path

    target = feature_path(out_root, encoder, bag.slide_id)
    source = bag.source.resolve()
    stat = source.stat()
    provenance = {
        "format": fmt,
        "source": str(source),
        "source_size": stat.st_size,
        "source_mtime": stat.st_mtime,
        "coords_source": str(bag.coords_source.resolve()),
    }
    dtype = bag.dtype if bag.dtype in ("float16", "float32") else "float32"
    attrs: dict[str, Any] = {
        "schema": FEATURES_SCHEMA,
        "schema_version": FEATURES_SCHEMA_VERSION,
        "slide_id": bag.slide_id,
        "encoder": encoder,
        "encoder_spec": json.dumps({"name": encoder, "out_dim": bag.out_dim, "imported": fmt}),
        "out_dim": bag.out_dim,
        "dtype": dtype,
        "coords_params_hash": f"imported:{fmt}",
        "extraction_hash": f"imported:{fmt}",
        "n_rows": bag.n_rows,
        "n_invalid": 0,
        "imported_from": json.dumps(provenance),
    }
    if bag.patch_size_px is not None:
        attrs["patch_size_px"] = bag.patch_size_px
    if bag.target_mpp is not None:
        attrs["target_mpp"] = float(bag.target_mpp)
    h5 = memory_h5()
    try:
        for key, value in attrs.items():
            h5.attrs[key] = value
        if fmt == "clam-pt":
            import torch

            tensor = torch.load(bag.source, map_location="cpu", weights_only=True)
            h5.create_dataset("features", data=tensor.to(torch.float32).numpy())
        else:
            h5["features"] = h5py.ExternalLink(str(source), "/features")
        h5["coords"] = h5py.ExternalLink(str(bag.coords_source.resolve()), "/coords")
        h5.create_dataset("valid", data=np.ones(bag.n_rows, dtype=bool))
    except BaseException:
        h5.close()
        raise
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        write_h5_image(h5, tmp)
    return target


def register_foreign_features(
    src: Path,
    fmt: ForeignFormat,
    out_root: Path,
    encoder: str,
    *,
    slide_ids: Sequence[str] | None = None,
    coords_dir: Path | None = None,
    mpp: float | None = None,
    patch_size_px: int | None = None,
) -> list[Path]:
    """Register every foreign features file of ``src`` under ``out_root`` for training.

    Args:
        src: The folder of ``.h5`` files (``.pt`` for ``clam-pt``).
        fmt: ``trident``, ``clam`` or ``clam-pt``.
        out_root: The features root that ``wsi-train``/``wsi-bench`` read.
        encoder: The encoder the features came from (one per call: mixing is refused).
        slide_ids: Register only these (e.g. the manifest's); default: every file.
        coords_dir: ``clam-pt``: CLAM's ``patches/`` folder.
        mpp: µm/px of the patches, where the files do not say.
        patch_size_px: Patch side in pixels, where the files do not say.

    Returns:
        The sidecar files written.

    Raises:
        ConfigError: No files, unknown slides, files of different feature widths, or
            slide ids (file stems) that break the rule of :mod:`wsi_ncmi.ids`.
        CacheSchemaError: A file that is not of the named format.
        NonFiniteFeaturesError: Files holding NaN/inf values (listed; nothing written).
    """
    suffix = ".pt" if fmt == "clam-pt" else ".h5"
    files = sorted(p for p in Path(src).glob(f"*{suffix}") if p.is_file())
    if slide_ids is not None:
        wanted = set(slide_ids)
        files = [p for p in files if p.stem in wanted]
    if not files:
        raise ConfigError(
            f"no {fmt} feature files (*{suffix}) in {str(src)!r}{folder_hint(Path(src))}"
        )
    from wsi_ncmi.ids import check_slide_ids

    check_slide_ids(((str(p), p.stem) for p in files), f"the files of {str(src)!r}")
    bags = [
        inspect_foreign(p, fmt, coords_dir=coords_dir, mpp=mpp, patch_size_px=patch_size_px)
        for p in files
    ]
    bad = [(b, n) for b in bags if (n := nonfinite_rows(b.source, b.n_rows))]
    if bad:
        listed = "; ".join(f"{str(b.source)!r}: {n} of {b.n_rows} rows" for b, n in bad[:10])
        raise NonFiniteFeaturesError(
            f"{len(bad)} {fmt} feature file(s) hold NaN/inf values ({listed}); nothing was "
            f"registered. {reimport_fix(fmt)}"
        )
    widths = sorted({b.out_dim for b in bags})
    if len(widths) > 1:
        examples = {w: next(b.slide_id for b in bags if b.out_dim == w) for w in widths}
        raise ConfigError(
            f"{str(src)!r} mixes feature widths {widths} (e.g. {examples}): one encoder per "
            "registration; put each encoder's files in its own folder"
        )
    root = Path(out_root)
    existing = root / "features" / encoder.replace(":", "_").replace("/", "_")
    if existing.is_dir():
        _check_width(existing, widths[0])
    return [write_sidecar(bag, root, encoder, fmt) for bag in bags]


def _check_width(folder: Path, width: int) -> None:
    """Refuse registering ``width``-wide features beside files of another width."""
    import h5py

    for path in sorted(folder.glob("*.h5"))[:50]:
        try:
            with h5py.File(path, "r") as h5:
                other = int(h5.attrs.get("out_dim", width))
        except OSError:
            continue
        if other != width:
            raise ConfigError(
                f"{str(folder)!r} already holds {other}-wide features ({path.name}); these "
                f"are {width}-wide: register them under another --encoder name"
            )


def source_missing(path: Path) -> str | None:
    """The missing target of an imported features file's external links, if any."""
    import h5py

    with h5py.File(path, "r") as h5:
        for name in ("features", "coords"):
            link = h5.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink) and not os.path.exists(link.filename):
                return link.filename
    return None
