"""wsi-ncmi: whole-slide-image subtyping with attention-MIL and the NCMI loss.

Importing the package is cheap and has no side effects: heavy modules (torch,
OpenSlide, OpenCV) are imported by the subpackages that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsi_ncmi._version import __version__
from wsi_ncmi.errors import (
    BatchAbortedError,
    CacheSchemaError,
    ConfigError,
    CorruptTileError,
    DanglingLinkError,
    DiskFullError,
    ManifestError,
    MissingFeaturesError,
    MissingMppError,
    NonFiniteError,
    NonFiniteFeaturesError,
    OutputWriteError,
    SlideChangedError,
    SlideOpenError,
    UnsupportedFormatError,
    WeightsUnavailableError,
    WorkerFailedError,
    WsiNcmiError,
)

if TYPE_CHECKING:
    from wsi_ncmi.predict.model import TrainedModel


def load_model(path: Any) -> TrainedModel:
    """Load a model bundle (checked, never unpickled); see :func:`wsi_ncmi.predict.load_model`.

    Args:
        path: The bundle folder (``<run>/<fold>/model/`` of ``wsi-train``).

    Returns:
        The model: ``load_model(path).predict_bag(features) -> SlidePrediction``.
    """
    from wsi_ncmi.predict.model import load_model as _load_model

    return _load_model(path)


__all__ = [
    "BatchAbortedError",
    "CacheSchemaError",
    "ConfigError",
    "CorruptTileError",
    "DanglingLinkError",
    "DiskFullError",
    "ManifestError",
    "MissingFeaturesError",
    "MissingMppError",
    "NonFiniteError",
    "NonFiniteFeaturesError",
    "OutputWriteError",
    "SlideChangedError",
    "SlideOpenError",
    "UnsupportedFormatError",
    "WeightsUnavailableError",
    "WorkerFailedError",
    "WsiNcmiError",
    "__version__",
    "load_model",
]
