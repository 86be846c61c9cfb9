"""Concrete slide backends: OpenSlide and tiffslide.

The two libraries disagree on property names (``openslide.mpp-x`` vs
``tiffslide.mpp-x``), vendor names (tiffslide reports ``None`` for generic TIFFs) and
pixel modes (RGBA vs RGB); these classes hide that behind :class:`Slide`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.errors import DanglingLinkError, SlideOpenError, UnsupportedFormatError
from wsi_ncmi.slide.base import Slide

if TYPE_CHECKING:
    from openslide import OpenSlide
    from tiffslide import TiffSlide


def _check_file(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise DanglingLinkError(
            f"slide {str(path)!r} is a symbolic link to {target!r}, which does not exist "
            "(moved, deleted or on a share that is not mounted); fix or remove the link"
        )
    if not path.exists():
        raise SlideOpenError(f"slide {str(path)!r} does not exist")
    if path.is_dir():
        raise UnsupportedFormatError(
            f"slide {str(path)!r} is a directory; pass one file of the slide "
            "(for DICOM, any .dcm file of the series)"
        )
    if not path.is_file():  # a FIFO, socket or device: opening it could block forever
        raise UnsupportedFormatError(
            f"slide {str(path)!r} is not a regular file (a FIFO, socket or device); pass "
            "the slide file itself"
        )
    size = path.stat().st_size
    if size == 0:
        raise SlideOpenError(f"slide {str(path)!r} is an empty (0-byte) file; re-copy it")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic in _TIFF_MAGICS:
        _check_tiff_complete(path, size)
        _check_tiff_layout(path, size)


def _check_tiff_layout(path: Path, size: int) -> None:
    """Refuse a TIFF whose tile table does not fit its dimensions or its file (issue 24)."""
    from wsi_ncmi.slide.tiff_layout import tiff_layout_problem

    problem = tiff_layout_problem(path, size)
    if problem is not None:
        raise SlideOpenError(
            f"slide {str(path)!r} cannot be read as it claims: {problem}; the file is "
            "damaged or was written incompletely, re-copy or re-export it (no pixel was read)"
        )


_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class _LogCollector(logging.Handler):
    """Collects log messages instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _check_tiff_complete(path: Path, size: int) -> None:
    """Raise SlideOpenError if a TIFF's directory or pixel data run past end of file.

    An interrupted copy leaves a file whose header is fine but whose tiles, or whose
    image directories, point past the end; both backends then fail later with confusing
    messages (``IndexError: index 0 out of range(0)`` for an Aperio SVS whose directory
    comes after its pixel data). tifffile *logs* bad directory offsets instead of
    raising; those messages are collected here (not printed) and reported.
    """
    import tifffile

    log = logging.getLogger("tifffile")
    collector = _LogCollector()
    previous = (log.level, log.propagate)
    log.addHandler(collector)
    log.setLevel(logging.WARNING)
    log.propagate = False  # no stray "<tifffile.TiffPages …> invalid offset" on stderr
    try:
        with tifffile.TiffFile(path) as tif:
            end = 0
            n_pages = len(tif.pages)
            for page in tif.pages:
                offsets = getattr(page, "dataoffsets", ())
                counts = getattr(page, "databytecounts", ())
                if len(offsets) and len(counts) == len(offsets):
                    # Segments do not overlap, so the one starting last ends last.
                    offsets = tuple(offsets)
                    last = offsets.index(max(offsets))
                    end = max(end, int(offsets[last]) + int(counts[last]))
    except Exception as err:  # tifffile raises several types for broken structures
        raise SlideOpenError(
            f"slide {str(path)!r} has a TIFF header but its structure is broken "
            f"({type(err).__name__}: {err}); the file is probably truncated or corrupt, "
            "re-copy it"
        ) from err
    finally:
        log.removeHandler(collector)
        log.setLevel(previous[0])
        log.propagate = previous[1]
    bad_offsets = [m for m in collector.messages if "offset" in m]
    if n_pages == 0 or bad_offsets:
        detail = bad_offsets[0] if bad_offsets else "no image directory could be read"
        detail = detail.split("> ", 1)[-1]  # drop tifffile's "<tifffile.TiffPages @…>"
        raise SlideOpenError(
            f"slide {str(path)!r} is truncated or corrupt: its TIFF structure points past "
            f"its {size:,} bytes (tifffile: {detail!r}; {n_pages} image directories "
            "readable); re-copy or re-export it"
        )
    if end > size:
        raise SlideOpenError(
            f"slide {str(path)!r} is truncated: its image data extends to byte {end:,} "
            f"but the file has {size:,} bytes; re-copy or re-export it"
        )


class OpenSlideSlide(Slide["OpenSlide"]):
    """A slide read through OpenSlide (Aperio, Hamamatsu, generic TIFF, DICOM, ...)."""

    backend_name = "openslide"

    def _open(self) -> OpenSlide:
        import openslide

        _check_file(self.path)
        try:
            return openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise UnsupportedFormatError(
                f"OpenSlide does not recognise {str(self.path)!r} as a slide format"
            ) from err
        except (openslide.OpenSlideError, OSError) as err:
            raise SlideOpenError(
                f"OpenSlide could not open {str(self.path)!r} (truncated or corrupt?): {err}"
            ) from err

    def _read_rgba(
        self, handle: OpenSlide, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        return np.asarray(handle.read_region(location, level, size))

    def read_level(self, level: int) -> np.ndarray:
        """Read a whole level as RGB ``(H, W, 3)``.

        For TIFF-based formats the level's page is decoded directly with tifffile, about
        10x faster than OpenSlide's region compositor for a whole level; it is used only
        if tifffile sees the same level geometry. Anything else, or any failure there
        (e.g. a corrupt tile), falls back to OpenSlide, which reports it as usual.
        """
        if self.vendor in _TIFF_VENDORS:
            try:
                return _tifffile_whole_level(self.path, level, self.level_dimensions[level])
            except Exception:
                pass
        return super().read_level(level)

    @property
    def vendor(self) -> str:
        """Vendor reported by OpenSlide (``aperio``, ``generic-tiff``, ``dicom``, ...)."""
        return str(self.properties.get("openslide.vendor") or "generic-tiff")


class TiffSlideSlide(Slide["TiffSlide"]):
    """A slide read through tiffslide (TIFF-based formats only, no DICOM)."""

    backend_name = "tiffslide"

    def _open(self) -> TiffSlide:
        import tiffslide

        _check_file(self.path)
        try:
            return tiffslide.TiffSlide(str(self.path))
        except Exception as err:  # tifffile raises TiffFileError, ValueError, KeyError, ...
            name = type(err).__name__
            if name == "TiffFileError" and "not a TIFF" in str(err):
                raise UnsupportedFormatError(
                    f"tiffslide: {str(self.path)!r} is not a TIFF file: {err}"
                ) from err
            raise SlideOpenError(
                f"tiffslide could not open {str(self.path)!r} (truncated or corrupt?): "
                f"{name}: {err}"
            ) from err

    def _read_rgba(
        self, handle: TiffSlide, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        arr = handle.read_region(location, level, size, as_array=True)
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.dtype != np.uint8:
            raise TypeError(f"unsupported pixel type {arr.dtype} (expected 8-bit RGB)")
        return arr

    @property
    def vendor(self) -> str:
        """Vendor reported by tiffslide; generic TIFFs are named ``generic-tiff``."""
        return str(self.properties.get("tiffslide.vendor") or "generic-tiff")


_TIFF_VENDORS = ("generic-tiff", "aperio")


def _tifffile_whole_level(path: Path, level: int, expected: tuple[int, int]) -> np.ndarray:
    """Decode a whole pyramid level straight from its TIFF page with tifffile.

    Raises unless the page has exactly the ``expected`` ``(width, height)`` and 8-bit
    RGB(A) samples, so a mismatch between the libraries' level lists cannot go unnoticed.
    """
    import tifffile

    w, h = expected
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        if level >= len(levels):
            raise ValueError("tifffile sees fewer levels")
        page = levels[level]
        if tuple(page.shape[:2]) != (h, w) or page.dtype != np.uint8:
            raise ValueError("tifffile sees a different level geometry")
        arr = np.asarray(page.asarray(maxworkers=1))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError("not an RGB(A) level")
    from wsi_ncmi.slide.base import rgba_to_rgb_over_white

    return rgba_to_rgb_over_white(arr)


BACKENDS: dict[str, type[Slide]] = {
    "openslide": OpenSlideSlide,
    "tiffslide": TiffSlideSlide,
}
