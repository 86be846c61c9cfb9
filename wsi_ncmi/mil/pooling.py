"""Mean- and max-pooling MIL baselines.

A bag of ``N`` patch features ``h_i ∈ R^in_dim`` is embedded patch-wise
(``e_i = ReLU(W h_i + b)``), pooled over the patches of each bag (element-wise mean or
max) and classified by a linear layer. They have no learned attention; the ``attention``
they return says how much each patch contributed to the pooled embedding:

* mean: ``1 / N`` for every valid patch;
* max: the fraction of the ``hidden_dim`` embedding coordinates whose maximum the patch
  attains (ties go to the first patch), so the row still sums to one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil.base import Aggregator, MILOutput, apply_class_head, build_class_head
from wsi_ncmi.mil.registry import register_aggregator


def check_bag(features: Tensor, mask: Tensor | None, in_dim: int) -> tuple[Tensor, Tensor | None]:
    """Bring a bag to ``(B, N, in_dim)`` and its mask to ``(B, N)`` bool.

    Args:
        features: ``(N, in_dim)`` or ``(B, N, in_dim)``.
        mask: ``None``, ``(N,)`` or ``(B, N)``; ``True`` marks real patches.
        in_dim: Expected feature dimension.

    Returns:
        ``(features (B, N, in_dim), mask (B, N) or None)``.

    Raises:
        ValueError: If the shapes do not match.
    """
    if features.ndim == 2:
        features = features.unsqueeze(0)
        mask = None if mask is None else mask.reshape(1, -1)
    if features.ndim != 3 or features.shape[-1] != in_dim or features.shape[1] < 1:
        raise ValueError(
            f"features must be (N, {in_dim}) or (B, N, {in_dim}) with N >= 1, "
            f"got {tuple(features.shape)}"
        )
    if mask is not None:
        if tuple(mask.shape) != tuple(features.shape[:2]):
            raise ValueError(
                f"mask must have shape {tuple(features.shape[:2])}, got {tuple(mask.shape)}"
            )
        mask = mask.bool()
    return features, mask


def check_dims(in_dim: int, num_classes: int, hidden_dim: int, dropout: float) -> None:
    """Validate the constructor arguments shared by the aggregators.

    Raises:
        ConfigError: If a value is out of range.
    """
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value!r}")
    if num_classes < 0:
        raise ConfigError(f"num_classes must be >= 0, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")


class _PoolingMIL(Aggregator):
    """Shared body of the pooling baselines (patch embedding + linear classifier)."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        class_head: bool = True,
        hidden_dim: int = 512,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        check_dims(in_dim, num_classes, hidden_dim, dropout)
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.classifier = build_class_head(hidden_dim, num_classes, class_head)

    def pool(self, embedded: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Pool ``(B, N, hidden_dim)`` into ``((B, hidden_dim), attention (B, N))``."""
        raise NotImplementedError

    def forward(self, features: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Aggregate bags of patch features.

        Args:
            features: ``(N, in_dim)`` or ``(B, N, in_dim)``.
            mask: Optional ``(B, N)`` bool, ``True`` for real patches.

        Returns:
            Logits ``(B, C)``, attention ``(B, N)`` and embedding ``(B, hidden_dim)``.
        """
        features, mask = check_bag(features, mask, self.in_dim)
        embedded = self.patch_embed(features)  # (B, N, hidden_dim)
        embedding, attention = self.pool(embedded, mask)
        return MILOutput(apply_class_head(self.classifier, embedding), attention, embedding)


@register_aggregator("mean")
class MeanPoolingMIL(_PoolingMIL):
    """Mean of the embedded patches, then a linear classifier.

    Args:
        in_dim: Patch feature dimension.
        num_classes: ``C``.
        class_head: Build the linear classifier (``False``: embeddings only).
        hidden_dim: Width of the patch and slide embeddings.
        dropout: Dropout after the patch embedding.
    """

    def pool(self, embedded: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Masked mean over patches; uniform attention."""
        weights = torch.ones(embedded.shape[:2], dtype=embedded.dtype, device=embedded.device)
        if mask is not None:
            weights = weights * mask.to(embedded.dtype)
        attention = weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        return torch.einsum("bn,bnd->bd", attention, embedded), attention


@register_aggregator("max")
class MaxPoolingMIL(_PoolingMIL):
    """Element-wise maximum of the embedded patches, then a linear classifier.

    Args:
        in_dim: Patch feature dimension.
        num_classes: ``C``.
        class_head: Build the linear classifier (``False``: embeddings only).
        hidden_dim: Width of the patch and slide embeddings.
        dropout: Dropout after the patch embedding.
    """

    def pool(self, embedded: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Masked max over patches; attention = share of coordinates each patch wins."""
        if mask is not None:
            embedded = embedded.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        embedding, winner = embedded.max(dim=1)  # (B, hidden_dim) each
        with torch.no_grad():
            attention = torch.zeros(
                embedded.shape[:2], dtype=embedding.dtype, device=embedding.device
            )
            attention.scatter_add_(1, winner, torch.full_like(embedding, 1.0 / embedding.shape[1]))
        return embedding, attention
