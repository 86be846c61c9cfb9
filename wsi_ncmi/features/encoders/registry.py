"""The encoder registry: lookups by name, the frozen-encoder module, and ``build_encoder``.

Encoders live in a :class:`wsi_ncmi.registry.Registry` (the type the losses and the
aggregators use too), filled by the ``@register_encoder`` decorators of the encoder
modules imported below (see :mod:`wsi_ncmi.features.encoders.spec`). Everything around a
backbone (uint8 to float, resizing to the input size, mean/std normalisation on the
device) lives once in :class:`EncoderModule`. The spec travels with every feature file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError

# Registration happens when these modules are imported; importing them is cheap
# (torchvision/timm are imported inside the builders only).
from wsi_ncmi.features.encoders import builtin, hub_models, torchvision_models  # noqa: F401
from wsi_ncmi.features.encoders.spec import (
    ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BuildFn,
    EncoderEntry,
    EncoderSpec,
    Precision,
    load_into,
    load_state_dict_file,
    register_encoder,
)


def _entry(name: str) -> EncoderEntry:
    """The registry entry of a registered name."""
    entry = ENCODERS.get(name)
    if not isinstance(entry, EncoderEntry):
        raise TypeError(f"encoder {name!r} is registered without a spec: {entry!r}")
    return entry


def list_encoders() -> list[EncoderSpec]:
    """Specs of every registered encoder, sorted by name."""
    return [_entry(name).spec for name in ENCODERS.names()]


def get_spec(name: str) -> EncoderSpec:
    """The registered spec of ``name`` (``timm:<model>`` names are resolved lazily).

    Raises:
        ConfigError: Unknown name.
    """
    if name in ENCODERS:
        return _entry(name).spec
    if name.startswith("timm:"):
        from wsi_ncmi.features.encoders.timm_models import timm_spec

        return timm_spec(name)
    raise ConfigError(
        f"--encoder must be a registered name or 'timm:<model>', got {name!r}; "
        f"registered: {ENCODERS.names()} (see wsi-extract --list_encoders)"
    )


class EncoderModule(nn.Module):
    """A backbone plus the preprocessing its spec prescribes, applied on the device.

    Args:
        spec: The encoder spec (recorded in outputs).
        backbone: Maps normalised ``(B, 3, S, S)`` float to ``(B, D)``.
    """

    def __init__(self, spec: EncoderSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        # (x / 255 - mean) / std == x * scale - shift: one fused pass over the batch.
        mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` → normalised float ``(B, 3, S, S)``, S = input size.

        Normalisation comes first (it is per-channel affine, so it commutes with the
        resize, whose weights sum to one). A permuted NHWC batch is already laid out
        ``channels_last``; CNNs keep that layout, other models get a contiguous copy.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (B, H, W, 3) images, got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().mul_(self.scale).sub_(self.shift)
        size = self.spec.input_size_px
        if size is not None:
            resized = round(size / self.spec.crop_pct)
            if x.shape[-2:] != (resized, resized):
                x = nn.functional.interpolate(
                    x,
                    size=(resized, resized),
                    mode=self.spec.interpolation,
                    align_corners=False,
                    antialias=True,
                )
            if resized != size:
                top = (resized - size) // 2
                x = x[..., top : top + size, top : top + size]
        memory_format = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, D)`` of uint8 ``(B, H, W, 3)`` patches."""
        out = self.backbone(self.preprocess(images))
        return out.flatten(1)


def build_encoder(
    name: str,
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    arch_overrides: Mapping[str, Any] | None = None,
    weights_hash_cache: str | Path | None = None,
) -> EncoderModule:
    """Build a frozen encoder in eval mode.

    Args:
        name: Registered name or ``timm:<model>``.
        weights: Local checkpoint (``.safetensors``, ``.bin``, ``.pth``) instead of
            the spec's download source.
        random_init: Random weights, no download (tests, demos); recorded in the spec.
        arch_overrides: Architecture keyword overrides (e.g. ``{"depth": 1}`` to make
            a tiny test variant of a ViT; only valid with ``random_init``).
        weights_hash_cache: JSON memo of checkpoint SHA-256 digests (see
            :mod:`wsi_ncmi.features.weights_hash`); ``None`` hashes ``weights`` anew.

    Raises:
        ConfigError: Unknown encoder, or ``arch_overrides`` with pretrained weights.
        WeightsUnavailableError: Pretrained weights cannot be found or downloaded.
    """
    spec = get_spec(name)
    overrides = dict(arch_overrides or {})
    if overrides and not random_init:
        raise ConfigError("arch_overrides change the architecture; use them with random_init")
    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None and random_init:
        raise ConfigError("pass either weights or random_init, not both")
    if weights_path is not None:
        spec = dataclasses.replace(
            spec,
            weights_source="local",
            weights_revision=f"sha256:{_checkpoint_sha256(weights_path, weights_hash_cache)}",
            weights_path=str(weights_path.resolve()),
        )
    if random_init and spec.family != "builtin":
        spec = dataclasses.replace(spec, random_init=True, weights_source="random")
    if name.startswith("timm:"):
        from wsi_ncmi.features.encoders.timm_models import build_timm_generic

        backbone = build_timm_generic(spec, weights_path, random_init, overrides)
    else:
        backbone = ENCODERS.build(
            name, spec=spec, weights=weights_path, random_init=random_init, arch_overrides=overrides
        )
        amend = _entry(name).pretrained_spec
        if amend is not None and weights_path is None and not random_init:
            spec = amend(spec)
    module = EncoderModule(spec, backbone)
    if spec.channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    module.eval().requires_grad_(False)
    return module


def _checkpoint_sha256(path: Path, cache: str | Path | None) -> str:
    """Content hash of a ``--weights`` file (memoised).

    Raises:
        WeightsUnavailableError: Missing or unreadable file.
    """
    from wsi_ncmi.errors import WeightsUnavailableError
    from wsi_ncmi.features.weights_hash import weights_sha256

    if not path.is_file():
        raise WeightsUnavailableError(f"--weights {str(path)!r} does not exist or is not a file")
    try:
        return weights_sha256(path, cache)
    except OSError as err:
        raise WeightsUnavailableError(f"cannot read checkpoint {str(path)!r}: {err}") from err


__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BuildFn",
    "EncoderEntry",
    "EncoderModule",
    "EncoderSpec",
    "Precision",
    "build_encoder",
    "get_spec",
    "list_encoders",
    "load_into",
    "load_state_dict_file",
    "register_encoder",
]
