"""Centroid state shared by the centroid-based losses: anchors, Q-step schedule, collapse check.

Three ways to keep the centroids ``Q`` that feed the loss:

* ``"fixed"``: ``Q`` is the anchors forever (the recommended default). Class means are still
  refreshed by the epoch-end pass when the loss needs them for prediction.
* ``"alternating"``: the closed-form Q-step ``Q ← (1 − α) Q + α · mean_c(P)`` over the
  training outputs at the end of each epoch, once ``warmup_epochs`` epochs *and*
  ``warmup_steps`` optimiser steps have been trained with the anchors (the step count keeps
  the schedule safe when an epoch has one or a few steps, e.g. full-batch training).
  ``warmup_epochs = warmup_steps = 0`` also applies a Q-step before the first epoch: with
  ``α = 1`` this is the literal alternating algorithm, which collapses.
* ``"ema"``: after every training step, ``Q_c ← (1 − m) Q_c + m · mean{P_i : y_i = c}`` for
  the classes present in the batch (streaming, and batch-size-1 slide-level training).

The default schedule (``warmup_epochs = 2``, ``warmup_steps = 50``, ``damping = 0.1`` per
epoch of at least ``damping_steps = 50`` steps)
never collapsed in the digits prototype nor in full-batch training of a small table
(``tests/test_losses_schedule.py``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.options import CentroidMode, CentroidSchedule


class CentroidCollapseWarning(UserWarning):
    """The centroids or the predictions have degenerated (classes merged or swapped)."""


@dataclass
class CentroidReport:
    """Outcome of one Q-step or collapse check.

    Attributes:
        epoch: Epoch that just ended (``-1`` for the pass before training).
        applied: Whether the loss centroids changed.
        min_distance: Smallest total-variation distance between two loss centroids.
        anchor_min_distance: The same for the anchors (the scale of a healthy value).
        predicted_classes: Effective number of predicted classes ``exp(H(histogram))``
            over the pass, or ``None`` without a pass.
        true_classes: Effective number of true classes over the pass, or ``None``.
        swapped_classes: Classes whose loss centroid peaks on another class (class heads).
        collapsed: Whether any collapse criterion fired.
        reasons: Human-readable reasons, empty if not collapsed.
    """

    epoch: int
    applied: bool
    min_distance: float
    anchor_min_distance: float
    predicted_classes: float | None = None
    true_classes: float | None = None
    swapped_classes: list[int] = field(default_factory=list)
    collapsed: bool = False
    reasons: list[str] = field(default_factory=list)


def min_pairwise_tv(q: Tensor) -> float:
    """Smallest total-variation distance ``½‖q_a − q_b‖₁`` between two rows.

    Args:
        q: ``(C, K)`` distributions, ``C ≥ 2``.

    Returns:
        The distance (``inf`` if ``C < 2``).
    """
    if q.shape[0] < 2:
        return math.inf
    dist = 0.5 * torch.cdist(q.double(), q.double(), p=1)
    dist.fill_diagonal_(math.inf)
    return float(dist.min())


def effective_classes(counts: Tensor) -> float:
    """``exp`` of the entropy of a histogram: ``C`` if uniform, ``1`` if degenerate.

    Args:
        counts: ``(C,)`` non-negative counts.

    Returns:
        The effective number of classes (``0`` for an empty histogram).
    """
    total = float(counts.sum())
    if total <= 0:
        return 0.0
    freq = counts.double() / total
    return math.exp(float(-(freq * LF.safe_log(freq)).sum()))


class CentroidState(nn.Module):
    """Anchors, loss centroids and latest class means, moved by a :class:`CentroidSchedule`.

    The schedule's fields are also readable as attributes (``state.mode``,
    ``state.damping``, ...).

    Args:
        anchors: ``(C, K)`` anchor distributions (float32 copy is kept as a buffer).
        schedule: How and when the Q-step moves the centroids (module docstring), and the
            collapse thresholds.
        class_space: ``True`` if ``K = C`` and coordinate ``c`` is class ``c`` (enables the
            swapped-centroid check).
    """

    anchors: Tensor
    centroids: Tensor
    class_means: Tensor
    has_class_means: Tensor
    steps: Tensor
    steps_at_q_step: Tensor

    def __init__(
        self,
        anchors: Tensor,
        schedule: CentroidSchedule | None = None,
        *,
        class_space: bool = True,
    ) -> None:
        super().__init__()
        schedule = schedule or CentroidSchedule()
        self.schedule = schedule
        self.mode: CentroidMode = schedule.mode
        self.warmup_epochs = schedule.warmup_epochs
        self.warmup_steps = schedule.warmup_steps
        self.damping_steps = schedule.damping_steps
        self.damping = schedule.damping
        self.ema_momentum = schedule.ema_momentum
        self.collapse_distance_ratio = schedule.collapse_distance_ratio
        self.collapse_class_ratio = schedule.collapse_class_ratio
        self.class_space = class_space
        anchors = anchors.detach().float()
        self.register_buffer("anchors", anchors.clone())
        self.register_buffer("centroids", anchors.clone())
        self.register_buffer("class_means", anchors.clone())
        self.register_buffer("has_class_means", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_at_q_step", torch.zeros((), dtype=torch.long))
        self.reports: list[CentroidReport] = []

    @torch.no_grad()
    def reset_anchors(self, anchors: Tensor) -> None:
        """Start over from new ``(C, K)`` anchors (the width ``K`` may change).

        Args:
            anchors: ``(C, K)`` anchor distributions, ``C`` unchanged.

        Raises:
            ValueError: If the number of classes differs.
        """
        if anchors.shape[0] != self.anchors.shape[0]:
            raise ValueError(
                f"anchors must keep {self.anchors.shape[0]} classes, got {tuple(anchors.shape)}"
            )
        anchors = anchors.detach().float()
        self.anchors = anchors.clone()
        self.centroids = anchors.clone()
        self.class_means = anchors.clone()
        self.has_class_means.fill_(False)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.anchors.shape[0])

    @property
    def loss_centroids(self) -> Tensor:
        """``(C, K)`` centroids that feed the loss (constants: detached)."""
        # A copy, so that in-place Q-steps never touch a tensor saved for backward.
        return self.anchors if self.mode == "fixed" else self.centroids.detach().clone()

    @property
    def prediction_centroids(self) -> Tensor:
        """``(C, K)`` latest class means if a pass has run, else the loss centroids."""
        return self.class_means if bool(self.has_class_means) else self.loss_centroids

    @property
    def needs_initial_pass(self) -> bool:
        """Whether a Q-step is due before the first epoch (alternating, no warm-up)."""
        return self.mode == "alternating" and self.warmup_epochs == 0 and self.warmup_steps == 0

    @torch.no_grad()
    def count_step(self) -> None:
        """Count one training step (the loss calls it on every state-updating call)."""
        self.steps.add_(1)

    def effective_damping(self) -> float:
        """``α`` of the next Q-step, scaled down when few steps passed since the last one.

        ``α_eff = 1 − (1 − α)^f`` with ``f = min(1, steps since the last Q-step /
        damping_steps)``: an epoch of at least ``damping_steps`` optimiser steps gets the
        full ``α``; with one step per epoch (full-batch training) the centroids move at
        the rate of ``α`` per ``damping_steps`` steps instead of chasing every step.
        """
        if self.damping_steps == 0 or self.damping >= 1.0:
            return self.damping
        since = int(self.steps) - int(self.steps_at_q_step)
        fraction = min(1.0, max(since, 0) / self.damping_steps)
        return 1.0 - (1.0 - self.damping) ** fraction

    def warmed_up(self, epoch: int) -> bool:
        """Whether the alternating Q-step may move the centroids after ``epoch``."""
        return epoch + 1 >= self.warmup_epochs and int(self.steps) >= self.warmup_steps

    def centroids_moved(self) -> bool:
        """Whether a Q-step has moved the loss centroids off the anchors yet.

        Read from the buffers, so a resumed run answers as the uninterrupted one would.
        ``"fixed"`` centroids never move.
        """
        return self.mode != "fixed" and not torch.equal(self.centroids, self.anchors)

    @torch.no_grad()
    def ema_update(self, p: Tensor, y: Tensor) -> None:
        """EMA Q-step from one training batch (no-op unless ``mode == "ema"``).

        Args:
            p: ``(N, K)`` outputs (detached internally).
            y: ``(N,)`` labels.
        """
        if self.mode != "ema":
            return
        sums, counts = LF.class_sums(p.detach(), y, self.num_classes)
        present = counts > 0
        batch_means = LF.centroids_from_sums(sums, counts, self.centroids)
        updated = (1 - self.ema_momentum) * self.centroids + self.ema_momentum * batch_means
        self.centroids.copy_(torch.where(present.unsqueeze(1), updated, self.centroids))

    @torch.no_grad()
    def q_step(
        self,
        sums: Tensor,
        counts: Tensor,
        epoch: int,
        predicted_counts: Tensor | None = None,
    ) -> CentroidReport:
        """Closed-form Q-step from per-class sums over the (all-reduced) training outputs.

        Always refreshes :attr:`class_means`. In ``"alternating"`` mode it also moves the
        loss centroids, ``Q ← (1 − α) Q + α · means``, once :meth:`warmed_up`.
        Classes without samples keep their centroid. Then checks for a collapse.

        Args:
            sums: ``(C, K)`` per-class sums of ``P``.
            counts: ``(C,)`` per-class counts.
            epoch: Epoch that just ended, ``-1`` for the pass before training.
            predicted_counts: ``(C,)`` histogram of predicted classes over the same pass.
                Ignored (no prediction check) when the pass predicted with the anchors
                (outside class space before any class means existed), or when no Q-step
                had moved the centroids before the pass (warm start, fixed centroids).

        Returns:
            The report (also appended to :attr:`reports`; a
            :class:`CentroidCollapseWarning` at the run's first collapse).
        """
        device = self.centroids.device
        # Outside class space the pass predicted with the prediction centroids, which are
        # the anchors until a first pass has produced class means: no evidence of a merge.
        predicted_with_means = self.class_space or bool(self.has_class_means)
        # Predictions that cover few classes are evidence of a centroid merge only if the
        # Q-step had moved the centroids before the pass that made them: during the warm
        # start (and with fixed centroids) they are the network's own early guesses, and no
        # setting of the schedule is to blame.
        judge_predictions = predicted_with_means and self.centroids_moved()
        means = LF.centroids_from_sums(sums.to(device), counts.to(device), self.class_means)
        self.class_means.copy_(means)
        self.has_class_means.fill_(True)
        applied = self.mode == "alternating" and self.warmed_up(epoch)
        if applied:
            alpha = self.effective_damping()
            present = (counts.to(device) > 0).unsqueeze(1)
            moved = (1 - alpha) * self.centroids + alpha * means
            self.centroids.copy_(torch.where(present, moved, self.centroids))
        self.steps_at_q_step.copy_(self.steps)
        return self.check(
            epoch,
            applied=applied,
            counts=counts,
            predicted_counts=predicted_counts if judge_predictions else None,
        )

    def check(
        self,
        epoch: int,
        *,
        applied: bool = False,
        counts: Tensor | None = None,
        predicted_counts: Tensor | None = None,
    ) -> CentroidReport:
        """Collapse check of the current loss centroids and, if given, the predictions.

        Args:
            epoch: Epoch the check belongs to.
            applied: Whether the centroids just changed (recorded in the report).
            counts: ``(C,)`` true-class histogram of the pass.
            predicted_counts: ``(C,)`` predicted-class histogram of the pass.

        Returns:
            The report (appended to :attr:`reports`; warns at the run's first collapse).
        """
        q = self.loss_centroids
        report = CentroidReport(
            epoch=epoch,
            applied=applied,
            min_distance=min_pairwise_tv(q),
            anchor_min_distance=min_pairwise_tv(self.anchors),
        )
        if self.centroids_moved():  # centroids still on the anchors have merged nothing
            limit = self.collapse_distance_ratio * report.anchor_min_distance
            if report.min_distance < limit:
                dist = 0.5 * torch.cdist(q.double(), q.double(), p=1)
                dist.fill_diagonal_(math.inf)
                a, b = divmod(int(dist.argmin()), q.shape[0])
                report.reasons.append(
                    f"the centroids of classes {a} and {b} are {report.min_distance:.3g} apart "
                    "in total variation, "
                    f"below {limit:.3g} ({self.collapse_distance_ratio} × the anchors' distance)"
                )
            if self.class_space:
                peaks = q.argmax(dim=1).cpu()
                report.swapped_classes = [c for c in range(self.num_classes) if int(peaks[c]) != c]
                if report.swapped_classes:
                    report.reasons.append(
                        f"centroids of classes {report.swapped_classes} peak on another class"
                    )
        if counts is not None and predicted_counts is not None:
            report.true_classes = effective_classes(counts)
            report.predicted_classes = effective_classes(predicted_counts)
            if report.predicted_classes < self.collapse_class_ratio * report.true_classes:
                report.reasons.append(
                    f"predictions cover {report.predicted_classes:.2f} effective classes, "
                    f"the labels {report.true_classes:.2f}"
                )
        report.collapsed = bool(report.reasons)
        # One warning per run: the first collapse. Every check stays in the reports (and
        # in the logged ``centroids/collapsed`` metric), so later epochs are not lost.
        first = report.collapsed and not any(r.collapsed for r in self.reports)
        self.reports.append(report)
        if first:
            warnings.warn(
                f"NCMI centroid collapse after epoch {epoch}: "
                + "; ".join(report.reasons)
                + f". This run's schedule: mode={self.mode!r}, "
                f"warmup_epochs={self.warmup_epochs}, warmup_steps={self.warmup_steps}, "
                f"damping={self.damping}; a longer warm start, a smaller damping or "
                "mode='fixed' keeps the classes apart. Later collapses of this run are "
                "recorded in its centroid reports and the centroids/collapsed metric, "
                "not warned again.",
                CentroidCollapseWarning,
                stacklevel=2,
            )
        return report
