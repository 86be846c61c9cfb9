"""Every registered encoder builds with random weights and runs on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from wsi_ncmi.errors import ConfigError, WeightsUnavailableError
from wsi_ncmi.features.encoders import build_encoder, get_spec, list_encoders

FAMILY_NEEDS = {"torchvision": "torchvision", "timm": "timm", "transformers": "transformers"}
# Same widths and heads, one block: the wiring (pooling, registers, dims) is what's tested.
TINY = {"timm": {"depth": 1}, "transformers": {"num_hidden_layers": 1}}


# ViT-H/g-wide hub models take long to initialise on 2 cores: run them under -m slow.
HEAVY = {"uni2-h", "virchow2", "h-optimus-0", "h-optimus-1", "prov-gigapath"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(s.name, marks=[pytest.mark.slow] if s.name in HEAVY else [])
        for s in list_encoders()
    ],
)
def test_every_encoder_forward_on_cpu(name: str) -> None:
    spec = get_spec(name)
    if spec.family in FAMILY_NEEDS:
        pytest.importorskip(FAMILY_NEEDS[spec.family])
    random_init = spec.family != "builtin"
    encoder = build_encoder(
        name, random_init=random_init, arch_overrides=TINY.get(spec.family) if random_init else None
    )
    assert encoder.spec.random_init or (spec.family == "builtin" and name == "stain-stats")
    images = torch.randint(0, 256, (2, 96, 96, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = encoder(images)
    assert out.shape == (2, spec.out_dim)
    assert torch.isfinite(out).all()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.out_dim = 1  # type: ignore[misc]


def test_specs_are_complete() -> None:
    names = {s.name for s in list_encoders()}
    assert {"random-cnn", "stain-stats", "resnet50-trunc", "uni", "uni2-h", "virchow2"} <= names
    assert {"h-optimus-0", "h-optimus-1", "phikon-v2", "prov-gigapath"} <= names
    for spec in list_encoders():
        assert spec.out_dim > 0
        assert spec.licence
        assert spec.description
        if spec.gated:
            assert spec.mpp == 0.5
            assert spec.weights_source.startswith("hf-hub:")


def test_random_cnn_is_deterministic_and_loads_local_weights(tmp_path: Path) -> None:
    a, b = build_encoder("random-cnn"), build_encoder("random-cnn")
    x = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    torch.testing.assert_close(a(x), b(x))
    state = {k: v + 1.0 for k, v in a.backbone.state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    c = build_encoder("random-cnn", weights=tmp_path / "w.pth")
    assert c.spec.weights_source.startswith("local:")
    assert not torch.allclose(a(x), c(x))
    torch.save({"nope": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        build_encoder("random-cnn", weights=tmp_path / "bad.pth")
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_encoder("random-cnn", weights=tmp_path / "missing.pth")


def test_bad_requests_are_specific() -> None:
    with pytest.raises(ConfigError, match="registered"):
        build_encoder("no-such-encoder")
    with pytest.raises(ConfigError, match="random_init"):
        build_encoder("random-cnn", arch_overrides={"widths": (4,)})


def test_gated_weights_offline_say_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="--weights"):
        build_encoder("uni")


def test_resnet50_trunc_loads_a_torchvision_checkpoint(tmp_path: Path) -> None:
    tv = pytest.importorskip("torchvision")
    torch.save(tv.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    encoder = build_encoder("resnet50-trunc", weights=tmp_path / "r50.pth")
    assert encoder(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).shape == (1, 1024)
