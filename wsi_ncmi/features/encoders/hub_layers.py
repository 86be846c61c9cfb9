"""Layers of the hub encoders that timm does not provide: pooling heads and CONCH v1.5.

Built by :mod:`wsi_ncmi.features.encoders.hub_models`.
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_ncmi.errors import WeightsUnavailableError

# CONCH v1.5 (MahmoodLab/conchv1_5, the patch encoder of TITAN): a ViT-L/16 trunk with
# LayerScale, run at 448 px, whose tokens (class token included, after the final norm)
# are pooled by one learned query of an 8-head attentional pooler to 768-d, then
# LayerNorm. Its checkpoint keeps a 224-px (14 x 14) position table; the reference loader
# resamples it for 448-px inputs on every call (DINO style: bicubic with a scale factor
# of (28 + 0.1) / 14). Inputs here are always 448 px, so that table is resampled once.
CONCH_V15_DIM = 768
CONCH_V15_INPUT_PX = 448
CONCH_V15_CKPT_GRID = 14


class ClsMeanPool(nn.Module):
    """Class token ⊕ mean of the patch tokens: ``(B, T, C)`` → ``(B, 2C)``."""

    def __init__(self, model: nn.Module, prefix_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.prefix_tokens = prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, 2C)``."""
        tokens = self.model(x)
        return torch.cat([tokens[:, 0], tokens[:, self.prefix_tokens :].mean(dim=1)], dim=1)


class AttentionalPooler(nn.Module):
    """Learned queries attending over a token sequence (CoCa-style attentional pooling).

    ``(B, T, context_dim)`` → ``(B, n_queries, dim)``; queries and keys are layer-normed
    first, the projections have no bias, the scale is ``(dim / heads) ** -0.5``.
    Parameter names follow the CONCH v1.5 checkpoint.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, n_queries: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(n_queries, dim))
        self.ln_q = nn.LayerNorm(dim)
        self.ln_k = nn.LayerNorm(context_dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, N, d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` → ``(B, Q, dim)``."""
        key, value = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)
        query = self.to_q(self.ln_q(self.query)).expand(tokens.shape[0], -1, -1)
        out = nn.functional.scaled_dot_product_attention(
            self._heads(query), self._heads(key), self._heads(value)
        )
        return self.to_out(out.transpose(1, 2).flatten(2))


class ConchV15(nn.Module):
    """CONCH v1.5 vision tower: ViT trunk → attentional pool (1 query) → LayerNorm."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        width = int(trunk.num_features)  # type: ignore[arg-type]
        self.attn_pool_contrast = AttentionalPooler(CONCH_V15_DIM, width, 8, 1)
        self.ln_contrast = nn.LayerNorm(CONCH_V15_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 448, 448)`` → ``(B, 768)``."""
        tokens = self.trunk.forward_features(x)  # type: ignore[operator]
        return self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])


def conch_v15_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The CONCH v1.5 checkpoint's position table as the reference uses it at ``grid``².

    ``(1, 1 + g², C)`` → ``(1, 1 + grid², C)``: a table that is not 14 x 14 is first
    fitted to the 224-px model (bilinear), then resampled DINO style (bicubic,
    ``scale_factor=(grid + 0.1) / 14``), the class token's entry kept as is.

    Raises:
        WeightsUnavailableError: The table is not square.
    """
    dim = pos_embed.shape[-1]
    side = round((pos_embed.shape[1] - 1) ** 0.5)
    if side * side != pos_embed.shape[1] - 1:
        raise WeightsUnavailableError(
            f"CONCH v1.5 pos_embed of shape {tuple(pos_embed.shape)} is not 1 + a square grid"
        )
    table = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    base = CONCH_V15_CKPT_GRID
    if side != base:
        table = nn.functional.interpolate(
            table, size=(base, base), mode="bilinear", align_corners=False
        )
    if grid != base:
        factor = (grid + 0.1) / base
        table = nn.functional.interpolate(
            table, scale_factor=(factor, factor), mode="bicubic", align_corners=False
        )
    table = table.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], table], dim=1)


class HfClsToken(nn.Module):
    """The class token of a ``transformers`` vision model's last hidden state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, C)``."""
        return self.model(pixel_values=x).last_hidden_state[:, 0]


__all__ = [
    "CONCH_V15_CKPT_GRID",
    "CONCH_V15_DIM",
    "CONCH_V15_INPUT_PX",
    "AttentionalPooler",
    "ClsMeanPool",
    "ConchV15",
    "HfClsToken",
    "conch_v15_pos_embed",
]
