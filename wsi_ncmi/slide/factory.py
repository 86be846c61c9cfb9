"""Open a slide with the right backend, and a picklable reference for workers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsi_ncmi.errors import ConfigError, DanglingLinkError, SlideOpenError, UnsupportedFormatError
from wsi_ncmi.slide.backends import BACKENDS
from wsi_ncmi.slide.base import Slide
from wsi_ncmi.slide.mpp import load_mpp_csv, lookup_mpp_override

BackendName = Literal["auto", "openslide", "tiffslide", "tiledecode", "cucim"]
BACKEND_CHOICES: tuple[str, ...] = ("auto", "openslide", "tiffslide", "tiledecode", "cucim")


def _backend_class(name: str) -> type[Slide]:
    """The class of a named backend (the tile-decode and cuCIM readers load lazily)."""
    if name == "tiledecode":
        from wsi_ncmi.slide.tiledecode import TileDecodeSlide

        return TileDecodeSlide
    if name == "cucim":
        from wsi_ncmi.slide.cucim import CuCimSlide

        return CuCimSlide
    return BACKENDS[name]


def choose_reader(path: str | Path, requested: str, fallback: str = "auto") -> str:
    """The backend that extraction reads ``path`` with.

    ``"auto"`` decides by the file's format alone, never by installed extras or GPUs, so
    every node of a sharded run agrees: ``"tiledecode"`` for tiled JPEG TIFF-family
    slides (:func:`~wsi_ncmi.slide.tiledecode.is_tile_decodable`), else ``fallback``
    (the backend the slide was tiled with). Any other name is returned as given.

    Raises:
        ConfigError: Unknown backend name.
    """
    if requested not in BACKEND_CHOICES:
        raise ConfigError(f"backend must be one of {BACKEND_CHOICES}, got {requested!r}")
    if requested != "auto":
        return requested
    from wsi_ncmi.slide.tiledecode import is_tile_decodable

    return "tiledecode" if is_tile_decodable(path) else fallback


def open_slide(
    path: str | Path,
    backend: BackendName | str = "auto",
    *,
    mpp_override: float | tuple[float, float] | None = None,
    mpp_csv: str | Path | dict[str, float] | None = None,
) -> Slide:
    """Open a whole-slide image.

    Args:
        path: Slide file (``.svs``, ``.tif``, ``.ndpi``, ``.mrxs``, ``.dcm``, ...).
        backend: ``"openslide"``, ``"tiffslide"``, ``"tiledecode"`` (JPEG tiles decoded
            straight from a TIFF, :mod:`wsi_ncmi.slide.tiledecode`), ``"cucim"`` (needs
            the ``cucim`` extra) or ``"auto"`` (OpenSlide first, then tiffslide; if both
            fail, the tiffslide error is raised with the OpenSlide error chained as its
            cause). Extraction picks its reader with :func:`choose_reader`.
        mpp_override: µm/px to use instead of the file's metadata.
        mpp_csv: A ``slide,mpp`` CSV path (or an already-loaded mapping); used when
            the slide is listed and ``mpp_override`` is not given.

    Returns:
        An open :class:`Slide`; use it as a context manager to close it.

    Raises:
        ConfigError: Unknown backend name.
        UnsupportedFormatError: No backend recognises the file.
        SlideOpenError: The file is missing, empty, truncated or corrupt.
    """
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    source = "override"
    if mpp_override is None and mpp_csv is not None:
        mapping = mpp_csv if isinstance(mpp_csv, dict) else load_mpp_csv(mpp_csv)
        mpp_override = lookup_mpp_override(path, mapping)
        source = "override-csv"
    if backend != "auto":
        cls = _backend_class(backend)
        return cls(path, mpp_override=mpp_override, mpp_override_source=source)
    try:
        return BACKENDS["openslide"](path, mpp_override=mpp_override, mpp_override_source=source)
    except SlideOpenError as os_err:
        if isinstance(os_err, DanglingLinkError):
            raise  # no backend can read a link to nothing; its own message says so
        try:
            return BACKENDS["tiffslide"](
                path, mpp_override=mpp_override, mpp_override_source=source
            )
        except SlideOpenError as ts_err:
            if str(ts_err) == str(os_err):  # the shared file check failed: say it once
                raise type(os_err)(str(os_err)) from os_err
            kind = (
                UnsupportedFormatError
                if isinstance(os_err, UnsupportedFormatError)
                and isinstance(ts_err, UnsupportedFormatError)
                else SlideOpenError
            )
            fix = (
                ". It is not a whole-slide image that OpenSlide or tiffslide reads: check "
                "what the file really is (a renamed or failed download?), re-export it, or "
                "remove it from the inputs"
                if kind is UnsupportedFormatError
                else ""
            )
            # Both errors stay reachable: __cause__ is OpenSlide's, __context__ tiffslide's.
            raise kind(
                f"no backend could open {str(path)!r}. openslide: {os_err}. "
                f"tiffslide: {ts_err}{fix}"
            ) from os_err


@dataclass(frozen=True)
class SlideRef:
    """A picklable recipe for opening a slide; safe to send to DataLoader workers.

    Each process opens its own handle on first :meth:`open` and keeps it in a
    per-process cache, so persistent workers reuse handles and forked workers never
    share a parent's file descriptor state.
    """

    path: str
    backend: str = "auto"
    mpp_override: float | None = None

    def open(self) -> Slide:
        """Return this process's handle for the slide, opening it on first use."""
        key = (os.getpid(), self.path, self.backend, self.mpp_override)
        slide = _PROCESS_CACHE.get(key)
        if slide is None:
            slide = open_slide(self.path, self.backend, mpp_override=self.mpp_override)
            _PROCESS_CACHE[key] = slide
        return slide


_PROCESS_CACHE: dict[tuple[int, str, str, float | None], Slide] = {}


def close_cached_slides() -> None:
    """Close every handle this process opened through :meth:`SlideRef.open`."""
    pid = os.getpid()
    for key in [k for k in _PROCESS_CACHE if k[0] == pid]:
        _PROCESS_CACHE.pop(key).close()
