"""The exception hierarchy of wsi-ncmi.

Every error the package raises on purpose derives from :class:`WsiNcmiError`, so a
batch runner can catch "a problem with this input" without swallowing programming
errors. Messages name the file or parameter at fault and say how to fix it.
"""

from __future__ import annotations


class WsiNcmiError(Exception):
    """Base class of every error raised on purpose by wsi-ncmi."""


class SlideOpenError(WsiNcmiError):
    """A slide file exists but no backend could open it (truncated, corrupt, unreadable)."""


class DanglingLinkError(SlideOpenError):
    """A slide path is a symbolic link whose target does not exist (the message names both)."""


class UnsupportedFormatError(SlideOpenError):
    """The file is not a whole-slide image format that any configured backend reads."""


class MissingMppError(WsiNcmiError):
    """No trustworthy physical resolution (µm/px) is known for a slide."""


class CorruptTileError(WsiNcmiError):
    """One region of an otherwise readable slide failed to decode.

    Attributes:
        slide: Path of the slide.
        location: Level-0 ``(x, y)`` of the requested region.
        level: Pyramid level that was read.
        size: ``(width, height)`` requested, in pixels of ``level``.
    """

    def __init__(
        self,
        message: str,
        *,
        slide: str,
        location: tuple[int, int],
        level: int,
        size: tuple[int, int],
    ) -> None:
        super().__init__(message)
        self.slide = slide
        self.location = location
        self.level = level
        self.size = size


class CacheSchemaError(WsiNcmiError):
    """An HDF5 coordinates or features file has an unknown schema or inconsistent content."""


class SlideChangedError(CacheSchemaError):
    """A cached output was made from another scan of the slide than the file there now.

    The message names both scans (size, level-0 dimensions, fingerprint) and the fix.

    Attributes:
        slide: Path of the slide file.
        output: The cached file made from the other scan.
    """

    def __init__(self, message: str, *, slide: str = "", output: str = "") -> None:
        super().__init__(message)
        self.slide = slide
        self.output = output


class ConfigError(WsiNcmiError, ValueError):
    """A configuration value has the wrong type or is out of range."""


class OutputWriteError(WsiNcmiError, OSError):
    """Writing an output failed (``ENOSPC``, ``EFBIG``, ``EDQUOT``, ``EROFS``, ``EACCES``, ``EIO``).

    The partial temp file has been removed and the slide's final output is untouched; a
    batch records the slide as failed and, with ``--skip_errors``, goes on.

    Attributes:
        errno: The ``errno`` code of the failure (``None`` when the library gave none).
        path: The output that could not be written.
    """

    def __init__(self, message: str, *, errno: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.path = path


class DiskFullError(OutputWriteError):
    """The output filesystem ran out of space or quota; the partial temp file was removed."""


class BatchAbortedError(WsiNcmiError):
    """A batch stopped at the first failure because ``skip_errors`` was off."""


class WorkerFailedError(WsiNcmiError):
    """A DataLoader worker process died or stalled (often a full ``/dev/shm``)."""


class WeightsUnavailableError(WsiNcmiError):
    """Encoder weights were asked for but cannot be loaded (gated, offline, missing file).

    The message says where the weights live and how to provide them as a local file
    (``--weights PATH``). wsi-ncmi never falls back to random weights silently.
    """


class ManifestError(WsiNcmiError, ValueError):
    """A slide manifest (CSV) is malformed: unknown labels, duplicates, missing columns."""


class NonFiniteError(WsiNcmiError, ValueError):
    """Features or training values contain NaN or infinity (the message names the file)."""


class NonFiniteFeaturesError(NonFiniteError, CacheSchemaError):
    """An encoder produced NaN/inf features (e.g. a float16 overflow); nothing was written.

    Also a :class:`CacheSchemaError`, as this case was reported before it had its own type.
    """


class MissingFeaturesError(WsiNcmiError, FileNotFoundError):
    """Slides of the manifest have no features file (the message lists them)."""


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
]
