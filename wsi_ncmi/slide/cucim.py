"""The cuCIM reader (``--backend cucim``; optional: ``pip install 'wsi-ncmi[cucim]'``).

cuCIM (``cucim-cu12``, Apache-2.0) reads tiled TIFF and Aperio SVS slides with its own
multi-threaded, libjpeg-turbo based decoder; its CPU read path needs no GPU. Metadata
(levels, properties, µm/px, vendor) comes from OpenSlide, so a slide has the same geometry
under every reader; only pixels come from cuCIM. Formats cuCIM does not open fail at open
with :class:`~wsi_ncmi.errors.UnsupportedFormatError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from wsi_ncmi.errors import ConfigError, UnsupportedFormatError
from wsi_ncmi.slide.backends import OpenSlideSlide

if TYPE_CHECKING:
    from cucim import CuImage
    from openslide import OpenSlide

CUCIM_MISSING = (
    "--backend cucim needs cuCIM, which is not installed: pip install 'wsi-ncmi[cucim]' "
    "(the cucim-cu12 package; its CPU read path works without a GPU), or use "
    "--backend auto"
)


def cucim_available() -> bool:
    """Whether ``cucim`` can be imported here."""
    try:
        import cucim  # noqa: F401
    except ImportError:
        return False
    return True


def _cuimage_class() -> type[CuImage]:
    try:
        from cucim import CuImage
    except ImportError as err:
        raise ConfigError(CUCIM_MISSING) from err
    return CuImage


class CuCimSlide(OpenSlideSlide):
    """A slide whose pixels are read by cuCIM (see the module docstring)."""

    backend_name = "cucim"

    def _open(self) -> OpenSlide:
        cuimage = _cuimage_class()
        handle = super()._open()
        try:
            self._cuimage = cuimage(str(self.path))
        except Exception as err:  # cuCIM raises RuntimeError/ValueError for other formats
            handle.close()
            raise UnsupportedFormatError(
                f"cuCIM cannot read {str(self.path)!r} ({type(err).__name__}: {err}); "
                "use --backend auto or openslide for this slide"
            ) from err
        return handle

    def close(self) -> None:
        """Release the OpenSlide handle and the cuCIM image (idempotent)."""
        self._cuimage = None
        super().close()

    def _read_rgba(
        self, handle: OpenSlide, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        region = self._cuimage.read_region(location, size, level)
        return np.asarray(region)

    def read_regions(
        self,
        locations: Sequence[tuple[int, int]],
        level: int,
        size: tuple[int, int],
        *,
        num_workers: int = 1,
    ) -> list[np.ndarray]:
        """Read many same-sized regions with cuCIM's batched, multi-threaded reader.

        Args:
            locations: Level-0 top-left ``(x, y)`` of each region.
            level: Pyramid level.
            size: ``(width, height)`` at ``level``.
            num_workers: cuCIM decoder threads.

        Returns:
            One ``uint8`` ``(height, width, 3)`` array per location, in order.
        """
        self._ensure_open()
        flat = [int(v) for xy in locations for v in xy]
        batches = self._cuimage.read_region(
            flat, size, level, batch_size=len(locations), num_workers=num_workers
        )
        out: list[np.ndarray] = []
        for batch in batches:
            arr = np.asarray(batch)
            out.extend(arr[..., :3] if arr.ndim == 4 else arr[None, ..., :3])
        return out
