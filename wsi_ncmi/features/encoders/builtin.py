"""Built-in, offline, training-free baseline encoders.

These exist so the pipeline, its tests and the demo run without downloading anything.
They are **baselines, not pathology foundation models**: ``random-cnn`` is a frozen,
randomly initialised CNN (random features are a known, weak but non-trivial baseline for
MIL), and ``stain-stats`` summarises colour, stain (H&E optical density) and texture.
Expect them to be clearly worse than UNI, Virchow2 and the like on real data.

``random-cnn`` standardises each patch's colour channels (zero mean, unit variance per
patch and channel) before the convolutions, so its features describe structure and
texture (nuclear size, crowding, chromatin) rather than the hospital's stain intensity.
Without it (version 1, ``weights_source`` ``seed:0``) the features were dominated by
stain: on the synthetic demo cohort a linear tumour-vs-normal patch probe trained on four
hospitals called whole slides of the fifth tumour or normal (BENCHMARKS.md, demo section).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.encoders.spec import EncoderSpec, load_into, load_state_dict_file
from wsi_ncmi.features.encoders.spec import register_encoder as _register

RANDOM_CNN_SEED = 0
RANDOM_CNN_WIDTHS = (32, 64, 128, 128)
#: Part of ``random-cnn``'s identity: a change of the input handling changes the features.
RANDOM_CNN_INPUT = "per-patch-channel-standardised"
_PATCH_STD_EPS = 1e-3

# Ruifrok & Johnston H&E-DAB optical-density vectors (rows: H, E, DAB).
_HED_FROM_RGB = torch.linalg.inv(
    torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
).float()


def standardise_patches(x: torch.Tensor, eps: float = _PATCH_STD_EPS) -> torch.Tensor:
    """Per patch and channel: subtract the mean, divide by the standard deviation (+ ``eps``).

    Invariant to any per-channel gain and offset, hence to the per-channel affine input
    normalisation applied by the encoder wrapper (up to ``eps``).
    """
    x = x.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True)
    return (x - mean) / (std + eps)


class RandomConvNet(nn.Module):
    """Four stride-2 conv blocks, then global mean and std pooling.

    Args:
        widths: Channels of the four blocks; the output dim is ``2 * widths[-1]``.
        seed: Seed of the weight initialisation (a private generator: the global RNG
            is left untouched, so the weights are the same in every process).
        standardise_input: Standardise each patch's channels first (see
            :func:`standardise_patches`); ``random-cnn`` does.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = RANDOM_CNN_WIDTHS,
        seed: int = 0,
        *,
        standardise_input: bool = False,
    ) -> None:
        super().__init__()
        self.standardise_input = standardise_input
        layers: list[nn.Module] = []
        in_ch = 3
        for width in widths:
            layers += [nn.Conv2d(in_ch, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            in_ch = width
        self.body = nn.Sequential(*layers)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.body:
                if isinstance(module, nn.Conv2d):
                    fan_in = module.in_channels * 9
                    std = (2.0 / fan_in) ** 0.5
                    module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                    if module.bias is not None:
                        module.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, 2 * widths[-1])`` (mean and std of the last map)."""
        if self.standardise_input:
            x = standardise_patches(x)
        fmap = self.body(x).float()
        return torch.cat([fmap.mean(dim=(2, 3)), fmap.std(dim=(2, 3))], dim=1)


class StainTextureStats(nn.Module):
    """24 colour, stain and texture statistics of a ``(B, 3, H, W)`` 0..1 RGB batch.

    Features: RGB mean and std (6); optical-density mean and std (6); H, E, DAB
    concentration mean and std from colour deconvolution (6); H 25th/75th percentiles
    (2); tissue fraction (OD sum > 0.15) (1); gradient magnitude mean and std (2);
    Laplacian variance (1).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in 0..1 → ``(B, 24)``."""
        x = x.float()
        od = -torch.log((x * 255.0 + 1.0) / 256.0)
        hed = torch.einsum("bchw,cd->bdhw", od, _HED_FROM_RGB.to(x.device))
        h_flat = hed[:, 0].flatten(1)
        gray = x.mean(dim=1, keepdim=True)
        gx = gray[..., :, 1:] - gray[..., :, :-1]
        gy = gray[..., 1:, :] - gray[..., :-1, :]
        grad = (gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt().flatten(1)
        lap = (
            gray[..., 1:-1, :-2] + gray[..., 1:-1, 2:] + gray[..., :-2, 1:-1] + gray[..., 2:, 1:-1]
        ) - 4 * gray[..., 1:-1, 1:-1]
        parts = [
            x.mean(dim=(2, 3)),
            x.std(dim=(2, 3)),
            od.mean(dim=(2, 3)),
            od.std(dim=(2, 3)),
            hed.mean(dim=(2, 3)),
            hed.std(dim=(2, 3)),
            torch.quantile(h_flat, torch.tensor([0.25, 0.75], device=x.device), dim=1).T,
            (od.sum(dim=1) > 0.15).float().mean(dim=(1, 2)).unsqueeze(1),
            grad.mean(dim=1, keepdim=True),
            grad.std(dim=1, keepdim=True),
            lap.flatten(1).var(dim=1, keepdim=True),
        ]
        return torch.cat(parts, dim=1)


@_register(
    EncoderSpec(
        name="random-cnn",
        family="builtin",
        out_dim=2 * RANDOM_CNN_WIDTHS[-1],
        input_size_px=None,
        mpp=None,
        weights_source=f"seed:{RANDOM_CNN_SEED}",
        weights_revision=f"input:{RANDOM_CNN_INPUT}",
        licence="MIT (part of wsi-ncmi; no pretrained weights)",
        random_init=True,
        channels_last=True,
        description=(
            "BASELINE: frozen random 4-layer CNN (seed 0) on per-patch standardised "
            "channels, offline, any patch size"
        ),
    )
)
def _build_random_cnn(
    spec: EncoderSpec, weights: Path | None, random_init: bool, overrides: Mapping[str, Any]
) -> nn.Module:
    widths = tuple(overrides.get("widths", RANDOM_CNN_WIDTHS))
    model = RandomConvNet(
        widths,
        seed=int(overrides.get("seed", RANDOM_CNN_SEED)),
        standardise_input=bool(overrides.get("standardise_input", True)),
    )
    if weights is not None:
        load_into(model, load_state_dict_file(weights), str(weights))
    return model


@_register(
    EncoderSpec(
        name="stain-stats",
        family="builtin",
        out_dim=24,
        input_size_px=None,
        mpp=None,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        weights_source="none",
        licence="MIT (part of wsi-ncmi; no weights)",
        description="BASELINE: 24 colour/H&E-stain/texture statistics, offline, no weights",
    )
)
def _build_stain_stats(
    spec: EncoderSpec, weights: Path | None, random_init: bool, overrides: Mapping[str, Any]
) -> nn.Module:
    if weights is not None:
        raise ConfigError("stain-stats has no weights; do not pass --weights")
    return StainTextureStats()
