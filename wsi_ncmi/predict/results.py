"""What a ``wsi-predict`` run did: per-slide results and the run's outcome.

Made by :mod:`wsi_ncmi.predict.run`, read by the writers (:mod:`wsi_ncmi.predict.outputs`,
:mod:`wsi_ncmi.predict.html`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wsi_ncmi.predict.model import SlidePrediction


@dataclass
class SlideResult:
    """One slide's outcome: its prediction (``None`` without patches) and QC flags."""

    slide_id: str
    features: Path | None
    slide_path: Path | None
    prediction: SlidePrediction | None
    qc: list[str] = field(default_factory=list)


@dataclass
class PredictResult:
    """What a run did: per-slide results, seconds per stage, exit code and outputs."""

    slides: list[SlideResult]
    seconds: dict[str, float]
    exit_code: int
    outputs: dict[str, str]
