"""A linear probe on a trained model's frozen slide embeddings.

The probe tells a representation that lacks the signal apart from a decision rule that
misreads it: a multinomial logistic regression is fitted on the training slides' embeddings
(the aggregator's ``MILOutput.embedding`` of whole bags, from the selected checkpoint) and
scored on the validation and test slides. A probe that does well on test where the model
does not points at the model's decision rule (the loss's head, its centroids); a probe that
fails too points at the representation.

The fit is deterministic: embeddings standardised by the training slides' mean and standard
deviation (floor :data:`STD_FLOOR`), L2-regularised logistic regression (``C = 1``, lbfgs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.confusion import macro_f1_counts
from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.train.evaluation import optional_float

STD_FLOOR: float = 1e-6
"""Smallest per-dimension standard deviation used to standardise the embeddings."""


@dataclass(frozen=True)
class ProbeResult:
    """Scores of a linear probe.

    Attributes:
        train_slides: Slides the probe was fitted on.
        macro_f1: Macro-F1 of the probe on each scored part (``"val"``, ``"test"``);
            ``None`` when it could not be fitted (fewer than two training classes) or the
            part has no slides.
    """

    train_slides: int
    macro_f1: dict[str, float | None]

    def to_json(self) -> JSONObject:
        """JSON-ready form (``{"train_slides", "macro_f1": {part: value}}``)."""
        macro_f1: JSONObject = dict(self.macro_f1)
        return {"train_slides": self.train_slides, "macro_f1": macro_f1}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProbeResult:
        """Read :meth:`to_json`'s form back."""
        return cls(
            train_slides=int(data["train_slides"]),
            macro_f1={
                str(part): optional_float(value)
                for part, value in (data.get("macro_f1") or {}).items()
            },
        )


def linear_probe(
    train_x: NDArray[np.floating[Any]],
    train_y: NDArray[np.integer[Any]],
    parts: Mapping[str, tuple[NDArray[np.floating[Any]], NDArray[np.integer[Any]]]],
    num_classes: int,
) -> ProbeResult:
    """Fit a logistic regression on training embeddings and score other parts.

    Args:
        train_x: ``(N, m)`` training slide embeddings.
        train_y: ``(N,)`` their labels in ``[0, num_classes)``.
        parts: Part name → ``((M, m) embeddings, (M,) labels)`` to score.
        num_classes: ``C``.

    Returns:
        The probe's macro-F1 per part (over the classes present, as every macro-F1 of
        the project).
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(train_x, dtype=np.float64)
    y = np.asarray(train_y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"train_x must be (N, m) with N = len(train_y), got {x.shape}")
    scores: dict[str, float | None] = dict.fromkeys(parts)
    if len(np.unique(y)) < 2:
        return ProbeResult(len(y), scores)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), STD_FLOOR)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit((x - mean) / std, y)
    for name, (part_x, part_y) in parts.items():
        if len(part_y) == 0:
            continue
        predicted = model.predict((np.asarray(part_x, dtype=np.float64) - mean) / std)
        scores[name] = macro_f1_counts(
            np.asarray(part_y, dtype=np.int64), predicted.astype(np.int64), num_classes
        )
    return ProbeResult(len(y), scores)


__all__ = ["STD_FLOOR", "ProbeResult", "linear_probe"]
