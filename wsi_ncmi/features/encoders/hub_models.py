"""Pathology foundation models (timm / Hugging Face hub) and any ``timm:<model>``.

Each entry of :data:`HUB_MODELS` is one registered encoder: its timm architecture, the
hub repository holding its weights, and the preprocessing and µm/px of its model card.
Weights come from (in order) ``--weights PATH``, or the hub (``huggingface_hub``
cache / download, which needs the terms accepted and a token for gated models). If
neither works a :class:`~wsi_ncmi.errors.WeightsUnavailableError` says how to provide
the file; random weights are only used when asked for (``random_init``, recorded).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError, WeightsUnavailableError
from wsi_ncmi.features.encoders.registry import (
    EncoderSpec,
    load_into,
    load_state_dict_file,
    register_encoder,
)

HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
NC_ND = "CC-BY-NC-ND-4.0: non-commercial research only, no derivatives; gated"
# CONCH v1.5 (MahmoodLab/conchv1_5, the patch encoder of TITAN): a ViT-L/16 trunk with
# LayerScale, run at 448 px, whose tokens (class token included, after the final norm)
# are pooled by one learned query of an 8-head attentional pooler to 768-d, then
# LayerNorm. Its checkpoint keeps a 224-px (14 x 14) position table; the reference loader
# resamples it for 448-px inputs on every call (DINO style: bicubic with a scale factor
# of (28 + 0.1) / 14). Inputs here are always 448 px, so that table is resampled once.
CONCH_V15_DIM = 768
CONCH_V15_INPUT_PX = 448
CONCH_V15_CKPT_GRID = 14


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


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise ConfigError(
            "this encoder needs timm: pip install 'wsi-ncmi[encoders]' (timm needs a "
            "torchvision matching your torch; docs/extraction.md, make install-encoders)"
        ) from err
    return timm


def _resolve_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    timm = _import_timm()
    symbols = {"swiglu_packed": timm.layers.SwiGLUPacked, "silu": nn.SiLU}
    return {k: symbols.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}


class ClsMeanPool(nn.Module):
    """Class token ⊕ mean of the patch tokens: ``(B, T, C)`` → ``(B, 2C)``."""

    def __init__(self, model: nn.Module, prefix_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.prefix_tokens = prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, 2C)``."""
        tokens = self.model(x)
        return torch.cat([tokens[:, 0], tokens[:, self.prefix_tokens :].mean(dim=1)], dim=1)


class AttentionalPooler(nn.Module):
    """Learned queries attending over a token sequence (CoCa-style attentional pooling).

    ``(B, T, context_dim)`` → ``(B, n_queries, dim)``; queries and keys are layer-normed
    first, the projections have no bias, the scale is ``(dim / heads) ** -0.5``.
    Parameter names follow the CONCH v1.5 checkpoint.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, n_queries: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(n_queries, dim))
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, N, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` → ``(B, Q, dim)``."""
        key, value = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)
        query = self.to_q(self.ln_q(self.query)).expand(tokens.shape[0], -1, -1)
        out = nn.functional.scaled_dot_product_attention(
            self._heads(query), self._heads(key), self._heads(value)
        )
        return self.to_out(out.transpose(1, 2).flatten(2))


class ConchV15(nn.Module):
    """CONCH v1.5 vision tower: ViT trunk → attentional pool (1 query) → LayerNorm."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        width = int(trunk.num_features)  # type: ignore[arg-type]
        self.attn_pool_contrast = AttentionalPooler(CONCH_V15_DIM, width, 8, 1)
        self.ln_contrast = nn.LayerNorm(CONCH_V15_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 448, 448)`` → ``(B, 768)``."""
        tokens = self.trunk.forward_features(x)  # type: ignore[operator]
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


def conch_v15_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The CONCH v1.5 checkpoint's position table as the reference uses it at ``grid``².

    ``(1, 1 + g², C)`` → ``(1, 1 + grid², C)``: a table that is not 14 x 14 is first
    fitted to the 224-px model (bilinear), then resampled DINO style (bicubic,
    ``scale_factor=(grid + 0.1) / 14``), the class token's entry kept as is.

    Raises:
        WeightsUnavailableError: The table is not square.
    """
    dim = pos_embed.shape[-1]
    side = round((pos_embed.shape[1] - 1) ** 0.5)
    if side * side != pos_embed.shape[1] - 1:
        raise WeightsUnavailableError(
            f"CONCH v1.5 pos_embed of shape {tuple(pos_embed.shape)} is not 1 + a square grid"
        )
    table = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    base = CONCH_V15_CKPT_GRID
    if side != base:
        table = nn.functional.interpolate(
            table, size=(base, base), mode="bilinear", align_corners=False
        )
    if grid != base:
        factor = (grid + 0.1) / base
        table = nn.functional.interpolate(
            table, scale_factor=(factor, factor), mode="bicubic", align_corners=False
        )
    table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], table], dim=1)


def _build_conch_v15(
    kwargs: Mapping[str, Any], weights: Path | None, spec: EncoderSpec, entry: HubModel
) -> nn.Module:
    timm = _import_timm()
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


class HfClsToken(nn.Module):
    """The class token of a ``transformers`` vision model's last hidden state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, C)``."""
        return self.model(pixel_values=x).last_hidden_state[:, 0]


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
    timm = _import_timm()
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


for _entry in HUB_MODELS:
    register_encoder(_entry.spec)(functools.partial(_build_hub, _entry))


@functools.lru_cache(maxsize=32)
def timm_spec(name: str) -> EncoderSpec:
    """Spec of ``timm:<model>`` from timm's pretrained config (no weights are loaded).

    Raises:
        ConfigError: timm missing or unknown model name.
    """
    timm = _import_timm()
    model_name = name.removeprefix("timm:")
    try:
        with torch.device("meta"):
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise ConfigError(f"timm does not know model {model_name!r}: {err}") from err
    cfg = timm.data.resolve_model_data_config(model)
    size = int(cfg["input_size"][-1])
    interpolation = cfg.get("interpolation", "bilinear")
    return EncoderSpec(
        name=name,
        family="timm",
        out_dim=int(model.num_features),
        input_size_px=size,
        mpp=None,
        mean=tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
        interpolation="bicubic" if interpolation == "bicubic" else "bilinear",
        crop_pct=float(cfg.get("crop_pct", 1.0)),
        precision="bf16",
        weights_source=f"timm:{model_name}",
        licence="see the timm model card of this model",
        channels_last=not model_name.startswith(("vit", "deit", "eva", "swin")),
        description=f"any timm model: {model_name}",
    )


def build_timm_generic(
    spec: EncoderSpec, weights: Path | None, random_init: bool, overrides: Mapping[str, Any]
) -> nn.Module:
    """Build ``timm:<model>`` with pooled ``num_features`` output."""
    timm = _import_timm()
    model_name = spec.name.removeprefix("timm:")
    if random_init or weights is not None:
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **overrides)
        if weights is not None:
            load_into(model, load_state_dict_file(weights), str(weights))
        return model
    try:
        return timm.create_model(model_name, pretrained=True, num_classes=0)
    except Exception as err:  # download/hub errors of every kind
        raise WeightsUnavailableError(
            f"timm could not load pretrained weights for {model_name!r} "
            f"({type(err).__name__}: {err}); download them where the hub is reachable and "
            "pass --weights /path/to/checkpoint (.safetensors/.bin/.pth)"
        ) from err


__all__ = [
    "HUB_MODELS",
    "AttentionalPooler",
    "ConchV15",
    "HubModel",
    "build_timm_generic",
    "conch_v15_pos_embed",
    "hub_download",
    "timm_spec",
]
