"""Hub encoders record the commit their revision resolved to, read from the local
Hugging Face cache (a fabricated cache layout here: no network, no huggingface_hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from wsi_ncmi.features.encoders.hub_models import HUB_MODELS, hub_revision_spec
from wsi_ncmi.features.encoders.hub_weights import hub_cache_dir, resolve_hub_revision
from wsi_ncmi.features.encoders.registry import (
    ENCODERS,
    EncoderEntry,
    EncoderSpec,
    build_encoder,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER = "fedcba9876543210fedcba9876543210fedcba98"


def _fake_cache(root: Path, repo: str, commit: str = COMMIT, ref: str = "main") -> Path:
    """``models--org--name/{refs/<ref>, snapshots/<commit>/pytorch_model.bin}``."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)  # huggingface_hub writes no newline
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    weights = snapshot / "pytorch_model.bin"
    weights.write_bytes(b"weights")
    return weights


def test_resolve_from_refs_snapshot_or_unchanged(tmp_path: Path) -> None:
    weights = _fake_cache(tmp_path, "org/model")
    assert resolve_hub_revision("org/model", "main", cache_dir=tmp_path) == COMMIT
    # the snapshot folder of the file that was loaded wins over the refs file
    other = tmp_path / "x" / "snapshots" / OTHER / "model.safetensors"
    assert resolve_hub_revision("org/model", "main", weights_file=other) == OTHER
    assert resolve_hub_revision("org/model", "main", weights_file=weights) == COMMIT
    assert resolve_hub_revision("org/model", OTHER, cache_dir=tmp_path) == OTHER  # a commit
    assert resolve_hub_revision("org/other", "main", cache_dir=tmp_path) == "main"  # not cached
    (tmp_path / "models--org--model" / "refs" / "v2").write_text("garbage\n")
    assert resolve_hub_revision("org/model", "v2", cache_dir=tmp_path) == "v2"


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_every_hub_encoder_records_the_cached_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for entry in HUB_MODELS:
        spec = entry.spec
        assert spec.weights_revision == "main"
        repo = spec.weights_source.removeprefix("hf-hub:")
        assert hub_revision_spec(spec).weights_revision == "main"  # nothing cached yet
        _fake_cache(tmp_path, repo)
        resolved = hub_revision_spec(spec)
        assert resolved.weights_revision == COMMIT
        assert resolved.identity_hash != spec.identity_hash  # features tell their commit


def test_build_encoder_records_the_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    _fake_cache(tmp_path, "org/tiny")
    spec = EncoderSpec(
        name="test-hub-tiny",
        family="timm",
        out_dim=3,
        input_size_px=None,
        mpp=None,
        weights_source="hf-hub:org/tiny",
        weights_revision="main",
    )
    seen: list[str] = []

    def build(spec: EncoderSpec, weights: Path | None, random_init: bool, _: object) -> nn.Module:
        seen.append(spec.weights_revision)  # the builder downloads "main"
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    entry = EncoderEntry(spec, build, hub_revision_spec)
    monkeypatch.setitem(ENCODERS._factories, spec.name, entry)
    encoder = build_encoder(spec.name)
    assert seen == ["main"]
    assert encoder.spec.weights_revision == COMMIT
    assert encoder(torch.zeros(1, 4, 4, 3, dtype=torch.uint8)).shape == (1, 3)
    # random weights and local checkpoints are not the hub's: nothing is resolved
    assert build_encoder(spec.name, random_init=True).spec.weights_revision == "main"
