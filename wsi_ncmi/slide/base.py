"""The one slide-reading contract every backend implements.

Backends only implement a handful of primitive methods (``_open``, ``_close``,
``_read_rgba``, and the metadata properties); everything a pipeline stage needs,
RGB compositing, physical-resolution helpers, thumbnails and error mapping, lives
here once.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Generic, NoReturn, Protocol, Self, TypeVar

import numpy as np

from wsi_ncmi.errors import CorruptTileError
from wsi_ncmi.slide.mpp import MppInfo, resolve_mpp

#: Values of a backend's property mapping (OpenSlide's are strings; tiffslide's may be
#: numbers or ``None``).
PropertyValue = str | int | float | None


class SlideHandle(Protocol):
    """What every backend's own slide object offers.

    ``openslide.OpenSlide`` and ``tiffslide.TiffSlide`` both do: the metadata
    :class:`Slide` reads, and ``close``.
    """

    @property
    def properties(self) -> Mapping[str, PropertyValue]:
        """Vendor and format properties."""
        ...

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        ...

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level."""
        ...

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level."""
        ...

    def close(self) -> None:
        """Release the file."""
        ...


H = TypeVar("H", bound=SlideHandle)


def rgba_to_rgb_over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite a straight-alpha RGBA image over white.

    Args:
        rgba: ``uint8`` array of shape ``(H, W, 4)`` (or ``(H, W, 3)``, returned as is).

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``. Fully transparent pixels (areas outside
        the scanned region) become white, which is what the tissue detector expects.
    """
    if rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 or HxWx4 image, got shape {rgba.shape}")
    if rgba.shape[2] == 3:
        return np.ascontiguousarray(rgba, dtype=np.uint8)
    alpha = rgba[..., 3:4].astype(np.uint16)
    if bool((alpha == 255).all()):
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


class Slide(ABC, Generic[H]):
    """A whole-slide image opened by one backend, whose own slide object is an ``H``.

    Coordinates passed to :meth:`read_region` are level-0 pixels ``(x, y)`` of the
    region's top-left corner; sizes are ``(width, height)`` in pixels of the level read.
    The backend handle is opened on first use in the current process and is never
    pickled: send a :class:`~wsi_ncmi.slide.SlideRef` to DataLoader workers instead.
    """

    backend_name: str = "abstract"

    def __init__(
        self,
        path: str | Path,
        *,
        mpp_override: float | tuple[float, float] | None = None,
        mpp_override_source: str = "override",
    ) -> None:
        self.path = Path(path)
        self._mpp_override = mpp_override
        self._mpp_override_source = mpp_override_source
        self._handle: H | None = None
        self._pid: int | None = None
        self._mpp: MppInfo | None = None
        self._ensure_open()

    # -- backend primitives ---------------------------------------------------------
    @abstractmethod
    def _open(self) -> H:
        """Open and return the backend handle; raise SlideOpenError subclasses."""

    @abstractmethod
    def _read_rgba(
        self, handle: H, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read a region as ``uint8`` ``(H, W, 3 or 4)``; may raise backend errors."""

    @property
    @abstractmethod
    def vendor(self) -> str:
        """Normalised vendor name (``aperio``, ``generic-tiff``, ``dicom``, ...)."""

    # -- handle management ----------------------------------------------------------
    def _ensure_open(self) -> H:
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Release the backend handle (idempotent)."""
        handle, self._handle = self._handle, None
        if handle is not None and self._pid == os.getpid():
            handle.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} holds an open file handle and must not be pickled; "
            "pass wsi_ncmi.slide.SlideRef(path, backend=...) to worker processes and "
            "open it there"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- metadata -------------------------------------------------------------------
    @property
    def handle(self) -> H:
        """The backend object (``openslide.OpenSlide`` or ``tiffslide.TiffSlide``)."""
        return self._ensure_open()

    @property
    def properties(self) -> Mapping[str, PropertyValue]:
        """Backend property mapping (``openslide.*``/``tiffslide.*``, ``tiff.*``, ...)."""
        return dict(self.handle.properties)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        w, h = self.handle.dimensions
        return int(w), int(h)

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return int(self.handle.level_count)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of every level."""
        return tuple((int(w), int(h)) for w, h in self.handle.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of every level relative to level 0."""
        return tuple(float(d) for d in self.handle.level_downsamples)

    @property
    def mpp_info(self) -> MppInfo:
        """Level-0 resolution and its source (raises MissingMppError if unknown)."""
        if self._mpp is None:
            self._mpp = resolve_mpp(
                self.path,
                self.properties,
                vendor=self.vendor,
                backend=self.backend_name,
                override=self._mpp_override,
                override_source=self._mpp_override_source,
            )
        return self._mpp

    @property
    def mpp(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` resolution in µm/px."""
        info = self.mpp_info
        return info.x, info.y

    @property
    def mpp_source(self) -> str:
        """Where :attr:`mpp` came from (see :class:`~wsi_ncmi.slide.mpp.MppInfo`)."""
        return self.mpp_info.source

    def level_mpp(self, level: int) -> float:
        """Mean µm/px of ``level``."""
        return self.mpp_info.mean * self.level_downsamples[level]

    def best_level_for_mpp(self, target_mpp: float, rel_tol: float = 1e-3) -> int:
        """Coarsest level whose resolution is at or finer than ``target_mpp``.

        Reading from that level and downscaling by ``target_mpp / level_mpp`` gives
        exactly ``target_mpp``. If even level 0 is coarser than the target, level 0 is
        returned (the caller must upsample, and should say so).

        Args:
            target_mpp: Desired µm/px.
            rel_tol: Relative slack so that a level at 0.5002 serves a 0.5 target.
        """
        if not (math.isfinite(target_mpp) and target_mpp > 0):
            raise ValueError(f"target_mpp must be a positive number, got {target_mpp!r}")
        best = 0
        for level in range(self.level_count):
            if self.level_mpp(level) <= target_mpp * (1 + rel_tol):
                best = level
        return best

    # -- pixels ---------------------------------------------------------------------
    def read_region(
        self, location_level0: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read an RGB region.

        Args:
            location_level0: Top-left ``(x, y)`` in level-0 pixels.
            level: Pyramid level to read from.
            size: ``(width, height)`` in pixels of ``level``.

        Returns:
            ``uint8`` array of shape ``(height, width, 3)``; transparent areas are white.

        Raises:
            ValueError: Bad level or size.
            CorruptTileError: The region failed to decode. The slide stays usable for
                other regions (the handle is reopened on the next call).
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"level must be in [0, {self.level_count}), got {level}")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be positive (width, height), got {size!r}")
        x, y = int(location_level0[0]), int(location_level0[1])
        try:
            rgba = self._read_rgba(self._ensure_open(), (x, y), level, (w, h))
        except Exception as err:  # backends raise assorted decoder errors
            raise self._corrupt_tile(err, (x, y), level, (w, h)) from err
        return rgba_to_rgb_over_white(rgba)

    def _corrupt_tile(
        self, err: Exception, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> CorruptTileError:
        """The error for a region that failed to decode; the handle is reopened next time."""
        # OpenSlide handles enter a sticky error state: drop it, reopen next time.
        self._handle = None
        (x, y), (w, h) = location, size
        return CorruptTileError(
            f"failed to decode region at level-0 ({x}, {y}), level {level}, size "
            f"{w}x{h} of slide {str(self.path)!r}: {type(err).__name__}: {err}. "
            "The slide may be truncated or partly corrupt; skip this tile or "
            "re-export the slide.",
            slide=str(self.path),
            location=(x, y),
            level=level,
            size=(w, h),
        )

    def read_level(self, level: int) -> np.ndarray:
        """Read a whole (small) level as RGB ``(H, W, 3)``."""
        w, h = self.level_dimensions[level]
        return self.read_region((0, 0), level, (w, h))

    def thumbnail(self, max_size: int | tuple[int, int] = 1024) -> np.ndarray:
        """RGB thumbnail that fits in ``max_size`` keeping the aspect ratio.

        Reads the coarsest level that is still at least as large as the thumbnail,
        never level 0 unless the slide has a single level.

        Returns:
            ``uint8`` array ``(H, W, 3)``.
        """
        import cv2

        mw, mh = (max_size, max_size) if isinstance(max_size, int) else max_size
        w0, h0 = self.dimensions
        scale = min(mw / w0, mh / h0, 1.0)
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        level = 0
        for lv, (lw, lh) in enumerate(self.level_dimensions):
            if lw >= tw and lh >= th:
                level = lv
        img = self.read_level(level)
        if img.shape[1] == tw and img.shape[0] == th:
            return img
        return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
