"""The aggregator contract: what every MIL model returns and what it exposes.

An aggregator maps a bag of ``N`` patch features ``(N, in_dim)`` (or ``B`` padded bags
``(B, N, in_dim)`` with a ``(B, N)`` mask) to a :class:`MILOutput`. It subclasses
:class:`Aggregator`, which names the slide-embedding width (:attr:`Aggregator.embedding_dim`,
what a feature-head loss is sized to) and an optional auxiliary training loss.

Every aggregator takes the same two leading arguments, ``in_dim`` and ``num_classes``, and
the keyword ``class_head``: whether it builds a linear class head. The class count is known
apart from the head, so an aggregator whose own parts depend on the classes (CLAM-SB's
instance classifiers) keeps them when a feature-head loss asks for no class head.

The base class creates no parameters, so a subclass initialises exactly as a plain
``nn.Module`` would (same parameter order, same random draws).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError


@dataclass
class MILOutput:
    """What an aggregator returns for ``B`` bags of ``N`` patches.

    Attributes:
        logits: ``(B, C)`` class logits (``(B, 0)`` when built without a class head).
        attention: ``(B, N)`` attention weights, each row summing to one over the valid
            patches.
        embedding: ``(B, embedding_dim)`` slide embeddings (what a feature-head loss takes).
    """

    logits: Tensor
    attention: Tensor
    embedding: Tensor


class Aggregator(nn.Module):
    """Base class of the registered MIL aggregators.

    Subclasses set :attr:`in_dim` and :attr:`hidden_dim` in ``__init__`` and implement
    :meth:`forward`. By default the slide embedding is ``hidden_dim`` wide; a subclass
    whose embedding has another width overrides :attr:`embedding_dim` and
    :meth:`embedding_dim_for`.

    Attributes:
        in_dim: Patch feature dimension ``D``.
        hidden_dim: Width of the patch embedding.
    """

    in_dim: int
    hidden_dim: int

    @property
    def embedding_dim(self) -> int:
        """Width of :attr:`MILOutput.embedding` (the slide embedding)."""
        return self.hidden_dim

    @classmethod
    def embedding_dim_for(cls, **kwargs: Any) -> int:
        """The :attr:`embedding_dim` an instance built with ``kwargs`` would have.

        Lets a caller size a loss before building the model, without building it (and
        so without drawing random numbers).

        Args:
            **kwargs: Constructor arguments (as for ``cls(**kwargs)``).

        Returns:
            The slide-embedding width.

        Raises:
            ConfigError: If ``kwargs`` do not fit the constructor.
        """
        try:
            bound = inspect.signature(cls).bind(**kwargs)
        except TypeError as err:
            raise ConfigError(f"invalid arguments for {cls.__name__}: {err}") from err
        bound.apply_defaults()
        return int(bound.arguments["hidden_dim"])

    def forward(self, features: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Aggregate bags of patch features.

        Args:
            features: ``(N, in_dim)`` or ``(B, N, in_dim)``.
            mask: Optional ``(B, N)`` (or ``(N,)``) bool, ``True`` for real patches.

        Returns:
            Logits ``(B, C)``, attention ``(B, N)`` and embedding ``(B, embedding_dim)``.
        """
        raise NotImplementedError

    def auxiliary_loss(self, output: MILOutput, targets: Tensor) -> Tensor | None:
        """An extra training loss the trainer adds to the injected one (default: none).

        Args:
            output: What :meth:`forward` returned for these bags.
            targets: ``(B,)`` slide labels.

        Returns:
            A scalar loss, or ``None`` when the aggregator has none.
        """
        return None


def build_class_head(width: int, num_classes: int, class_head: bool) -> nn.Linear | None:
    """The linear class head ``width → num_classes``, or ``None`` when none is wanted.

    Args:
        width: Width of the slide embedding.
        num_classes: ``C``.
        class_head: Whether to build one (``False`` for feature-head losses). No head is
            built for ``num_classes = 0`` either.

    Returns:
        The head, or ``None``.
    """
    return nn.Linear(width, num_classes) if class_head and num_classes > 0 else None


def apply_class_head(head: nn.Module | None, embedding: Tensor) -> Tensor:
    """``(B, C)`` logits of a class head, or ``(B, 0)`` without one.

    Args:
        head: What :func:`build_class_head` returned.
        embedding: ``(B, width)`` slide embeddings.

    Returns:
        The logits.
    """
    if head is None:
        return embedding.new_zeros(embedding.shape[0], 0)
    logits: Tensor = head(embedding)
    return logits


__all__ = ["Aggregator", "MILOutput", "apply_class_head", "build_class_head"]
