"""``NCMILoss``: the NCMI surrogate loss as a module that owns its centroids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.base import ClassificationLoss, LossOutput, check_num_classes
from wsi_ncmi.losses.centroids import CentroidState
from wsi_ncmi.losses.options import (
    RENAMED_TO_GROUPS,
    AnchorSpec,
    CentroidSchedule,
    NCMIForm,
    override,
)
from wsi_ncmi.losses.registry import register_loss

Head = Literal["softmax", "sigmax", "feature"]

FEATURE_NORM_EPS: float = 1e-12
"""``eps`` of the L2 normalisation of the centred features (feature head)."""


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


@register_loss("ncmi")
class NCMILoss(ClassificationLoss):
    """NCMI loss ``KL(P ‖ Q_y) / separation(P, Q)``, minimised alone (no CE term).

    The defaults are the recommended variant: sigmax over the class logits, fixed smoothed
    one-hot anchors (``ε = 0.1``), separation ``(1/C) Σ_{c≠y} KL(Q_c ‖ P)``, mean of
    per-sample ratios, argmax prediction.

    Args:
        num_classes: ``C ≥ 2``.
        head: Output space. ``"softmax"`` or ``"sigmax"`` over ``(N, C)`` class logits; or
            ``"feature"``: the authors' head on raw ``(N, m)`` backbone features, which are
            centred by a bias-corrected EMA of batch means, L2-normalised, divided by
            ``temperature`` and mapped by sigmax. Use a BatchNorm'd backbone with it.
        feature_dim: ``m ≥ C`` for the feature head; if omitted, taken from the width of
            the first batch (the anchors and centre are created then).
        temperature: ``T > 0`` of the feature head (0.2–1 works; 0.05 fails).
        center_decay: EMA decay of the feature centre, in ``[0, 1)`` (authors:
            0.9999–0.999999).
        anchors: The anchors (:class:`~wsi_ncmi.losses.options.AnchorSpec`, or a mapping
            of the fields to change).
        form: Separation direction, normaliser, reduction and KL kernel
            (:class:`~wsi_ncmi.losses.options.NCMIForm`, or a mapping of fields).
        schedule: How the centroids move
            (:class:`~wsi_ncmi.losses.options.CentroidSchedule`, or a mapping of fields;
            default: fixed anchors).
    """

    #: Older flat arguments and the option group field each one moved to.
    RENAMED: ClassVar[dict[str, str]] = RENAMED_TO_GROUPS

    feature_center: Tensor
    feature_steps: Tensor

    def __init__(
        self,
        num_classes: int,
        *,
        head: Head = "sigmax",
        feature_dim: int | None = None,
        temperature: float = 0.2,
        center_decay: float = 0.9999,
        anchors: AnchorSpec | Mapping[str, Any] | None = None,
        form: NCMIForm | Mapping[str, Any] | None = None,
        schedule: CentroidSchedule | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_num_classes(num_classes, required=True)
        _choice("head", head, ("softmax", "sigmax", "feature"))
        anchor_spec = override(AnchorSpec(), anchors, "anchors")
        self.form = override(NCMIForm(), form, "form")
        self.schedule = override(CentroidSchedule(), schedule, "schedule")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        if not 0.0 <= center_decay < 1.0:
            raise ConfigError(f"center_decay must be in [0, 1), got {center_decay!r}")
        # Feature head without feature_dim: sized from the first batch (see _materialize).
        self.deferred_dim = head == "feature" and feature_dim is None
        if head == "feature" and feature_dim is not None:
            if feature_dim < num_classes:
                raise ConfigError(
                    "head='feature' needs feature_dim >= num_classes "
                    f"({num_classes}), got {feature_dim!r}"
                )
            dim = feature_dim
        else:
            dim = num_classes
        kind = anchor_spec.kind
        if kind == "auto":
            kind = "reference" if head == "feature" else "smoothed_onehot"
        if kind == "smoothed_onehot" and head == "feature":
            raise ConfigError(
                "anchors.kind='smoothed_onehot' needs a class head, not head='feature'"
            )
        anchor_tensor = (
            LF.smoothed_onehot_anchors(num_classes, anchor_spec.smoothing)
            if kind == "smoothed_onehot"
            else LF.reference_anchors(num_classes, dim, anchor_spec.scale)
        )
        self.num_classes = num_classes
        self.anchor_scale = anchor_spec.scale
        self.head: Head = head
        self.temperature = temperature
        self.center_decay = center_decay
        self.direction: LF.Direction = self.form.direction
        self.normalization: LF.Normalization = self.form.normalization
        self.reduction: LF.Reduction = self.form.reduction
        self.kl_method: LF.KLMethod = self.form.kl_method
        self.needs_class_head = head != "feature"
        self.needs_epoch_pass = self.schedule.mode == "alternating" or head == "feature"
        self.state = CentroidState(anchor_tensor, self.schedule, class_space=head != "feature")
        self.register_buffer("feature_center", torch.zeros(dim))
        self.register_buffer("feature_steps", torch.zeros((), dtype=torch.long))
        self._gamma_sum: Tensor | None = None
        self._gamma_steps = 0

    def pop_train_gamma(self) -> float | None:
        """Mean training Γ since the last call (``None`` without training steps).

        Read once per epoch by :class:`~wsi_ncmi.losses.callbacks.EscapeMonitor`.
        """
        if self._gamma_sum is None or self._gamma_steps == 0:
            return None
        value = float(self._gamma_sum) / self._gamma_steps
        self._gamma_sum, self._gamma_steps = None, 0
        return value

    def _materialize(self, dim: int, device: torch.device) -> None:
        """Size a deferred feature head to ``m = dim`` (reference anchors, zero centre)."""
        classes = self.state.num_classes
        if dim < classes:
            raise ValueError(
                f"the feature head needs features of width >= num_classes ({classes}), got {dim}"
            )
        anchors = LF.reference_anchors(classes, dim, self.anchor_scale).to(device)
        self.state.reset_anchors(anchors)
        self.feature_center = torch.zeros(dim, device=device)
        self.deferred_dim = False

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        center = state_dict.get(prefix + "feature_center")
        if self.deferred_dim and isinstance(center, Tensor):
            self._materialize(int(center.shape[0]), self.feature_center.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _feature_scores(self, features: Tensor, update_center: bool) -> Tensor:
        """Centre, L2-normalise and temper ``(N, m)`` features into sigmax scores."""
        if self.deferred_dim:
            self._materialize(int(features.shape[-1]), features.device)
        f = features if features.dtype == torch.float64 else features.float()
        steps = int(self.feature_steps)
        center = (
            self.feature_center / (1.0 - self.center_decay**steps)
            if steps > 0
            else torch.zeros_like(self.feature_center)
        )
        z = F.normalize(f - center.to(f.dtype), dim=-1, eps=FEATURE_NORM_EPS) / self.temperature
        if update_center and f.shape[0] > 0:
            with torch.no_grad():
                batch_mean = f.detach().mean(dim=0).to(self.feature_center.dtype)
                if dist.is_available() and dist.is_initialized():
                    # Every process folds in the same mean, so the centres stay equal.
                    dist.all_reduce(batch_mean, op=dist.ReduceOp.SUM)
                    batch_mean /= dist.get_world_size()
                self.feature_center.mul_(self.center_decay).add_(
                    (1.0 - self.center_decay) * batch_mean
                )
                self.feature_steps.add_(1)
        return z

    def probabilities(self, outputs: Tensor, *, update_center: bool = False) -> Tensor:
        """Map model outputs to the distributions ``P`` of the loss.

        Args:
            outputs: ``(N, C)`` class logits, or ``(N, m)`` features for the feature head.
            update_center: Feature head only: fold this batch into the centre EMA (done by
                :meth:`forward` on training steps, see
                :meth:`~wsi_ncmi.losses.base.ClassificationLoss.updates_state`). Under
                ``torch.distributed`` the batch mean is averaged over processes first.

        Returns:
            ``(N, K)`` probabilities, float32 (float64 for float64 input).
        """
        with torch.autocast(outputs.device.type, enabled=False):
            if self.head == "softmax":
                x = outputs if outputs.dtype == torch.float64 else outputs.float()
                return torch.softmax(x, dim=-1)
            if self.head == "sigmax":
                return LF.sigmax(outputs)
            return LF.sigmax(self._feature_scores(outputs, update_center))

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:
        """NCMI loss of a batch against the current loss centroids.

        Args:
            outputs: ``(N, C)`` class logits, or ``(N, m)`` features for the feature head.
                ``N = 1`` (one slide) works.
            targets: ``(N,)`` integer labels.

        Returns:
            ``LossOutput(loss, {"cmi", "gamma", "ncmi"})``; the terms are the batch means
            against the loss centroids, detached.
        """
        self.check_width(outputs)
        update = self.updates_state(outputs)
        p = self.probabilities(outputs, update_center=update)
        q = self.state.loss_centroids.to(p.dtype)
        loss, cmi, gamma = LF.ncmi_loss(
            p,
            q,
            targets,
            direction=self.direction,
            normalization=self.normalization,
            reduction=self.reduction,
            method=self.kl_method,
        )
        if update:
            self.state.count_step()
            self.state.ema_update(p, targets)
            g = gamma.detach()
            self._gamma_sum = g if self._gamma_sum is None else self._gamma_sum + g
            self._gamma_steps += 1
        cmi, gamma = cmi.detach(), gamma.detach()
        return LossOutput(loss, {"cmi": cmi, "gamma": gamma, "ncmi": cmi / (gamma + LF.RATIO_EPS)})

    def predict(self, outputs: Tensor) -> Tensor:
        """Argmax for class heads; nearest class mean ``argmin_c KL(P ‖ Q_c)`` otherwise.

        Args:
            outputs: ``(N, C)`` logits or ``(N, m)`` features.

        Returns:
            ``(N,)`` int64 class indices.
        """
        if self.head != "feature":
            return outputs.argmax(dim=-1)
        p = self.probabilities(outputs)
        return LF.nearest_centroid(p, self.state.prediction_centroids.to(p.dtype))


#: NCMI-MIL's form: the ratio of the batch means (the definition).
MIL_FORM = NCMIForm(reduction="ratio_of_means")
#: NCMI-MIL's schedule: slide-level class means recomputed in full after every epoch,
#: from the end of the first one.
MIL_SCHEDULE = CentroidSchedule(mode="alternating", warmup_epochs=1, warmup_steps=0, damping=1.0)


@register_loss("ncmi_mil")
class NCMIMILLoss(NCMILoss):
    """NCMI-MIL: the authors' bounded feature head on the slide embedding, slide-level centroids.

    The MIL default. The aggregator's slide embedding ``e`` (``(B, m)``, ``B`` slides per
    step) is centred by a bias-corrected EMA of batch means, L2-normalised, divided by
    ``T`` and mapped by sigmax, so every score lies in ``[−1/T, 1/T]``: no output can leave
    for a corner of the simplex, which is how the class-logit heads escape (see
    ``docs/ncmi.md``). The centroids are slide-level: the class means of ``P`` over *all*
    training slides, recomputed in eval mode after every epoch by
    :class:`~wsi_ncmi.losses.callbacks.CentroidUpdate` (or :func:`wsi_ncmi.losses.epoch_end`
    in a plain PyTorch loop), summed over processes under DDP. The first epoch trains
    against the reference anchors ``sigmax(anchor_scale · e_c)``. The loss of a step is
    the ratio of batch means (``ratio_of_means``), and prediction is the nearest
    centroid ``argmin_c KL(P ‖ Q_c)``.

    It takes the arguments of :class:`NCMILoss`; only the defaults differ
    (:data:`MIL_FORM`, :data:`MIL_SCHEDULE`: a ``form`` or ``schedule`` mapping changes
    those defaults field by field). ``T = 0.2``
    was chosen on validation on the demo, and recomputing the centroids in full every epoch
    beat damped (``α = 0.5``) and EMA centroids there (both before the protocol fixes of
    issue 23: ``git show 5af12dc:BENCHMARKS.md``); the `bench` twin's tuning record
    (``configs/recipes.yaml``) also chose ``T = 0.2``.

    Args:
        num_classes: ``C ≥ 2``.
        feature_dim: Width ``m ≥ C`` of the slide embedding (filled in by ``wsi-train``).
        head: See :class:`NCMILoss` (default ``"feature"``).
        temperature: See :class:`NCMILoss`.
        center_decay: See :class:`NCMILoss`.
        anchors: See :class:`NCMILoss` (``"auto"``: the reference anchors).
        form: Changes to :data:`MIL_FORM`.
        schedule: Changes to :data:`MIL_SCHEDULE`.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int | None = None,
        *,
        head: Head = "feature",
        temperature: float = 0.2,
        center_decay: float = 0.9999,
        anchors: AnchorSpec | Mapping[str, Any] | None = None,
        form: NCMIForm | Mapping[str, Any] | None = None,
        schedule: CentroidSchedule | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            num_classes,
            feature_dim=feature_dim,
            head=head,
            temperature=temperature,
            center_decay=center_decay,
            anchors=anchors,
            form=override(MIL_FORM, form, "form"),
            schedule=override(MIL_SCHEDULE, schedule, "schedule"),
        )


@register_loss("ncmi_authors")
class NCMIAuthorsLoss(NCMILoss):
    """The authors' own NCMI form, as their CIFAR-100 code builds it, on the slide embedding.

    ``P = sigmax(normalize(e − μ) / T)`` over the embedding's ``m`` dimensions, where
    ``sigmax(z)_k = σ(z_k) / Σ_j σ(z_j)`` and ``μ`` is a (bias-corrected) EMA of batch
    means with decay ``center_decay``. The anchors ``Q̃_c = sigmax(W_c)``, with ``W`` the
    first ``C`` rows of an identity padded to width ``m``, times 10, are fixed and never
    trained. The loss is the mean over slides of
    ``KL(P_i ‖ Q̃_{y_i}) / ((1/C) Σ_{c≠y_i} KL(Q̃_c ‖ P_i))``. Prediction is the nearest
    class mean of ``P`` over the training slides (``argmin_c KL(P ‖ mean_c)``),
    recomputed after every epoch.

    It differs from ``ncmi_mil`` in two ways: the centroids stay the anchors (no
    alternating Q-step) and each step averages per-slide ratios. Only the two arguments
    of the authors' code are exposed.

    Args:
        num_classes: ``C ≥ 2``.
        feature_dim: Width ``m ≥ C`` of the slide embedding (filled in by ``wsi-train``).
        temperature: ``T > 0``.
        center_decay: EMA decay of ``μ``, in ``[0, 1)``.
    """

    RENAMED: ClassVar[dict[str, str]] = {}  # it never took the schedule/form/anchor options

    def __init__(
        self,
        num_classes: int,
        feature_dim: int | None = None,
        *,
        temperature: float = 0.2,
        center_decay: float = 0.9999,
    ) -> None:
        super().__init__(
            num_classes,
            head="feature",
            feature_dim=feature_dim,
            temperature=temperature,
            center_decay=center_decay,
            anchors=AnchorSpec(kind="reference", scale=10.0),
            form=NCMIForm(),  # KL(Q_c ‖ P), 1/C, mean of per-slide ratios
            schedule=CentroidSchedule(mode="fixed"),
        )
