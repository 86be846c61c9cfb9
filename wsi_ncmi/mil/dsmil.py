"""DSMIL: dual-stream MIL with a max-instance stream and a critical-instance attention stream.

Written from Li, Li and Eliceiri, "Dual-stream multiple instance learning network for whole
slide image classification with self-supervised contrastive learning" (CVPR 2021):

* instance stream: a linear instance classifier scores every patch, ``s_i = W_s e_i``
  (``(B, N, C)``); its max over the patches, ``max_i s_ic``, is the instance-stream logit
  of class ``c``, and ``m_c = argmax_i s_ic`` is class ``c``'s critical instance;
* bag stream: queries ``q_i = W_q e_i`` and values ``v_i = W_v e_i``; the attention of patch
  ``i`` for class ``c`` is ``softmax_i(⟨q_i, q_{m_c}⟩ / √d)``, the class-``c`` bag
  embedding is ``b_c = Σ_i a_ic v_i``, and a 1-D convolution across the ``C`` class
  embeddings (kernel = the whole ``C × d`` block) gives the bag-stream logits.

The returned logits are the average of the two streams (the paper's prediction), so any
injected loss trains both. Without a class head (``class_head=False``, a feature-head loss)
one critical-instance query is used and only the embedding is meaningful. ``embedding`` is
the mean of the class embeddings ``b_c``; ``attention`` is the mean over classes of
``a_ic``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wsi_ncmi.mil.base import Aggregator, MILOutput
from wsi_ncmi.mil.pooling import check_bag, check_dims
from wsi_ncmi.mil.registry import register_aggregator


@register_aggregator("dsmil")
class DSMIL(Aggregator):
    """Dual-stream MIL.

    Args:
        in_dim: Patch feature dimension.
        num_classes: ``C``.
        class_head: Build both class streams (``False``: embeddings only, from one
            critical-instance stream).
        hidden_dim: Width of the patch embedding and of the values ``v_i``.
        query_dim: Width of the queries ``q_i``.
        dropout: Dropout after the patch embedding and on the values.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        class_head: bool = True,
        hidden_dim: int = 512,
        query_dim: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        check_dims(in_dim, num_classes, hidden_dim, dropout)
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.num_classes = num_classes
        heads = num_classes if class_head else 0
        streams = max(heads, 1)
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.instance_classifier = nn.Linear(hidden_dim, streams)
        self.query = nn.Sequential(nn.Linear(hidden_dim, query_dim), nn.Tanh())
        self.value = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_dim, hidden_dim))
        self.bag_classifier = nn.Conv1d(streams, heads, kernel_size=hidden_dim) if heads else None

    def forward(self, features: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Aggregate bags of patch features.

        Args:
            features: ``(N, in_dim)`` or ``(B, N, in_dim)``.
            mask: Optional ``(B, N)`` bool, ``True`` for real patches.

        Returns:
            Logits ``(B, C)`` (mean of the two streams), attention ``(B, N)`` and
            embedding ``(B, hidden_dim)``.
        """
        features, mask = check_bag(features, mask, self.in_dim)
        embedded = self.patch_embed(features)  # (B, N, hidden_dim)
        instance_scores = self.instance_classifier(embedded)  # (B, N, S)
        if mask is not None:
            instance_scores = instance_scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        instance_logits, critical = instance_scores.max(dim=1)  # (B, S) each
        queries = self.query(embedded)  # (B, N, query_dim)
        critical_queries = torch.gather(
            queries, 1, critical.unsqueeze(-1).expand(-1, -1, queries.shape[-1])
        )  # (B, S, query_dim)
        scores = torch.einsum("bnq,bsq->bns", queries, critical_queries) / queries.shape[-1] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        class_attention = torch.softmax(scores, dim=1)  # (B, N, S)
        class_embeddings = torch.einsum("bns,bnd->bsd", class_attention, self.value(embedded))
        embedding = class_embeddings.mean(dim=1)  # (B, hidden_dim)
        attention = class_attention.mean(dim=-1)  # (B, N)
        if self.bag_classifier is None:
            return MILOutput(embedding.new_zeros(embedding.shape[0], 0), attention, embedding)
        bag_logits = self.bag_classifier(class_embeddings).squeeze(-1)  # (B, C)
        return MILOutput(0.5 * (bag_logits + instance_logits), attention, embedding)
