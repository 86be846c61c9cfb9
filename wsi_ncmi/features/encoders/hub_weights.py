"""Weights of hub encoders: the Hugging Face cache, downloads and the resolved revision.

A hub encoder's spec names a revision (``main``); what a features file must record is
the commit those weights came from. :func:`resolve_hub_revision` reads it from the local
Hugging Face cache (``<cache>/models--<org>--<name>/refs/<revision>``, which holds the
commit, or the ``snapshots/<commit>/`` folder the weights file lies in), without network.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from wsi_ncmi.errors import WeightsUnavailableError
from wsi_ncmi.features.encoders.spec import EncoderSpec

_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``.

    ``HF_HOME`` defaults to ``$XDG_CACHE_HOME/huggingface`` (``~/.cache/huggingface``),
    as in ``huggingface_hub``.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = os.environ.get("HF_HOME") or str(Path(xdg) / "huggingface")
    return Path(home).expanduser() / "hub"


def resolve_hub_revision(
    repo: str,
    revision: str,
    *,
    weights_file: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """The commit hash a hub revision stands for, from the local cache.

    In order: a ``revision`` that already is a commit; the snapshot folder a cached
    ``weights_file`` lies in (``.../snapshots/<commit>/<file>``); the cache's
    ``refs/<revision>`` file. When none of them tells (nothing cached), ``revision`` is
    returned unchanged.

    Args:
        repo: Hub repository id, ``<org>/<name>``.
        revision: Branch, tag or commit (``main``).
        weights_file: Path of the weights file that was loaded, if from the hub cache.
        cache_dir: Hub cache folder; default :func:`hub_cache_dir`.

    Returns:
        A 40-hex commit hash, or ``revision``.
    """
    if _COMMIT.fullmatch(revision):
        return revision
    if weights_file is not None:
        snapshot = Path(weights_file).parent
        if snapshot.parent.name == "snapshots" and _COMMIT.fullmatch(snapshot.name):
            return snapshot.name
    root = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    ref = root / f"models--{repo.replace('/', '--')}" / "refs" / (revision or "main")
    try:
        commit = ref.read_text(encoding="utf-8").strip()
    except OSError:
        return revision
    return commit if _COMMIT.fullmatch(commit) else revision


def hub_download(spec: EncoderSpec, files: tuple[str, ...]) -> Path:
    """Fetch (or find in the local hub cache) the weights file of a hub encoder.

    Raises:
        WeightsUnavailableError: Gated without access, offline, or not found; the
            message says how to provide the file with ``--weights``.
    """
    repo = spec.weights_source.removeprefix("hf-hub:")
    how = (
        f"To use {spec.name}: accept the terms at https://huggingface.co/{repo} , then run "
        "`huggingface-cli login` (or export HF_TOKEN=...) on a machine with internet; or "
        f"download {files[0]} from that repo elsewhere, copy it here and pass "
        f"--weights /path/to/{files[0]}. Licence: {spec.licence}."
    )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise WeightsUnavailableError(f"huggingface_hub is not installed. {how}") from err
    errors: list[str] = []
    for filename in files:
        try:
            return Path(hf_hub_download(repo, filename, revision=spec.weights_revision or None))
        except Exception as err:  # GatedRepoError, offline, 404 ... all mean "not here"
            first_line = (str(err).splitlines() or [""])[0][:100]
            errors.append(f"{filename}: {type(err).__name__}: {first_line}")
    raise WeightsUnavailableError(
        f"weights of {spec.name!r} are not available ({'; '.join(errors)}). {how}"
    )


__all__ = ["hub_cache_dir", "hub_download", "resolve_hub_revision"]
