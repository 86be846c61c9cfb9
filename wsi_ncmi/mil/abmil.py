"""Gated-attention MIL (Ilse, Tomczak and Welling, ICML 2018).

A bag of ``N`` patch features ``h_i ∈ R^in_dim`` is embedded patch-wise, scored by the
gated attention ``w · (tanh(V e_i) ⊙ sigmoid(U e_i))``, the scores are softmax-normalised
over the patches of each bag, and the slide embedding ``Σ_i a_i e_i`` is classified.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil.base import Aggregator, MILOutput, apply_class_head, build_class_head
from wsi_ncmi.mil.registry import register_aggregator


@register_aggregator("abmil")
class GatedAttentionMIL(Aggregator):
    """Gated-attention MIL pooling with a linear classifier.

    Args:
        in_dim: Patch feature dimension.
        num_classes: Number of classes ``C``.
        class_head: Build the linear classifier (``False``: embeddings only, ``(B, 0)``
            logits, for feature-head losses).
        hidden_dim: Width of the patch embedding and of the slide embedding.
        attention_dim: Width of the gated attention branches.
        dropout: Dropout after the patch embedding and in the attention branches.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        class_head: bool = True,
        hidden_dim: int = 512,
        attention_dim: int = 256,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value!r}")
        if attention_dim < 1 or num_classes < 0:
            raise ConfigError(
                "attention_dim must be >= 1 and num_classes >= 0, "
                f"got {attention_dim!r} and {num_classes!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.attention_tanh = nn.Sequential(
            nn.Linear(hidden_dim, attention_dim), nn.Tanh(), nn.Dropout(dropout)
        )
        self.attention_gate = nn.Sequential(
            nn.Linear(hidden_dim, attention_dim), nn.Sigmoid(), nn.Dropout(dropout)
        )
        self.attention_score = nn.Linear(attention_dim, 1)
        self.classifier = build_class_head(hidden_dim, num_classes, class_head)

    def pool(self, features: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Embed patches and pool them with gated attention.

        Args:
            features: ``(N, in_dim)`` for one bag or ``(B, N, in_dim)`` for ``B`` bags.
            mask: Optional ``(B, N)`` (or ``(N,)``) boolean, ``True`` for real patches and
                ``False`` for padding. Every bag needs at least one real patch.

        Returns:
            Patch embeddings ``(B, N, hidden_dim)``, attention ``(B, N)`` and slide
            embeddings ``(B, hidden_dim)``.

        Raises:
            ValueError: If the shapes do not match.
        """
        if features.ndim == 2:
            features = features.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, -1)
        if features.ndim != 3 or features.shape[-1] != self.in_dim:
            raise ValueError(
                f"features must be (N, {self.in_dim}) or (B, N, {self.in_dim}), "
                f"got {tuple(features.shape)}"
            )
        embedded = self.patch_embed(features)  # (B, N, hidden_dim)
        gated = self.attention_tanh(embedded) * self.attention_gate(embedded)
        attention_logits = self.attention_score(gated).squeeze(-1)  # (B, N)
        if mask is not None:
            if mask.shape != attention_logits.shape:
                raise ValueError(
                    f"mask must have shape {tuple(attention_logits.shape)}, got {tuple(mask.shape)}"
                )
            attention_logits = attention_logits.masked_fill(~mask.bool(), float("-inf"))
        attention = torch.softmax(attention_logits, dim=-1)
        embedding = torch.einsum("bn,bnd->bd", attention, embedded)
        return embedded, attention, embedding

    def forward(self, features: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Aggregate bags of patch features (see :meth:`pool` for shapes).

        Returns:
            Logits ``(B, C)``, attention ``(B, N)`` and embedding ``(B, hidden_dim)``.
        """
        _, attention, embedding = self.pool(features, mask)
        return MILOutput(apply_class_head(self.classifier, embedding), attention, embedding)


__all__ = ["GatedAttentionMIL", "MILOutput"]
