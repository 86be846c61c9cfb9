"""Encoders built from torchvision models (needs the ``encoders`` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError, WeightsUnavailableError
from wsi_ncmi.features.encoders.spec import (
    EncoderSpec,
    load_into,
    load_state_dict_file,
    register_encoder,
)

RESNET50_WEIGHTS = "IMAGENET1K_V1"
RESNET50_FILE = "resnet50-0676ba61.pth"


def _import_torchvision() -> ModuleType:
    try:
        import torchvision
    except ImportError as err:
        raise ConfigError(
            "this encoder needs torchvision: pip install 'wsi-ncmi[encoders]' with a "
            "torchvision build matching your torch (docs/extraction.md; make install-encoders "
            "builds such an environment)"
        ) from err
    return torchvision


class ResNetTrunk(nn.Module):
    """A ResNet up to ``layer3`` followed by global average pooling: ``(B, 1024)``."""

    def __init__(self, resnet: Any) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layers = nn.Sequential(resnet.layer1, resnet.layer2, resnet.layer3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, 1024)``."""
        return self.pool(self.layers(self.stem(x))).flatten(1)


@register_encoder(
    EncoderSpec(
        name="resnet50-trunc",
        family="torchvision",
        out_dim=1024,
        input_size_px=None,
        mpp=None,
        precision="fp16",
        weights_source=f"torchvision:ResNet50_Weights.{RESNET50_WEIGHTS}",
        weights_revision=RESNET50_WEIGHTS,
        weights_file=RESNET50_FILE,
        licence="BSD-3-Clause (torchvision); ImageNet weights, not a pathology model",
        channels_last=True,
        description=(
            "ImageNet ResNet-50 to layer3 + avg pool, 1024-d; the classic MIL baseline "
            "(conventionally used at 20x ~0.5 µm/px; full patch, no resize)"
        ),
    )
)
def _build_resnet50_trunc(
    spec: EncoderSpec, weights: Path | None, random_init: bool, overrides: Mapping[str, Any]
) -> nn.Module:
    tv = _import_torchvision()
    if weights is not None or random_init:
        trunk = ResNetTrunk(tv.models.resnet50(weights=None))
        if weights is not None:
            load_into(trunk, _resnet_to_trunk(load_state_dict_file(weights)), str(weights))
        return trunk
    try:
        resnet = tv.models.resnet50(weights=tv.models.ResNet50_Weights[RESNET50_WEIGHTS])
    except Exception as err:  # urllib/OSError/hash errors when offline or blocked
        raise WeightsUnavailableError(
            f"could not load torchvision ResNet-50 {RESNET50_WEIGHTS} weights "
            f"({type(err).__name__}: {err}). On an offline machine copy {RESNET50_FILE} "
            "(from download.pytorch.org/models/) into $TORCH_HOME/hub/checkpoints/, or "
            "pass --weights /path/to/resnet50.pth"
        ) from err
    return ResNetTrunk(resnet)


def _resnet_to_trunk(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a full torchvision ResNet state dict onto :class:`ResNetTrunk` keys."""
    if any(k.startswith("stem.") for k in state):
        return dict(state)
    stem = {"conv1": "stem.0", "bn1": "stem.1"}
    layers = {"layer1": "layers.0", "layer2": "layers.1", "layer3": "layers.2"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in stem:
            out[f"{stem[head]}.{rest}"] = value
        elif head in layers:
            out[f"{layers[head]}.{rest}"] = value
    return out
