"""Backbones for the image trainer: built-in small models, torchvision/timm when installed."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError


class MLP(nn.Module):
    """Flatten, then ``Linear → BatchNorm → ReLU`` blocks; outputs the last block.

    Args:
        in_dim: Flattened input size.
        hidden_dims: Widths of the blocks; the last is the feature dimension.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (256, 256, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_dim
        for out in hidden_dims:
            layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU()]
            width = out
        self.layers = nn.Sequential(*layers)
        self.feature_dim = width

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(N, ...)`` inputs to ``(N, feature_dim)`` features."""
        return self.layers(x)


class SmallCNN(nn.Module):
    """Three ``conv-BN-ReLU ×2, max-pool`` stages, global average pool, BN'd projection.

    Args:
        in_channels: Image channels.
        width: Channels of the first stage (doubled at each stage).
        feature_dim: Output feature dimension.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for stage in range(3):
            out = width * 2**stage
            for _ in range(2):
                blocks += [
                    nn.Conv2d(channels, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
            blocks.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.project = nn.Sequential(
            nn.Linear(channels, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU()
        )
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(N, C, H, W)`` images to ``(N, feature_dim)`` features."""
        return self.project(self.features(x))


def _import(package: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise ConfigError(
            f"backbone '{package}:...' needs {package}, which is not importable here "
            f"({err}); install it beside torch (pip install 'wsi-ncmi[encoders]') or use "
            "'small_cnn'"
        ) from err


def build_backbone(name: str, in_channels: int = 3, feature_dim: int = 128) -> nn.Module:
    """Build a backbone that maps images to features and has a ``feature_dim`` attribute.

    Args:
        name: ``"small_cnn"``, ``"torchvision:<arch>"`` (e.g. ``torchvision:resnet50``) or
            ``"timm:<arch>"``; external models are built without pretrained weights and
            their classifier removed.
        in_channels: Image channels (built-in models only).
        feature_dim: Feature dimension (built-in models only).

    Returns:
        The backbone.

    Raises:
        ConfigError: If the name is unknown or its package cannot be imported.
    """
    if name == "small_cnn":
        return SmallCNN(in_channels, feature_dim=feature_dim)
    package, _, arch = name.partition(":")
    if package == "torchvision" and arch:
        models = _import("torchvision.models")
        model: Any = models.get_model(arch, weights=None)
        head_name = next(n for n in ("fc", "classifier", "head", "heads") if hasattr(model, n))
        head = getattr(model, head_name)
        linear = (
            head
            if isinstance(head, nn.Linear)
            else next(m for m in reversed(list(head.modules())) if isinstance(m, nn.Linear))
        )
        setattr(model, head_name, nn.Identity())
        model.feature_dim = linear.in_features
        return model
    if package == "timm" and arch:
        timm = _import("timm")
        model = timm.create_model(arch, pretrained=False, num_classes=0)
        model.feature_dim = model.num_features
        return model
    raise ConfigError(
        f"backbone must be 'small_cnn', 'torchvision:<arch>' or 'timm:<arch>', got {name!r}"
    )
