"""Small generated slides for tests: pyramidal TIFFs, broken files, odd sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def write_pyramid_tiff(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float | None = 0.5,
    levels: int = 3,
    tile: int = 64,
    compression: str = "jpeg",
) -> Path:
    """Write ``image`` (H, W, 3 uint8) as a tiled pyramid that OpenSlide and tiffslide read.

    Levels are successive top-level pages (reduced ones with ``subfiletype=1``), each
    half the size of the previous one. ``mpp=None`` writes no physical resolution.
    """
    import cv2

    resolution: tuple[float, float] | None = None  # tifffile's default: none written
    resolutionunit = "NONE"
    if mpp is not None:
        resolution, resolutionunit = (1e4 / mpp, 1e4 / mpp), "CENTIMETER"
    with tifffile.TiffWriter(path) as tif:
        img = image
        for level in range(levels):
            if level:
                h, w = img.shape[:2]
                img = cv2.resize(
                    img, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA
                )
                if mpp is not None:
                    scale = 2**level
                    resolution = (1e4 / (mpp * scale), 1e4 / (mpp * scale))
            tif.write(
                img,
                photometric="rgb",
                tile=(tile, tile),
                compression=compression,
                subfiletype=1 if level else 0,
                metadata=None,
                resolution=resolution,
                resolutionunit=resolutionunit,
            )
    return path


def tissue_image(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """A white background with one pink, textured ellipse of 'tissue' in the middle."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 245, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 1, -1)
    noise = rng.integers(-20, 20, size=(height, width, 1))
    pink = np.clip(np.array([200, 120, 170])[None, None, :] + noise, 0, 255).astype(np.uint8)
    img[mask.astype(bool)] = pink[mask.astype(bool)]
    return img


def corrupt_first_tile(path: Path) -> Path:
    """Overwrite the bytes of level 0's first tile with garbage (the rest stays valid)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[0], page.databytecounts[0]
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * count)
    return path


def truncate(path: Path, keep_fraction: float = 0.5) -> Path:
    """Cut a file to a fraction of its size, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path
