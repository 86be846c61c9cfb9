"""The contract every registered loss follows (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses.centroids import CentroidReport, CentroidState


def check_num_classes(num_classes: int | None, *, required: bool = False) -> int | None:
    """Validate a loss's ``num_classes`` argument.

    Args:
        num_classes: ``C ≥ 2``, or ``None`` where the loss can infer it from its inputs.
        required: Whether ``None`` is refused.

    Returns:
        ``num_classes`` unchanged.

    Raises:
        ConfigError: If it is not an int ``>= 2`` (or is missing when required).
    """
    if num_classes is None and not required:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


@dataclass
class LossOutput:
    """What a loss returns.

    Attributes:
        loss: Scalar to minimise, attached to the graph.
        terms: Named scalar terms for logging (detached), e.g. ``{"cmi", "gamma", "ncmi"}``.
    """

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class ClassificationLoss(nn.Module):
    """Base class of the registered losses.

    Subclasses implement :meth:`forward`. The defaults describe a loss on class logits with
    softmax outputs and argmax prediction (cross-entropy and its relatives).

    Attributes:
        needs_class_head: ``True`` if the model must end in a linear layer with
            :meth:`output_dim` outputs; ``False`` if the loss takes the raw backbone
            features (NCMI's feature head).
        needs_epoch_pass: ``True`` if a Q-step pass over the training set at each epoch end
            is needed (see :class:`wsi_ncmi.losses.callbacks.CentroidUpdate`).
    """

    needs_class_head: bool = True
    needs_epoch_pass: bool = False
    num_classes: int | None = None

    def updates_state(self, outputs: Tensor) -> bool:
        """Whether this call is a training step that may move the loss's running state.

        Running state (EMA centroids, the feature centre, step counters) moves only when
        all three hold: the loss is in training mode (the default; a parent module's
        ``train()``/``eval()`` switches it), gradients are enabled, and ``outputs`` require
        grad. A validation pass under ``torch.no_grad()`` therefore never moves it, even
        if ``loss.eval()`` was forgotten.

        Args:
            outputs: What the loss was called with.
        """
        return self.training and torch.is_grad_enabled() and outputs.requires_grad

    def check_width(self, outputs: Tensor) -> None:
        """Refuse ``(N, K)`` class logits whose ``K`` differs from :attr:`num_classes`.

        Raises:
            ValueError: On a mismatch (only when ``num_classes`` was given).
        """
        if self.needs_class_head and self.num_classes is not None:
            if outputs.ndim != 2 or outputs.shape[1] != self.num_classes:
                raise ValueError(
                    f"{type(self).__name__} was built for {self.num_classes} classes and "
                    f"takes (N, {self.num_classes}) logits, got {tuple(outputs.shape)}"
                )

    @property
    def centroid_state(self) -> CentroidState | None:
        """The centroid state of a loss that keeps centroids (submodule ``state``)."""
        module = self._modules.get("state")
        return module if isinstance(module, CentroidState) else None

    def forward(self, outputs: Tensor, targets: Tensor) -> LossOutput:  # pragma: no cover
        """Compute the loss.

        Args:
            outputs: Class logits ``(N, C)``, or features ``(N, m)`` if
                ``needs_class_head`` is ``False``.
            targets: Integer labels ``(N,)``.

        Returns:
            The loss and its named terms.
        """
        raise NotImplementedError

    def pop_train_gamma(self) -> float | None:
        """Mean training separation Γ since the last call, for losses that track it.

        Read once per epoch by :class:`~wsi_ncmi.losses.callbacks.EscapeMonitor`; the
        default (a loss without Γ) is ``None``.
        """
        return None

    def output_dim(self, num_classes: int) -> int | None:
        """Width of the linear head the model needs, or ``None`` for raw features.

        Args:
            num_classes: ``C``.

        Returns:
            ``num_classes`` for class-logit losses, ``None`` when no head is wanted.
        """
        return num_classes if self.needs_class_head else None

    def probabilities(self, outputs: Tensor) -> Tensor:
        """The output distribution ``P`` the loss works with (softmax by default).

        Args:
            outputs: ``(N, C)`` logits.

        Returns:
            ``(N, K)`` probabilities, float32 or wider.
        """
        return torch.softmax(outputs.float() if outputs.dtype != torch.float64 else outputs, -1)

    def predict(self, outputs: Tensor) -> Tensor:
        """Class predictions.

        Args:
            outputs: ``(N, C)`` logits.

        Returns:
            ``(N,)`` int64 class indices (argmax).
        """
        return outputs.argmax(dim=-1)

    def q_step(
        self,
        sums: Tensor,
        counts: Tensor,
        epoch: int,
        predicted_counts: Tensor | None = None,
    ) -> CentroidReport:
        """Epoch-end Q-step of a loss that keeps centroids; see ``CentroidState.q_step``.

        Args:
            sums: ``(C, K)`` per-class sums of :meth:`probabilities` over the training set
                (all-reduced across processes).
            counts: ``(C,)`` per-class counts.
            epoch: Epoch that just ended (``-1`` for the pass before training).
            predicted_counts: ``(C,)`` predicted-class histogram of the same pass.

        Returns:
            The centroid report.

        Raises:
            TypeError: If this loss keeps no centroids.
        """
        state = self.centroid_state
        if state is None:
            raise TypeError(f"{type(self).__name__} keeps no centroids")
        return state.q_step(sums, counts, epoch, predicted_counts)


@runtime_checkable
class LossHost(Protocol):
    """What the Lightning callbacks of :mod:`wsi_ncmi.losses.callbacks` need from a module.

    :class:`~wsi_ncmi.train.module.MILClassifier` and
    :class:`~wsi_ncmi.images.module.LossClassifier` are loss hosts: the loss is the
    attribute ``criterion`` and :meth:`loss_inputs` turns a batch into what it takes.
    """

    criterion: ClassificationLoss

    def loss_inputs(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(outputs the loss takes, targets)`` of one batch."""
        ...
