"""TransMIL-style transformer MIL with Nyström attention (Shao et al., NeurIPS 2021).

Written from the papers (TransMIL; Nyströmformer, Xiong et al., AAAI 2021):

1. patches are embedded, ``e_i = ReLU(W h_i)`` (``(B, N, hidden_dim)``);
2. the sequence is "squared": padded to ``S = ⌈√N⌉²`` tokens by repeating its first
   patches, and a learned class token is prepended;
3. transformer layer (pre-norm, Nyström self-attention), then the PPEG position encoding
   (the ``S`` patch tokens as an ``√S × √S`` image: identity + depth-wise 7×7, 5×5 and 3×3
   convolutions), then a second transformer layer;
4. the class token, layer-normed, is the slide embedding and is classified linearly.

Nyström attention approximates ``softmax(QKᵀ/√d) V`` with ``m`` landmarks (segment means of
the queries and keys): ``softmax(Q K̃ᵀ) · pinv(softmax(Q̃ K̃ᵀ)) · softmax(Q̃ Kᵀ) V``, where
the Moore–Penrose pseudo-inverse is approximated by Newton–Schulz iterations. Memory is
``O(N · m)`` per head instead of ``O(N²)``, so 10⁵-patch bags fit. Sequences of at most
``m`` tokens use exact attention.

The returned attention is exact: the class token's softmax attention over the patch
tokens in the last layer, averaged over heads, with the weight of padding copies added
back to the patch they copy (rows sum to one over the ``N`` patches).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil.base import Aggregator, MILOutput, apply_class_head, build_class_head
from wsi_ncmi.mil.pooling import check_bag, check_dims
from wsi_ncmi.mil.registry import register_aggregator


def newton_schulz_pinv(matrix: Tensor, iterations: int = 6) -> Tensor:
    """Approximate Moore–Penrose inverse of a batch of square matrices.

    ``Z₀ = Aᵀ / (max_j Σ_i |a_ij| · max_i Σ_j |a_ij|)``, then
    ``Z ← ¼ Z (13 I − A Z (15 I − A Z (7 I − A Z)))`` (Razavi et al. 2014).

    Args:
        matrix: ``(..., m, m)``.
        iterations: Number of updates.

    Returns:
        ``(..., m, m)`` approximate pseudo-inverse.
    """
    a = matrix
    abs_a = a.abs()
    scale = abs_a.sum(dim=-2).amax(dim=-1) * abs_a.sum(dim=-1).amax(dim=-1)
    z = a.transpose(-1, -2) / scale[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def segment_means(x: Tensor, num_segments: int) -> Tensor:
    """Means of ``num_segments`` contiguous, near-equal segments along dim ``-2``.

    Args:
        x: ``(..., n, d)``.
        num_segments: ``m ≤ n``.

    Returns:
        ``(..., m, d)``.
    """
    n = x.shape[-2]
    segment = torch.arange(n, device=x.device) * num_segments // n  # (n,)
    counts = torch.bincount(segment, minlength=num_segments).to(x.dtype)
    sums = torch.zeros(*x.shape[:-2], num_segments, x.shape[-1], dtype=x.dtype, device=x.device)
    sums.index_add_(x.ndim - 2, segment, x)
    return sums / counts[:, None]


class NystromAttention(nn.Module):
    """Multi-head self-attention with the Nyström approximation.

    Args:
        dim: Token width.
        num_heads: Heads (``dim`` must be divisible by it).
        num_landmarks: ``m``; sequences of ``n ≤ m`` tokens get exact attention.
        pinv_iterations: Newton–Schulz iterations.
        dropout: Dropout on the output projection.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        num_landmarks: int = 256,
        pinv_iterations: int = 6,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"hidden_dim {dim} must be divisible by num_heads {num_heads}")
        if num_landmarks < 1 or pinv_iterations < 1:
            raise ConfigError(
                "num_landmarks and pinv_iterations must be >= 1, "
                f"got {num_landmarks!r} and {pinv_iterations!r}"
            )
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def _heads(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = tokens.shape
        qkv = self.qkv(tokens).view(b, n, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, n, d_head)
        return q * self.head_dim**-0.5, k, v

    def forward(self, tokens: Tensor) -> Tensor:
        """Attend.

        Args:
            tokens: ``(B, n, dim)``.

        Returns:
            ``(B, n, dim)``.
        """
        b, n, dim = tokens.shape
        q, k, v = self._heads(tokens)
        if n <= self.num_landmarks:
            mixed = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        else:
            q_land = segment_means(q, self.num_landmarks)  # (B, H, m, d_head)
            k_land = segment_means(k, self.num_landmarks)
            kernel_1 = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)  # (B, H, n, m)
            kernel_2 = torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1)  # (B, H, m, m)
            kernel_3 = torch.softmax(q_land @ k.transpose(-1, -2), dim=-1)  # (B, H, m, n)
            mixed = kernel_1 @ (newton_schulz_pinv(kernel_2, self.pinv_iterations) @ (kernel_3 @ v))
        return self.out(mixed.transpose(1, 2).reshape(b, n, dim))

    def first_token_attention(self, tokens: Tensor) -> Tensor:
        """Exact softmax attention of token 0 (the class token) over tokens ``1..n-1``.

        Args:
            tokens: ``(B, n, dim)`` (already normed, as fed to :meth:`forward`).

        Returns:
            ``(B, n - 1)`` attention averaged over heads.
        """
        q, k, _ = self._heads(tokens)
        scores = (q[:, :, :1] @ k.transpose(-1, -2)).squeeze(2)  # (B, H, n)
        return torch.softmax(scores[..., 1:], dim=-1).mean(dim=1)


class TransformerLayer(nn.Module):
    """Pre-norm residual layer ``x + Attention(LayerNorm(x))``."""

    def __init__(self, dim: int, **attention_kwargs: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = NystromAttention(dim, **attention_kwargs)  # type: ignore[arg-type]

    def forward(self, tokens: Tensor) -> Tensor:
        """``(B, n, dim) -> (B, n, dim)``."""
        return tokens + self.attention(self.norm(tokens))


class PPEG(nn.Module):
    """Pyramid position encoding: identity + depth-wise 7×7, 5×5, 3×3 convolutions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(dim, dim, size, padding=size // 2, groups=dim) for size in (7, 5, 3)
        )

    def forward(self, tokens: Tensor, side: int) -> Tensor:
        """Encode ``(B, 1 + side², dim)`` tokens (class token first, left unchanged)."""
        cls_token, patches = tokens[:, :1], tokens[:, 1:]
        b, _, dim = patches.shape
        image = patches.transpose(1, 2).reshape(b, dim, side, side)
        image = image + sum(conv(image) for conv in self.convs)
        return torch.cat([cls_token, image.flatten(2).transpose(1, 2)], dim=1)


@register_aggregator("transmil")
class TransMIL(Aggregator):
    """Transformer MIL (two Nyström layers + PPEG), class-token readout.

    Args:
        in_dim: Patch feature dimension.
        num_classes: ``C``.
        class_head: Build the linear classifier (``False``: embeddings only).
        hidden_dim: Token width (divisible by ``num_heads``).
        num_heads: Attention heads.
        num_landmarks: Nyström landmarks ``m``.
        pinv_iterations: Newton–Schulz iterations of the pseudo-inverse.
        dropout: Dropout after the patch embedding and the attention projections.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        class_head: bool = True,
        hidden_dim: int = 512,
        num_heads: int = 8,
        num_landmarks: int = 256,
        pinv_iterations: int = 6,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_dims(in_dim, num_classes, hidden_dim, dropout)
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.patch_embed = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02)
        kwargs = {
            "num_heads": num_heads,
            "num_landmarks": num_landmarks,
            "pinv_iterations": pinv_iterations,
            "dropout": dropout,
        }
        self.layer_1 = TransformerLayer(hidden_dim, **kwargs)
        self.position = PPEG(hidden_dim)
        self.layer_2 = TransformerLayer(hidden_dim, **kwargs)
        self.norm = nn.LayerNorm(hidden_dim)
        self.classifier = build_class_head(hidden_dim, num_classes, class_head)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> MILOutput:
        """Aggregate bags of patch features.

        Args:
            features: ``(N, in_dim)`` or ``(B, N, in_dim)``.
            mask: Optional ``(B, N)`` bool, ``True`` for real patches. The square token
                grid depends on each bag's length, so a padded batch is run bag by bag
                (exactly as if each bag were passed alone).

        Returns:
            Logits ``(B, C)``, attention ``(B, N)`` (zero on padding) and embedding
            ``(B, hidden_dim)``.

        Raises:
            ValueError: If the shapes do not match or a bag has no real patch.
        """
        features, mask = check_bag(features, mask, self.in_dim)
        if mask is None or bool(mask.all()):
            return self._forward_equal(features)
        outputs = []
        for bag, valid in zip(features, mask, strict=True):
            if not bool(valid.any()):
                raise ValueError("every bag of a padded batch needs at least one real patch")
            outputs.append(self._forward_equal(bag[valid].unsqueeze(0)))
        attention = features.new_zeros(mask.shape)
        for b, (out, valid) in enumerate(zip(outputs, mask, strict=True)):
            attention[b, valid] = out.attention[0].to(attention.dtype)
        return MILOutput(
            torch.cat([o.logits for o in outputs]),
            attention,
            torch.cat([o.embedding for o in outputs]),
        )

    def _forward_equal(self, features: Tensor) -> MILOutput:
        """Forward of ``(B, N, in_dim)`` bags that all have ``N`` real patches."""
        embedded = self.patch_embed(features)  # (B, N, hidden_dim)
        b, n, _ = embedded.shape
        side = math.isqrt(n - 1) + 1 if n > 1 else 1
        source = torch.arange(side * side, device=embedded.device) % n  # padding repeats
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), embedded[:, source]], dim=1)
        tokens = self.layer_1(tokens)
        tokens = self.position(tokens, side)
        normed = self.layer_2.norm(tokens)
        square_attention = self.layer_2.attention.first_token_attention(normed.detach())
        tokens = tokens + self.layer_2.attention(normed)
        embedding = self.norm(tokens[:, 0])
        attention = torch.zeros(b, n, dtype=square_attention.dtype, device=embedded.device)
        attention.index_add_(1, source, square_attention)
        return MILOutput(apply_class_head(self.classifier, embedding), attention, embedding)


__all__ = ["NystromAttention", "TransMIL", "newton_schulz_pinv", "segment_means"]
