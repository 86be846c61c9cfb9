"""Any ``timm:<model>`` as an encoder: its spec from timm's pretrained config, its build."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError, WeightsUnavailableError
from wsi_ncmi.features.encoders.spec import EncoderSpec, load_into, load_state_dict_file


def import_timm() -> ModuleType:
    """The ``timm`` module.

    Raises:
        ConfigError: timm is not installed (with the install hint).
    """
    try:
        import timm
    except ImportError as err:
        raise ConfigError(
            "this encoder needs timm: pip install 'wsi-ncmi[encoders]' (timm needs a "
            "torchvision matching your torch; docs/extraction.md, make install-encoders)"
        ) from err
    return timm


@functools.lru_cache(maxsize=32)
def timm_spec(name: str) -> EncoderSpec:
    """Spec of ``timm:<model>`` from timm's pretrained config (no weights are loaded).

    Raises:
        ConfigError: timm missing or unknown model name.
    """
    timm = import_timm()
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
    timm = import_timm()
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


__all__ = ["build_timm_generic", "import_timm", "timm_spec"]
