"""Per-slide robust standardisation of patch features (``data.slide_norm: robust``).

Each feature dimension of a bag is centred on the slide's own median and divided by its
own robust spread, so the features say how a patch differs from the rest of *its* slide.
A hospital's stain or scanner shift that moves every patch of a slide the same way (a
per-dimension offset and gain) cancels exactly, while a patch that stands out from its
slide, such as a tumour cluster in lymph node, still stands out. It uses the slide's own
patches only (no labels, no other slides), so it is the same in training, validation,
test and prediction, and nothing leaks between splits.

The spread is ``1.4826 · MAD`` (the median absolute deviation, scaled to be the standard
deviation under a normal distribution). Where the MAD is zero (a feature that is
constant on more than half of the slide's patches, e.g. a tissue fraction of 1), it is
``1.2533 · mean absolute deviation`` instead (the same scaling for the mean deviation),
and 1 where that is zero too (a constant feature stays 0). Medians are torch's: for an
even number of patches, the lower of the two middle values. The normalised bag is
float32, twice the memory of a float16 bag kept with ``cache_in_ram``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

SlideNorm = Literal["none", "robust"]
SLIDE_NORMS: tuple[str, ...] = ("none", "robust")

_MAD_TO_STD = 1.4826
_MEAN_AD_TO_STD = 1.2533
_ZERO = 1e-12


def robust_standardize(bag: Tensor) -> Tensor:
    """``(x - median) / spread`` per dimension over the bag's own patches.

    Args:
        bag: ``(N, D)`` features of one slide (any float dtype), ``N >= 1``.

    Returns:
        ``(N, D)`` float32.
    """
    x = bag.to(torch.float64)
    median = x.median(dim=0).values
    deviation = (x - median).abs()
    spread = _MAD_TO_STD * deviation.median(dim=0).values
    fallback = _MEAN_AD_TO_STD * deviation.mean(dim=0)
    spread = torch.where(spread > _ZERO, spread, fallback)
    spread = torch.where(spread > _ZERO, spread, torch.ones_like(spread))
    return ((x - median) / spread).to(torch.float32)


def apply_slide_norm(bag: Tensor, mode: str) -> Tensor:
    """Apply ``mode`` (``"none"``: the bag unchanged; ``"robust"``: :func:`robust_standardize`).

    Args:
        bag: ``(N, D)`` features of one slide.
        mode: One of :data:`SLIDE_NORMS`.

    Returns:
        ``(N, D)``: the same tensor for ``"none"``, float32 for ``"robust"``.

    Raises:
        ValueError: Unknown mode.
    """
    if mode == "none":
        return bag
    if mode == "robust":
        return robust_standardize(bag)
    raise ValueError(f"slide_norm must be one of {list(SLIDE_NORMS)}, got {mode!r}")
