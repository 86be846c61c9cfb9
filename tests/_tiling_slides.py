"""Generated slides with tissue at known polygons, for the tiling tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from _slides import tissue_image, write_pyramid_tiff

BACKGROUND = (243, 242, 240)


@dataclass
class KnownSlide:
    path: Path
    truth: np.ndarray  # (H, W) bool level-0 tissue
    mpp: float


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2)
    base = np.array([210, 135, 180], np.float32) + 22 * noise[..., None]
    img = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range(h * w // 400):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.circle(img, (x, y), int(rng.integers(2, 5)), (105, 60, 150), -1)
    return img


def known_tissue_slide(
    path: Path,
    *,
    width: int = 4096,
    height: int = 3072,
    mpp: float = 0.5,
    seed: int = 0,
    pen: bool = True,
    levels: int = 3,
) -> KnownSlide:
    """A slide with an ellipse, a hexagon with a large hole, and a rectangle of tissue.

    With ``pen``, a green and a blue ink stroke and a black blob lie on the background;
    they must not become tissue.
    """
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), np.uint8)
    cv2.ellipse(truth, (width // 4, height // 3), (width // 6, height // 5), 20, 0, 360, 1, -1)
    hexagon = np.array(
        [[0.55, 0.25], [0.75, 0.15], [0.92, 0.3], [0.9, 0.55], [0.7, 0.62], [0.56, 0.45]]
    ) * [width, height]
    cv2.fillPoly(truth, [hexagon.astype(np.int32)], 1)
    cv2.circle(truth, (int(0.74 * width), int(0.38 * height)), int(0.1 * height), 0, -1)
    cv2.rectangle(
        truth, (int(0.3 * width), int(0.7 * height)), (int(0.62 * width), int(0.9 * height)), 1, -1
    )
    img = np.empty((height, width, 3), np.uint8)
    img[:] = BACKGROUND
    img[truth > 0] = _texture(height, width, rng)[truth > 0]
    if pen:
        t = max(8, int(40 / mpp))  # strokes ~40 µm wide... and longer than tissue pieces
        cv2.line(
            img,
            (int(0.05 * width), int(0.9 * height)),
            (int(0.2 * width), int(0.62 * height)),
            (40, 150, 60),
            t,
        )
        cv2.line(
            img,
            (int(0.7 * width), int(0.75 * height)),
            (int(0.95 * width), int(0.95 * height)),
            (30, 70, 190),
            t,
        )
        cv2.circle(
            img, (int(0.9 * width), int(0.08 * height)), int(0.04 * height), (15, 15, 15), -1
        )
    write_pyramid_tiff(path, img, mpp=mpp, levels=levels, tile=128)
    return KnownSlide(path, truth.astype(bool), mpp)


def small_slide(path: Path, seed: int = 0, *, mpp: float | None = 0.5) -> Path:
    """A 1024 x 768 slide with one tissue ellipse (fast batch tests)."""
    return write_pyramid_tiff(path, tissue_image(1024, 768, seed=seed), mpp=mpp, levels=2)


def blank_slide(path: Path) -> Path:
    """A slide with no tissue at all."""
    img = np.empty((768, 1024, 3), np.uint8)
    img[:] = BACKGROUND
    return write_pyramid_tiff(path, img, mpp=0.5, levels=2)
