"""Baseline losses on class logits, registered beside NCMI.

All compute in float32 (float64 inputs stay float64) with autocast off, take ``(N, C)``
logits and ``(N,)`` labels, and predict by argmax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.base import ClassificationLoss, LossOutput, check_num_classes
from wsi_ncmi.losses.centroids import CentroidState
from wsi_ncmi.losses.options import RENAMED_TO_GROUPS, CentroidSchedule, NCMIForm, override
from wsi_ncmi.losses.registry import register_loss


def _fp(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


@register_loss("ce")
class CrossEntropyLoss(ClassificationLoss):
    """Cross-entropy on class logits.

    Args:
        num_classes: ``C ≥ 2``; optional (when given, logits of another width are refused).
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """Mean cross-entropy.

        Args:
            outputs: ``(N, C)`` logits.
            targets: ``(N,)`` labels.

        Returns:
            ``LossOutput(loss, {"ce": loss})``.
        """
        self.check_width(outputs)
        with torch.autocast(outputs.device.type, enabled=False):
            loss = F.cross_entropy(_fp(outputs), targets)
        return LossOutput(loss, {"ce": loss.detach()})


@register_loss("weighted_ce")
class WeightedCrossEntropyLoss(ClassificationLoss):
    """Cross-entropy weighted by inverse class frequency, ``w_c = N / (C · n_c)``.

    Args:
        class_counts: Training-set count of each class (``C`` non-negative numbers);
            classes with a zero count get weight 0. If omitted, the counts are those of
            the training targets seen so far (updated at every training step, before the
            step's loss), which needs ``num_classes``.
        num_classes: ``C ≥ 2``; required without ``class_counts``, else checked against it.
    """

    weight: Tensor
    seen_counts: Tensor

    def __init__(
        self, class_counts: Sequence[float] | None = None, num_classes: int | None = None
    ) -> None:
        super().__init__()
        check_num_classes(num_classes, required=class_counts is None)
        if class_counts is None:
            assert num_classes is not None  # checked above
            self.num_classes = num_classes
            self.register_buffer("weight", torch.ones(num_classes))
            self.register_buffer("seen_counts", torch.zeros(num_classes))
            self.counts_from_data = True
            return
        counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
        if counts.ndim != 1 or counts.numel() < 2 or bool((counts < 0).any()):
            raise ConfigError(
                f"class_counts must list >= 2 non-negative counts, got {list(class_counts)!r}"
            )
        if float(counts.sum()) <= 0:
            raise ConfigError(f"class_counts must not be all zero, got {list(class_counts)!r}")
        if num_classes is not None and counts.numel() != num_classes:
            raise ConfigError(
                f"class_counts has {counts.numel()} entries but num_classes is {num_classes}"
            )
        self.num_classes = int(counts.numel())
        self.counts_from_data = False
        self.register_buffer("weight", _inverse_frequency(counts))
        self.register_buffer("seen_counts", counts.clone())

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """Weighted mean cross-entropy (PyTorch's weight normalisation).

        Args:
            outputs: ``(N, C)`` logits.
            targets: ``(N,)`` labels.

        Returns:
            ``LossOutput(loss, {"ce": loss})``.
        """
        self.check_width(outputs)
        if self.counts_from_data and self.updates_state(outputs):
            with torch.no_grad():
                self.seen_counts.add_(
                    torch.bincount(targets, minlength=self.seen_counts.numel()).to(
                        self.seen_counts.dtype
                    )
                )
                self.weight.copy_(_inverse_frequency(self.seen_counts))
        with torch.autocast(outputs.device.type, enabled=False):
            x = _fp(outputs)
            loss = F.cross_entropy(x, targets, weight=self.weight.to(x.dtype))
        return LossOutput(loss, {"ce": loss.detach()})


def _inverse_frequency(counts: Tensor) -> Tensor:
    """``w_c = N / (C · n_c)``, and 0 for classes never seen, ``(C,)``."""
    weight = counts.sum() / (counts.numel() * counts.clamp_min(1))
    return torch.where(counts > 0, weight, torch.zeros_like(weight))


@register_loss("focal")
class FocalLoss(ClassificationLoss):
    """Focal loss ``−(1 − p_y)^γ log p_y`` (Lin et al. 2017), averaged over the batch.

    Args:
        gamma: Focusing parameter ``γ ≥ 0`` (``0`` is cross-entropy).
        num_classes: ``C ≥ 2``; optional (when given, logits of another width are refused).
    """

    def __init__(self, gamma: float = 2.0, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma!r}")
        self.gamma = gamma

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """Mean focal loss.

        Args:
            outputs: ``(N, C)`` logits.
            targets: ``(N,)`` labels.

        Returns:
            ``LossOutput(loss, {"focal": loss})``.
        """
        self.check_width(outputs)
        with torch.autocast(outputs.device.type, enabled=False):
            log_p = F.log_softmax(_fp(outputs), dim=-1).gather(1, targets.view(-1, 1)).squeeze(1)
            loss = (-((1 - log_p.exp()).clamp_min(0) ** self.gamma) * log_p).mean()
        return LossOutput(loss, {"focal": loss.detach()})


@register_loss("label_smoothing")
class LabelSmoothingLoss(ClassificationLoss):
    """Cross-entropy against ``(1 − ε) e_y + ε / C`` targets.

    Args:
        smoothing: ``ε`` in ``[0, 1)``.
        num_classes: ``C ≥ 2``; optional (when given, logits of another width are refused).
    """

    def __init__(self, smoothing: float = 0.1, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if not 0.0 <= smoothing < 1.0:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = smoothing

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """Mean label-smoothed cross-entropy.

        Args:
            outputs: ``(N, C)`` logits.
            targets: ``(N,)`` labels.

        Returns:
            ``LossOutput(loss, {"ce": loss})``.
        """
        self.check_width(outputs)
        with torch.autocast(outputs.device.type, enabled=False):
            loss = F.cross_entropy(_fp(outputs), targets, label_smoothing=self.smoothing)
        return LossOutput(loss, {"ce": loss.detach()})


@register_loss("squentropy")
class SquentropyLoss(ClassificationLoss):
    """Squentropy (Hui et al. 2023): CE plus the mean squared logit of the wrong classes.

    ``loss = CE + (1 / (C − 1)) Σ_{c ≠ y} z_c²``, averaged over the batch.

    Args:
        num_classes: ``C ≥ 2``; optional (when given, logits of another width are refused).
    """

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """Mean squentropy.

        Args:
            outputs: ``(N, C)`` logits, ``C ≥ 2``.
            targets: ``(N,)`` labels.

        Returns:
            ``LossOutput(loss, {"ce", "square"})``.
        """
        self.check_width(outputs)
        with torch.autocast(outputs.device.type, enabled=False):
            z = _fp(outputs)
            ce = F.cross_entropy(z, targets)
            wrong = 1.0 - F.one_hot(targets, z.shape[-1]).to(z.dtype)
            square = ((z**2) * wrong).sum(dim=-1).mean() / (z.shape[-1] - 1)
        return LossOutput(ce + square, {"ce": ce.detach(), "square": square.detach()})


#: CMIC-DL's schedule: alternating Q-steps after the safe warm-up, damped.
CMIC_SCHEDULE = CentroidSchedule(mode="alternating")


@register_loss("cmic")
class CMICLoss(ClassificationLoss):
    """CMIC-DL (Yang et al. 2025): ``CE + λ·CMI − β·Γ`` on softmax outputs.

    CMI and Γ are batch estimates against centroids kept by a
    :class:`~wsi_ncmi.losses.centroids.CentroidState` (alternating Q-steps by default,
    with the safe warm-up and damping schedule).

    Args:
        num_classes: ``C ≥ 2``.
        cmi_weight: ``λ ≥ 0``.
        gamma_weight: ``β ≥ 0``.
        anchor_smoothing: ``ε`` in ``(0, 1]`` of the smoothed one-hot initial centroids.
        form: Separation direction and normaliser
            (:class:`~wsi_ncmi.losses.options.NCMIForm`, or a mapping of fields; the
            reduction and KL kernel do not apply: both terms are batch means).
        schedule: Changes to :data:`CMIC_SCHEDULE` (alternating, with the safe warm-up
            and damping), a :class:`~wsi_ncmi.losses.options.CentroidSchedule` or a
            mapping of fields.
    """

    #: Older flat arguments and the option group field each one moved to.
    RENAMED: ClassVar[dict[str, str]] = {
        key: RENAMED_TO_GROUPS[key]
        for key in (
            "centroids",
            "warmup_epochs",
            "warmup_steps",
            "damping",
            "damping_steps",
            "ema_momentum",
            "direction",
            "normalization",
        )
    }

    def __init__(
        self,
        num_classes: int,
        *,
        cmi_weight: float = 0.1,
        gamma_weight: float = 0.01,
        anchor_smoothing: float = 0.1,
        form: NCMIForm | Mapping[str, Any] | None = None,
        schedule: CentroidSchedule | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes, required=True)
        if cmi_weight < 0 or gamma_weight < 0:
            raise ConfigError(
                f"cmi_weight and gamma_weight must be >= 0, got {cmi_weight!r}, {gamma_weight!r}"
            )
        self.num_classes = num_classes
        self.cmi_weight = cmi_weight
        self.gamma_weight = gamma_weight
        if not 0.0 < anchor_smoothing <= 1.0:
            raise ConfigError(f"anchor_smoothing must be in (0, 1], got {anchor_smoothing!r}")
        chosen = override(NCMIForm(), form, "form")
        self.direction: LF.Direction = chosen.direction
        self.normalization: LF.Normalization = chosen.normalization
        self.schedule = override(CMIC_SCHEDULE, schedule, "schedule")
        self.needs_epoch_pass = self.schedule.mode == "alternating"
        self.state = CentroidState(
            LF.smoothed_onehot_anchors(num_classes, anchor_smoothing), self.schedule
        )

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """CE plus the weighted CMI and separation terms.

        Args:
            outputs: ``(N, C)`` logits.
            targets: ``(N,)`` labels.

        Returns:
            ``LossOutput(loss, {"ce", "cmi", "gamma"})``.
        """
        self.check_width(outputs)
        with torch.autocast(outputs.device.type, enabled=False):
            z = _fp(outputs)
            ce = F.cross_entropy(z, targets)
            p = torch.softmax(z, dim=-1)
            q = self.state.loss_centroids.to(p.dtype)
            cmi = LF.cmi_terms(p, q, targets).mean()
            gamma = LF.separation_terms(
                p, q, targets, self.direction, normalization=self.normalization
            ).mean()
            loss = ce + self.cmi_weight * cmi - self.gamma_weight * gamma
        if self.updates_state(outputs):
            self.state.count_step()
            self.state.ema_update(p, targets)
        return LossOutput(loss, {"ce": ce.detach(), "cmi": cmi.detach(), "gamma": gamma.detach()})
