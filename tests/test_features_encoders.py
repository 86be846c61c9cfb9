"""Every registered encoder builds with random weights and runs on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

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
        cast(Any, spec).out_dim = 1  # the cast lets mypy pass the assignment it forbids


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
    assert c.spec.weights_source == "local"
    assert c.spec.weights_revision.startswith("sha256:")
    assert c.spec.weights_path == str((tmp_path / "w.pth").resolve())
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


@pytest.mark.parametrize(
    ("name", "file"), [("uni", "pytorch_model.bin"), ("conch-v1.5", "pytorch_model_vision.bin")]
)
def test_gated_weights_offline_say_how(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, file: str
) -> None:
    pytest.importorskip("timm")
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match=f"--weights /path/to/{file}"):
        build_encoder(name)


def test_conch_v15_spec() -> None:
    spec = get_spec("conch-v1.5")
    assert (spec.out_dim, spec.input_size_px, spec.mpp) == (768, 448, 0.5)
    assert spec.weights_source == "hf-hub:MahmoodLab/conchv1_5"
    assert spec.gated
    assert "CC-BY-NC-ND-4.0" in spec.licence
    assert spec.mean == (0.485, 0.456, 0.406)
    assert spec.std == (0.229, 0.224, 0.225)
    assert (spec.interpolation, spec.crop_pct) == ("bilinear", 1.0)


def test_attentional_pooler_matches_plain_attention() -> None:
    from wsi_ncmi.features.encoders.hub_models import AttentionalPooler

    torch.manual_seed(0)
    pool = AttentionalPooler(dim=24, context_dim=16, heads=4, n_queries=2).eval()
    tokens = torch.randn(3, 7, 16)
    with torch.no_grad():
        got = pool(tokens)
        q = pool.to_q(pool.ln_q(pool.query))  # (Q, 24)
        k, v = pool.to_kv(pool.ln_k(tokens)).chunk(2, dim=-1)  # (B, T, 24) each
        heads = []
        for h in range(4):
            cols = slice(6 * h, 6 * h + 6)
            scores = torch.einsum("qd,btd->bqt", q[:, cols], k[..., cols]) / 6**0.5
            heads.append(torch.einsum("bqt,btd->bqd", scores.softmax(-1), v[..., cols]))
        want = pool.to_out(torch.cat(heads, dim=-1))
    assert got.shape == (3, 2, 24)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_conch_v15_position_table() -> None:
    from wsi_ncmi.features.encoders.hub_models import conch_v15_pos_embed

    pos = torch.randn(1, 1 + 14 * 14, 8)
    torch.testing.assert_close(conch_v15_pos_embed(pos, 14), pos)  # 224 px: unchanged
    out = conch_v15_pos_embed(pos, 28)
    assert out.shape == (1, 1 + 28 * 28, 8)
    torch.testing.assert_close(out[:, 0], pos[:, 0])  # class token entry kept
    flat = torch.ones(1, 1 + 14 * 14, 8)
    torch.testing.assert_close(conch_v15_pos_embed(flat, 28), torch.ones(1, 1 + 28 * 28, 8))
    # The DINO-style resample uses scale (28 + 0.1) / 14, not the exact size 28.
    table = pos[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    exact = torch.nn.functional.interpolate(table, size=(28, 28), mode="bicubic")
    assert not torch.allclose(out[:, 1:], exact.permute(0, 2, 3, 1).reshape(1, 784, 8))
    with pytest.raises(WeightsUnavailableError, match="square"):
        conch_v15_pos_embed(torch.zeros(1, 1 + 15, 8), 28)


def test_conch_v15_loads_a_224px_checkpoint(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    from wsi_ncmi.features.encoders.hub_models import (
        HUB_MODELS,
        ConchV15,
        _build_conch_v15,
        conch_v15_pos_embed,
    )

    entry = next(e for e in HUB_MODELS if e.spec.name == "conch-v1.5")
    tiny = {**entry.kwargs, "depth": 1}
    source = ConchV15(timm.create_model("vit_large_patch16_224", **{**tiny, "img_size": 224}))
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # a DDP-saved file
    torch.save(state, tmp_path / "pytorch_model_vision.bin")
    model = _build_conch_v15(tiny, tmp_path / "pytorch_model_vision.bin", entry.spec, entry)
    loaded = model.state_dict()
    assert loaded["trunk.pos_embed"].shape == (1, 1 + 28 * 28, 1024)
    pos_embed = source.trunk.pos_embed
    assert isinstance(pos_embed, torch.Tensor)
    torch.testing.assert_close(
        loaded["trunk.pos_embed"], conch_v15_pos_embed(pos_embed.detach(), 28)
    )
    for key, value in source.state_dict().items():
        if key != "trunk.pos_embed":
            torch.testing.assert_close(loaded[key], value)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 448, 448)).shape == (1, 768)


def test_resnet50_trunc_loads_a_torchvision_checkpoint(tmp_path: Path) -> None:
    """The checkpoint's weights are the ones used: the features equal torchvision's own
    ResNet-50 run to ``layer3`` and average-pooled, on ImageNet-normalised pixels."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = tv.models.resnet50(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "r50.pth")
    encoder = build_encoder("resnet50-trunc", weights=tmp_path / "r50.pth").eval()
    patches = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        got = encoder(patches).float()
        mean = torch.tensor(encoder.spec.mean).view(1, 3, 1, 1)
        std = torch.tensor(encoder.spec.std).view(1, 3, 1, 1)
        x = (patches.permute(0, 3, 1, 2).float() / 255 - mean) / std
        r = reference
        h = r.layer3(r.layer2(r.layer1(r.maxpool(r.relu(r.bn1(r.conv1(x)))))))
        want = h.mean(dim=(2, 3))
    assert got.shape == (2, 1024)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    other = build_encoder("resnet50-trunc", random_init=True).eval()
    with torch.no_grad():
        assert not torch.allclose(other(patches).float(), want, atol=1e-2)  # weights matter
