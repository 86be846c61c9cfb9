"""CLAM-SB: single-branch clustering-constrained attention MIL.

Written from Lu et al., "Data-efficient and weakly supervised computational pathology on
whole-slide images" (Nature Biomedical Engineering 2021). The slide branch is gated
attention pooling (as in ABMIL) followed by a linear classifier. The instance-level
clustering constraint adds one binary instance classifier per class, trained on pseudo
labels: for the true class ``y`` the ``k`` most attended patches are positives and the
``k`` least attended are negatives; with ``subtyping=True`` (mutually exclusive classes)
the ``k`` most attended patches are also negatives for every other class's classifier.

The trainer adds :meth:`ClamSB.auxiliary_loss` (already weighted by
``instance_loss_weight``) to the injected slide-level loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil.abmil import GatedAttentionMIL
from wsi_ncmi.mil.base import MILOutput, apply_class_head
from wsi_ncmi.mil.registry import register_aggregator


@dataclass
class ClamOutput(MILOutput):
    """:class:`MILOutput` plus the embedded patches the instance loss needs.

    Attributes:
        patch_embedding: ``(B, N, hidden_dim)`` embedded patches.
    """

    patch_embedding: Tensor | None = None


@register_aggregator("clam_sb")
class ClamSB(GatedAttentionMIL):
    """Single-branch CLAM: gated-attention MIL plus the instance-clustering auxiliary loss.

    Args:
        in_dim: Patch feature dimension.
        num_classes: ``C``: the slide classes of the instance branch (``0``: no instance
            loss).
        class_head: Build the slide classifier (``False`` for feature-head losses; the
            instance branch still has one classifier per class).
        hidden_dim: Width of the patch and slide embeddings.
        attention_dim: Width of the gated attention branches.
        dropout: Dropout after the patch embedding and in the attention branches.
        top_k: Pseudo-labelled patches per side (reduced to ``N // 2`` for small bags).
        instance_loss_weight: Weight of the instance loss in :meth:`auxiliary_loss`.
        subtyping: Also push the top-``k`` patches negative for the other classes.
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
        top_k: int = 8,
        instance_loss_weight: float = 0.3,
        subtyping: bool = False,
    ) -> None:
        super().__init__(
            in_dim,
            num_classes,
            class_head=class_head,
            hidden_dim=hidden_dim,
            attention_dim=attention_dim,
            dropout=dropout,
        )
        if top_k < 1 or instance_loss_weight < 0:
            raise ConfigError(
                "top_k must be >= 1 and instance_loss_weight >= 0, "
                f"got {top_k!r} and {instance_loss_weight!r}"
            )
        self.num_classes = num_classes
        self.top_k = top_k
        self.instance_loss_weight = instance_loss_weight
        self.subtyping = subtyping
        self.instance_classifiers = nn.ModuleList(
            nn.Linear(hidden_dim, 2) for _ in range(num_classes)
        )

    def forward(self, features: Tensor, mask: Tensor | None = None) -> ClamOutput:
        """Aggregate bags of patch features.

        Args:
            features: ``(N, in_dim)`` or ``(B, N, in_dim)``.
            mask: Optional ``(B, N)`` bool, ``True`` for real patches.

        Returns:
            Logits ``(B, C)``, attention ``(B, N)``, embedding ``(B, hidden_dim)`` and the
            patch embedding ``(B, N, hidden_dim)``.
        """
        embedded, attention, embedding = self.pool(features, mask)
        logits = apply_class_head(self.classifier, embedding)
        return ClamOutput(logits, attention, embedding, embedded)

    def auxiliary_loss(self, output: MILOutput, targets: Tensor) -> Tensor:
        """Weighted instance-clustering loss, averaged over the bags.

        Args:
            output: What :meth:`forward` returned for these bags.
            targets: ``(B,)`` slide labels.

        Returns:
            Scalar loss (zero for ``num_classes = 0`` or single-patch bags).
        """
        if not isinstance(output, ClamOutput) or output.patch_embedding is None:
            raise TypeError("auxiliary_loss needs the ClamOutput of ClamSB.forward")
        zero = output.attention.new_zeros(())
        if not self.num_classes or not self.instance_loss_weight:
            return zero
        losses: list[Tensor] = []
        for attention, patches, target in zip(
            output.attention, output.patch_embedding, targets, strict=True
        ):
            valid = torch.isfinite(attention) & (attention > 0)
            k = min(self.top_k, int(valid.sum()) // 2)
            if k < 1:
                continue
            ranked = torch.argsort(attention.masked_fill(~valid, -1.0), descending=True)
            top, bottom = ranked[:k], ranked[int(valid.sum()) - k : int(valid.sum())]
            for cls, head in enumerate(self.instance_classifiers):
                if cls == int(target):
                    inputs = patches[torch.cat([top, bottom])]
                    labels = torch.cat([torch.ones_like(top), torch.zeros_like(bottom)])
                elif self.subtyping:
                    inputs, labels = patches[top], torch.zeros_like(top)
                else:
                    continue
                losses.append(F.cross_entropy(head(inputs), labels))
        if not losses:
            return zero
        return self.instance_loss_weight * torch.stack(losses).mean()
