"""Bad slide files for the harness and the tests, each next to what it should produce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

BACKGROUND = (243, 242, 240)


def write_tiff(
    path: Path, image: np.ndarray, *, mpp: float | None = 0.5, levels: int = 2, tile: int = 64
) -> Path:
    """A tiled pyramidal JPEG TIFF that OpenSlide and tiffslide read (``mpp=None``: no unit)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        img = image
        for level in range(levels):
            if level:
                img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), cv2.INTER_AREA)
            extra: dict[str, object] = {"resolutionunit": "NONE"}
            if mpp is not None:
                res = 1e4 / (mpp * 2**level)
                extra = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
            tif.write(
                img, photometric="rgb", tile=(tile, tile), compression="jpeg",
                subfiletype=1 if level else 0, metadata=None, **extra,
            )  # fmt: skip
    return path


def tissue(width: int, height: int, seed: int = 0, *, full: bool = False) -> np.ndarray:
    """Pink textured tissue: an ellipse on white, or the whole image with ``full``."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    mask = np.ones((height, width), np.uint8)
    if not full:
        mask[:] = 0
        cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 1, -1)
    noise = rng.integers(-20, 20, size=(height, width, 1))
    pink = np.clip(np.array([200, 120, 170])[None, None, :] + noise, 0, 255).astype(np.uint8)
    img[mask > 0] = pink[mask > 0]
    return img


def good_slide(path: Path, seed: int = 0, *, mpp: float | None = 0.5) -> Path:
    """A 1024 × 768 slide with one tissue ellipse."""
    return write_tiff(path, tissue(1024, 768, seed), mpp=mpp)


def truncated_slide(path: Path) -> Path:
    """A good slide cut to 60 % of its bytes (an interrupted copy)."""
    good_slide(path, seed=1)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def zero_byte_slide(path: Path) -> Path:
    """An empty file."""
    path.write_bytes(b"")
    return path


def text_named_svs(path: Path) -> Path:
    """A text file (for example a saved download error page) named ``.svs``."""
    path.write_text("<html><body>403 Forbidden</body></html>\n")
    return path


def unreadable_tile_slide(path: Path) -> Path:
    """A good slide whose level-0 tile in the middle of the tissue is zeroed (the rest decodes)."""
    good_slide(path, seed=2)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        cols = -(-page.imagewidth // page.tilewidth)
        rows = -(-page.imagelength // page.tilelength)
        index = (rows // 2) * cols + cols // 2
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\x00" * count)
    return path


def no_mpp_slide(path: Path) -> Path:
    """A good slide without any physical resolution."""
    return good_slide(path, seed=3, mpp=None)


def blank_slide(path: Path) -> Path:
    """A slide with no tissue at all."""
    img = np.empty((768, 1024, 3), np.uint8)
    img[:] = BACKGROUND
    return write_tiff(path, img)


def one_tile_slide(path: Path) -> Path:
    """A single-level slide made of one 256 × 256 tile, all tissue."""
    return write_tiff(path, tissue(256, 256, seed=4, full=True), levels=1, tile=256)
