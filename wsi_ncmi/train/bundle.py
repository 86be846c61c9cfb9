"""The model bundle on disk: a folder of safetensors files and a JSON manifest, checked.

A bundle is a folder (``wsi-train`` writes ``<run>/<fold>/model/``)::

    model.json            the manifest (schema :data:`BUNDLE_SCHEMA`): what the model is,
                          what it needs (encoder, µm/px, patch size, tiling, feature
                          normalisation), its decision rule, its training data and the
                          sha256 of the two tensor files
    weights.safetensors   the aggregator's and the loss's state (``aggregator.*``,
                          ``criterion.*``: NCMI centroids, class means, feature centre)
    stats.safetensors     feature statistics: ``standardize_mean``/``standardize_std``
                          (when training standardised) and ``ood_mean``/``ood_std``, the
                          training patches' per-dimension mean and sd (the QC flag)
    SHA256SUMS            ``sha256sum`` lines of the three files above (``sha256sum -c``)

Loading never unpickles: tensors come from safetensors, the rest from JSON. Before
anything is parsed, :func:`verify_bundle` checks that ``SHA256SUMS`` is exactly the
listing of those three files and that each file has its digest, so a bundle edited by
one byte, truncated or missing a file is refused with :class:`BundleError`, naming the
file. A Lightning ``.ckpt`` (a pickle) is refused with the command that converts a
trusted one (``wsi-export-model``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

BUNDLE_SCHEMA = "wsi-ncmi/model-bundle"
BUNDLE_SCHEMA_VERSION = 1
MANIFEST_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
STATS_FILE = "stats.safetensors"
SUMS_FILE = "SHA256SUMS"
#: The files a bundle holds besides ``SHA256SUMS``, in the order it lists them.
BUNDLE_FILES: tuple[str, ...] = (MANIFEST_FILE, WEIGHTS_FILE, STATS_FILE)

#: Suffixes of pickled checkpoints (Lightning, PyTorch): refused as ``--models``.
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl", ".pickle", ".bin")


class BundleError(ConfigError):
    """A model bundle is missing, tampered with, truncated, or not a bundle at all.

    A :class:`~wsi_ncmi.errors.ConfigError`, so every command exits with code 2.
    """


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sums_text(digests: Mapping[str, str]) -> str:
    """The ``SHA256SUMS`` text of ``{file name: hex digest}`` (``sha256sum`` format)."""
    return "".join(f"{digests[name]}  {name}\n" for name in BUNDLE_FILES)


def _refuse_pickle(path: Path) -> None:
    convert = (
        f"it is a pickle, and loading a pickle runs whatever code it holds, so wsi-ncmi "
        f"never loads one as a model. Convert a checkpoint you trust (one your own "
        f"wsi-train wrote) once: wsi-export-model {path} --out_dir MODEL_DIR, then pass "
        f"--models MODEL_DIR"
    )
    raise BundleError(f"--models {str(path)!r} is a checkpoint file, not a model bundle: {convert}")


def verify_bundle(path: str | Path) -> dict[str, bytes]:
    """Read a bundle's files and check them against ``SHA256SUMS``; nothing is parsed.

    Args:
        path: The bundle folder.

    Returns:
        ``{file name: content}`` of :data:`BUNDLE_FILES`.

    Raises:
        BundleError: A pickled checkpoint, no such folder, a missing file, a
            ``SHA256SUMS`` that is not exactly the listing of the bundle's files, or a
            file whose digest differs (edited or truncated).
    """
    path = Path(path)
    if path.is_file():
        with path.open("rb") as handle:
            magic = handle.read(2)
        if path.suffix.lower() in PICKLE_SUFFIXES or magic in (b"PK", b"\x80\x02"):
            _refuse_pickle(path)
        raise BundleError(
            f"--models {str(path)!r} is a file; a model bundle is a folder with "
            f"{', '.join(BUNDLE_FILES)} and {SUMS_FILE} (wsi-train writes <fold>/model/)"
        )
    if not path.is_dir():
        raise BundleError(
            f"--models {str(path)!r} does not exist; pass a bundle folder (wsi-train writes "
            "<run>/<fold>/model/, wsi-export-model writes --out_dir)"
        )
    missing = [name for name in (*BUNDLE_FILES, SUMS_FILE) if not (path / name).is_file()]
    if missing:
        raise BundleError(
            f"model bundle {str(path)!r} lacks {missing}; it is incomplete or not a bundle. "
            "Copy the whole folder again"
        )
    contents = {name: (path / name).read_bytes() for name in BUNDLE_FILES}
    sums = (path / SUMS_FILE).read_bytes()
    listed: dict[str, str] = {}
    for line in sums.decode("utf-8", errors="replace").splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    actual = {name: sha256_bytes(data) for name, data in contents.items()}
    changed = [name for name in BUNDLE_FILES if listed.get(name) != actual[name]]
    if changed or sums != sums_text(actual).encode():
        what = changed or [SUMS_FILE]
        raise BundleError(
            f"model bundle {str(path)!r} is damaged or was edited: {what} "
            f"{'does' if len(what) == 1 else 'do'} not match {SUMS_FILE}. Refusing to load "
            "it; copy the bundle again from where it was written"
        )
    return contents


def read_manifest_json(path: str | Path, contents: Mapping[str, bytes]) -> dict[str, Any]:
    """The parsed, schema-checked ``model.json`` of a verified bundle.

    Raises:
        BundleError: Not JSON, another schema or version, or file digests in the manifest
            that disagree with the files.
    """
    try:
        manifest = json.loads(contents[MANIFEST_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{str(Path(path) / MANIFEST_FILE)!r} is not JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("schema") != BUNDLE_SCHEMA:
        raise BundleError(f"{str(path)!r} is not a {BUNDLE_SCHEMA} bundle")
    if manifest.get("schema_version") != BUNDLE_SCHEMA_VERSION:
        raise BundleError(
            f"{str(path)!r} has bundle schema version {manifest.get('schema_version')!r}; "
            f"this wsi-ncmi reads version {BUNDLE_SCHEMA_VERSION}"
        )
    files = manifest.get("files", {})
    for name in (WEIGHTS_FILE, STATS_FILE):
        if files.get(name) != sha256_bytes(contents[name]):
            raise BundleError(f"{str(path)!r}: {name} does not match the digest in model.json")
    return manifest


def write_bundle(
    out: str | Path,
    manifest: Mapping[str, Any],
    weights: Mapping[str, Any],
    stats: Mapping[str, Any],
) -> Path:
    """Write a bundle folder atomically: a temp folder beside ``out``, renamed over it.

    The temp folder is named like the package's temp files
    (:func:`wsi_ncmi.batch.atomic.temp_path_for`); one that a killed writer on this host
    left behind is removed by the next write of the same bundle.

    Args:
        out: The bundle folder (replaced if it exists).
        manifest: The manifest without ``schema``/``files`` (added here).
        weights: ``{name: tensor}`` of the model state.
        stats: ``{name: tensor}`` of the feature statistics.

    Returns:
        ``out``.
    """
    import shutil

    import torch
    from safetensors.torch import save

    from wsi_ncmi.batch.atomic import pid_alive, temp_path_for, temp_prefix, temp_writer

    def blob(tensors: Mapping[str, Any]) -> bytes:
        return save({k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in tensors.items()})

    out = Path(out)
    data = {WEIGHTS_FILE: blob(weights), STATS_FILE: blob(stats)}
    record = {
        "schema": BUNDLE_SCHEMA,
        "schema_version": BUNDLE_SCHEMA_VERSION,
        **manifest,
        "files": {name: sha256_bytes(content) for name, content in data.items()},
    }
    data[MANIFEST_FILE] = (json.dumps(record, indent=1) + "\n").encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out.parent.glob(temp_prefix(out) + ".tmp-*"):
        writer = temp_writer(leftover)
        if leftover.is_dir() and writer is not None and not pid_alive(writer[1]):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp, old = temp_path_for(out), temp_path_for(out)
    tmp.mkdir()
    try:
        for name, content in data.items():
            (tmp / name).write_bytes(content)
        digests = {name: sha256_bytes(content) for name, content in data.items()}
        (tmp / SUMS_FILE).write_text(sums_text(digests))
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return out


def load_tensors(contents: Mapping[str, bytes], name: str) -> dict[str, Tensor]:
    """``{name: tensor}`` of one verified safetensors file of a bundle (no pickle).

    Raises:
        BundleError: The file is not a safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return dict(load(contents[name]))
    except (SafetensorError, ValueError) as err:
        raise BundleError(f"{name} of the bundle is not a safetensors file: {err}") from err


def ood_score(bag: Tensor, mean: Tensor, std: Tensor) -> float:
    """RMS over dimensions of ``(mean of the bag's rows − mean) / std``.

    Args:
        bag: ``(N, D)`` raw patch features (as stored), ``N ≥ 1``.
        mean: ``(D,)`` training per-dimension mean.
        std: ``(D,)`` training per-dimension sd (> 0).

    Returns:
        The score (0 for a slide whose mean feature is the training mean).
    """
    import torch

    slide_mean = bag.to(torch.float32).mean(dim=0).to(torch.float64)
    z = (slide_mean - mean.to(torch.float64)) / std.to(torch.float64)
    return float(torch.sqrt((z * z).mean()))
