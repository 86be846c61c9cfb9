"""The label-ignoring escape of class-logit NCMI, computed and detected.

With class logits, the authors' separation term ``KL(Q_c ‖ P)`` has no upper bound: it
grows like ``−Q_c,k log P_k`` as any coordinate ``P_k`` goes to 0. A network can therefore
lower ``CMI / Γ`` without looking at the labels, by pushing every output towards one
corner of the simplex: ``Γ`` explodes faster than ``CMI`` grows.
:func:`shared_output_ncmi` computes the loss of one output shared by every sample (a
network that ignores its input), which shows that the corner beats the honest,
label-ignoring answer (the prior mix of the anchors); ``docs/ncmi.md`` has the numbers.
:func:`escape_reason` is the run-time check used by
:class:`wsi_ncmi.losses.callbacks.EscapeMonitor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from wsi_ncmi.losses import functional as LF


class SeparationEscapeWarning(UserWarning):
    """Training Γ grows without bound while validation predictions stay constant."""


def shared_output_ncmi(
    p: Tensor,
    anchors: Tensor,
    label_counts: Sequence[int],
    *,
    direction: LF.Direction = "centroid_to_output",
    normalization: LF.Normalization = "num_classes",
    reduction: LF.Reduction = "mean_of_ratios",
) -> tuple[float, float, float]:
    """NCMI of a batch in which every sample gets the same output ``p``.

    Args:
        p: ``(K,)`` the shared output distribution.
        anchors: ``(C, K)`` the loss centroids.
        label_counts: Samples of each class in the batch (``C`` counts).
        direction: Separation direction.
        normalization: Separation normaliser.
        reduction: Ratio estimator.

    Returns:
        ``(loss, cmi, gamma)`` as floats.
    """
    y = torch.cat([torch.full((int(n),), c, dtype=torch.long) for c, n in enumerate(label_counts)])
    batch = p.to(torch.float64).expand(y.shape[0], -1)
    loss, cmi, gamma = LF.ncmi_loss(
        batch,
        anchors.to(torch.float64),
        y,
        direction=direction,
        normalization=normalization,
        reduction=reduction,
    )
    return float(loss), float(cmi), float(gamma)


def prior_mix(anchors: Tensor, label_counts: Sequence[int]) -> Tensor:
    """``Σ_c π_c Q_c``: the best label-ignoring output in the sense of the class mix.

    Args:
        anchors: ``(C, K)``.
        label_counts: ``C`` counts.

    Returns:
        ``(K,)`` distribution.
    """
    prior = torch.as_tensor(list(label_counts), dtype=torch.float64)
    return (prior / prior.sum()) @ anchors.to(torch.float64)


def escape_reason(
    train_gamma: Sequence[float],
    val_effective_classes: Sequence[float],
    *,
    growth: float = 3.0,
    patience: int = 3,
    constant_below: float = 1.2,
) -> str | None:
    """Whether a run shows the escape, and why.

    The signature: over the last ``patience`` epochs the validation predictions cover
    fewer than ``constant_below`` effective classes (one class, in effect), while the
    epoch-mean training Γ has grown to at least ``growth`` times its first value and is
    still rising.

    Args:
        train_gamma: Epoch-mean training Γ, one value per finished epoch.
        val_effective_classes: ``exp(entropy)`` of the validation prediction histogram,
            one value per epoch.
        growth: Required growth of Γ over its first epoch.
        patience: Epochs the pattern must hold.
        constant_below: Effective-class count under which predictions count as constant.

    Returns:
        A human-readable reason, or ``None`` if the run looks healthy.
    """
    n = min(len(train_gamma), len(val_effective_classes))
    if n < max(patience, 2):
        return None
    gamma = [float(g) for g in train_gamma[:n]]
    if not all(math.isfinite(g) for g in gamma) or gamma[0] <= 0:
        return None
    recent = list(val_effective_classes[n - patience : n])
    constant = all(c < constant_below for c in recent)
    grown = gamma[-1] >= growth * gamma[0]
    rising = gamma[-1] > gamma[-patience]
    if constant and grown and rising:
        return (
            f"training Γ rose from {gamma[0]:.3g} to {gamma[-1]:.3g} over {n} epochs while "
            f"validation predictions stayed on one class for {patience} epochs: the class-logit "
            "outputs are escaping to a simplex corner instead of fitting the labels. Use "
            "loss 'ncmi_mil' (bounded feature head), or form={direction: output_to_centroid}"
        )
    return None
