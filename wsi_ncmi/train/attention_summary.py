"""How much attention a fold's model puts on true tumour: the summary of its test slides.

:func:`wsi_ncmi.train.attention.export_attention` returns an :class:`AttentionSummary`;
slides count only where the generator's ground truth (tumour polygons) lies beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.train.evaluation import optional_float


@dataclass(frozen=True)
class SlideTumourAttention:
    """Attention on true tumour in one slide.

    Attributes:
        label: The slide's true class.
        tumour_attention: Attention mass on the patches whose centre lies in tumour.
        tumour_patch_fraction: Share of those patches (what uniform attention gets).
    """

    label: str
    tumour_attention: float
    tumour_patch_fraction: float

    def to_json(self) -> JSONObject:
        """``{"label", "tumour_attention", "tumour_patch_fraction"}``."""
        return {
            "label": self.label,
            "tumour_attention": self.tumour_attention,
            "tumour_patch_fraction": self.tumour_patch_fraction,
        }


@dataclass(frozen=True)
class AttentionSummary:
    """Attention on true tumour over a fold's test slides with ground truth.

    Attributes:
        slides_with_ground_truth: Slides with tumour polygons.
        mean_tumour_attention: Mean attention mass on tumour (``None`` without such slides).
        mean_tumour_patch_fraction: Mean share of tumour patches (``None`` likewise).
        tumour_attention_by_class: Mean attention mass on tumour per true class.
        per_slide: ``{slide_id: attention}`` (empty when read back from a record that
            leaves it out).
    """

    slides_with_ground_truth: int
    mean_tumour_attention: float | None
    mean_tumour_patch_fraction: float | None
    tumour_attention_by_class: dict[str, float]
    per_slide: dict[str, SlideTumourAttention] = field(default_factory=dict)

    def to_json(self, *, per_slide: bool = False) -> JSONObject:
        """The JSON form; ``per_slide`` adds the ``per_slide`` table (a fold's own file)."""
        out: JSONObject = {
            "slides_with_ground_truth": self.slides_with_ground_truth,
            "mean_tumour_attention": self.mean_tumour_attention,
            "mean_tumour_patch_fraction": self.mean_tumour_patch_fraction,
            "tumour_attention_by_class": dict(self.tumour_attention_by_class),
        }
        if per_slide:
            out["per_slide"] = {slide: s.to_json() for slide, s in self.per_slide.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AttentionSummary:
        """Read :meth:`to_json`'s form back (with or without ``per_slide``)."""
        return cls(
            slides_with_ground_truth=int(data.get("slides_with_ground_truth") or 0),
            mean_tumour_attention=optional_float(data.get("mean_tumour_attention")),
            mean_tumour_patch_fraction=optional_float(data.get("mean_tumour_patch_fraction")),
            tumour_attention_by_class={
                str(k): float(v) for k, v in (data.get("tumour_attention_by_class") or {}).items()
            },
            per_slide={
                str(slide): SlideTumourAttention(
                    str(s["label"]), float(s["tumour_attention"]), float(s["tumour_patch_fraction"])
                )
                for slide, s in (data.get("per_slide") or {}).items()
            },
        )


__all__ = ["AttentionSummary", "SlideTumourAttention"]
