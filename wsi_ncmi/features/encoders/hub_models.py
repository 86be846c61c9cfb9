"""Pathology foundation models from the Hugging Face hub (built with timm or transformers).

Each entry of :data:`HUB_MODELS` is one registered encoder: its timm architecture, the
hub repository holding its weights, and the preprocessing and µm/px of its model card.
Weights come from (in order) ``--weights PATH``, or the hub (``huggingface_hub``
cache / download, which needs the terms accepted and a token for gated models). If
neither works a :class:`~wsi_ncmi.errors.WeightsUnavailableError` says how to provide
the file; random weights are only used when asked for (``random_init``, recorded).
Layers timm lacks are in :mod:`~wsi_ncmi.features.encoders.hub_layers`, the cache and
downloads in :mod:`~wsi_ncmi.features.encoders.hub_weights`, and any ``timm:<model>`` in
:mod:`~wsi_ncmi.features.encoders.timm_models`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.encoders.hub_layers import (
    CONCH_V15_DIM,
    CONCH_V15_INPUT_PX,
    AttentionalPooler,
    ClsMeanPool,
    ConchV15,
    HfClsToken,
    conch_v15_pos_embed,
)
from wsi_ncmi.features.encoders.hub_weights import hub_download, resolve_hub_revision
from wsi_ncmi.features.encoders.spec import (
    EncoderSpec,
    load_into,
    load_state_dict_file,
    register_encoder,
)
from wsi_ncmi.features.encoders.timm_models import build_timm_generic, import_timm, timm_spec

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
NC_ND = "CC-BY-NC-ND-4.0: non-commercial research only, no derivatives; gated"


@dataclass(frozen=True)
class HubModel:
    """How to build one hub encoder.

    Attributes:
        spec: The encoder spec (``weights_source`` is the hub repo id).
        arch: timm architecture name, or ``transformers:dinov2`` for HF Dinov2 models.
        kwargs: Architecture keyword arguments; ``"swiglu_packed"``/``"silu"`` strings
            stand for timm's ``SwiGLUPacked`` and ``nn.SiLU`` (resolved lazily).
        files: Candidate weight file names in the repo, tried in order.
        pool: ``"model"`` (the model's own pooling) or ``"cls+mean"`` (class token
            concatenated with the mean of patch tokens after ``prefix_tokens``).
        prefix_tokens: Class + register tokens before the patch tokens.
    """

    spec: EncoderSpec
    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ("pytorch_model.bin", "model.safetensors")
    pool: str = "model"
    prefix_tokens: int = 1


def _spec(name: str, repo: str, out_dim: int, licence: str, **kw: Any) -> EncoderSpec:
    defaults: dict[str, Any] = {"input_size_px": 224, "mpp": 0.5, "precision": "bf16"}
    return EncoderSpec(
        name=name,
        family=kw.pop("family", "timm"),
        out_dim=out_dim,
        weights_source=f"hf-hub:{repo}",
        weights_revision=kw.pop("revision", "main"),
        licence=licence,
        gated=True,
        **(defaults | kw),
    )


_VIT_COMMON = {"init_values": 1e-5, "num_classes": 0, "img_size": 224}
HUB_MODELS: tuple[HubModel, ...] = (
    HubModel(
        _spec("uni", "MahmoodLab/UNI", 1024, NC_ND, description="UNI ViT-L/16 (Mahmood lab)"),
        "vit_large_patch16_224",
        {**_VIT_COMMON, "patch_size": 16, "dynamic_img_size": True},
    ),
    HubModel(
        _spec("uni2-h", "MahmoodLab/UNI2-h", 1536, NC_ND, description="UNI2-h ViT-H/14"),
        "vit_giant_patch14_224",
        {
            **_VIT_COMMON,
            "patch_size": 14,
            "depth": 24,
            "num_heads": 24,
            "embed_dim": 1536,
            "mlp_ratio": 2.66667 * 2,
            "no_embed_class": True,
            "mlp_layer": "swiglu_packed",
            "act_layer": "silu",
            "reg_tokens": 8,
            "dynamic_img_size": True,
        },
    ),
    HubModel(
        _spec(
            "virchow2",
            "paige-ai/Virchow2",
            2560,
            NC_ND,
            interpolation="bicubic",
            description="Virchow2 ViT-H/14, class token + mean patch token (Paige)",
        ),
        "vit_huge_patch14_224",
        {
            **_VIT_COMMON,
            "mlp_ratio": 5.3375,
            "reg_tokens": 4,
            "global_pool": "",
            "no_embed_class": True,
            "mlp_layer": "swiglu_packed",
            "act_layer": "silu",
            "dynamic_img_size": True,
        },
        pool="cls+mean",
        prefix_tokens=5,
    ),
    *(
        HubModel(
            _spec(
                name,
                f"bioptimus/{repo}",
                1536,
                licence,
                mean=HOPTIMUS_MEAN,
                std=HOPTIMUS_STD,
                description=f"{repo} ViT-g/14 with 4 registers (Bioptimus)",
            ),
            "vit_giant_patch14_reg4_dinov2",
            {**_VIT_COMMON, "dynamic_img_size": False},
        )
        for name, repo, licence in (
            ("h-optimus-0", "H-optimus-0", "Apache-2.0; gated (accept terms on the hub)"),
            ("h-optimus-1", "H-optimus-1", "Bioptimus non-commercial licence; gated"),
        )
    ),
    HubModel(
        _spec(
            "prov-gigapath",
            "prov-gigapath/prov-gigapath",
            1536,
            "Apache-2.0 with research-use terms; gated",
            crop_pct=224 / 256,
            interpolation="bicubic",
            description="Prov-GigaPath tile encoder ViT-g/16 (Resize 256 + CenterCrop 224)",
        ),
        "vit_giant_patch14_dinov2",
        {
            **_VIT_COMMON,
            "in_chans": 3,
            "patch_size": 16,
            "embed_dim": 1536,
            "depth": 40,
            "num_heads": 24,
            "mlp_ratio": 5.33334,
        },
    ),
    HubModel(
        _spec(
            "conch-v1.5",
            "MahmoodLab/conchv1_5",
            CONCH_V15_DIM,
            NC_ND,
            input_size_px=CONCH_V15_INPUT_PX,
            precision="fp16",
            description=(
                "CONCH v1.5 ViT-L/16 at 448 px, attentional pooling to 768-d (Mahmood lab; "
                "TITAN's patch encoder; tile 512 px at 0.5 µm/px)"
            ),
        ),
        "conch-v1.5",
        {"num_classes": 0, "init_values": 1.0, "img_size": CONCH_V15_INPUT_PX},
        files=("pytorch_model_vision.bin",),
    ),
    HubModel(
        _spec(
            "phikon-v2",
            "owkin/phikon-v2",
            1024,
            "Owkin non-commercial licence; see the model card",
            family="transformers",
            description="Phikon-v2 DINOv2 ViT-L/16 class token (needs `transformers`)",
        ),
        "transformers:dinov2",
        {
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "patch_size": 16,
            "image_size": 224,
            "layerscale_value": 1e-5,
        },
        files=("model.safetensors", "pytorch_model.bin"),
    ),
)


def _resolve_kwargs(kwargs: Mapping[str, Any]) -> dict[str, object]:
    """``kwargs`` with the names of timm layers (``"swiglu_packed"``, ``"silu"``) resolved."""
    timm = import_timm()
    symbols = {"swiglu_packed": timm.layers.SwiGLUPacked, "silu": nn.SiLU}
    return {k: symbols.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}


def _build_conch_v15(
    kwargs: Mapping[str, Any], weights: Path | None, spec: EncoderSpec, entry: HubModel
) -> nn.Module:
    timm = import_timm()
    path: Path | None = None
    if not spec.random_init:  # find the weights before building 300M parameters
        path = weights if weights is not None else hub_download(spec, entry.files)
    trunk = timm.create_model("vit_large_patch16_224", pretrained=False, **kwargs)
    model = ConchV15(trunk)
    if path is None:
        return model
    state = dict(load_state_dict_file(path))
    grid = int(kwargs["img_size"]) // 16
    for key in [k for k in state if k.endswith("trunk.pos_embed")]:  # "module." etc. too
        state[key] = conch_v15_pos_embed(state[key], grid)
    return load_into(model, state, str(path))


def _build_hub(
    entry: HubModel,
    spec: EncoderSpec,
    weights: Path | None,
    random_init: bool,
    overrides: Mapping[str, Any],
) -> nn.Module:
    kwargs = {**entry.kwargs, **overrides}
    if entry.arch == "conch-v1.5":
        return _build_conch_v15(kwargs, weights if not random_init else None, spec, entry)
    if entry.arch == "transformers:dinov2":
        model = _build_dinov2(kwargs, weights if not random_init else None, spec, entry)
        return HfClsToken(model)
    timm = import_timm()
    model = timm.create_model(entry.arch, pretrained=False, **_resolve_kwargs(kwargs))
    if not random_init:
        path = weights if weights is not None else hub_download(spec, entry.files)
        load_into(model, load_state_dict_file(path), str(path))
    return ClsMeanPool(model, entry.prefix_tokens) if entry.pool == "cls+mean" else model


def _build_dinov2(
    kwargs: Mapping[str, Any], weights: Path | None, spec: EncoderSpec, entry: HubModel
) -> nn.Module:
    try:
        from transformers import Dinov2Config, Dinov2Model
    except ImportError as err:
        raise ConfigError(f"{spec.name} needs `pip install transformers`") from err
    model = Dinov2Model(Dinov2Config(**kwargs))
    if spec.random_init:
        return model
    path = weights if weights is not None else hub_download(spec, entry.files)
    state = load_state_dict_file(path)
    return load_into(model, {k.removeprefix("dinov2."): v for k, v in state.items()}, str(path))


def hub_revision_spec(spec: EncoderSpec) -> EncoderSpec:
    """``spec`` with its hub revision (``main``) replaced by the commit it resolved to.

    Read from the local Hugging Face cache (:func:`resolve_hub_revision`); unchanged when
    the cache does not tell.
    """
    repo = spec.weights_source.removeprefix("hf-hub:")
    return dataclasses.replace(
        spec, weights_revision=resolve_hub_revision(repo, spec.weights_revision)
    )


for _entry in HUB_MODELS:
    register_encoder(_entry.spec, pretrained_spec=hub_revision_spec)(
        functools.partial(_build_hub, _entry)
    )


__all__ = [  # the layers, downloads and timm names stay importable from here
    "HUB_MODELS",
    "AttentionalPooler",
    "ClsMeanPool",
    "ConchV15",
    "HfClsToken",
    "HubModel",
    "build_timm_generic",
    "conch_v15_pos_embed",
    "hub_download",
    "hub_revision_spec",
    "resolve_hub_revision",
    "timm_spec",
]
