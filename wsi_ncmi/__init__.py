"""wsi-ncmi: whole-slide-image subtyping with attention-MIL and the NCMI loss.

Importing the package is cheap and has no side effects: heavy modules (torch,
OpenSlide, OpenCV) are imported by the subpackages that need them.
"""

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
]
