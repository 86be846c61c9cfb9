"""ImageFolder-layout datasets read with OpenCV (torchvision is not required).

Layout: ``root/train/<class>/<image>`` and optionally ``root/val/<class>/...`` and
``root/test/<class>/...``; class indices follow the sorted class folder names of ``train``.
Without ``val``, a stratified ``val_fraction`` of ``train`` is held out.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from wsi_ncmi.errors import ConfigError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def scan_image_folder(
    root: Path, class_names: list[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """List the images of an ImageFolder split.

    Args:
        root: Folder with one sub-folder per class.
        class_names: Class order to use (that of the training split); default: sorted
            sub-folder names of ``root``.

    Returns:
        ``(paths, labels, class_names)``.

    Raises:
        ConfigError: If ``root`` has no class folders, an unknown class, or no images.
    """
    if not root.is_dir():
        raise ConfigError(f"image folder {str(root)!r} does not exist")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    names = class_names if class_names is not None else found
    unknown = sorted(set(found) - set(names))
    if not names or unknown:
        raise ConfigError(
            f"{str(root)!r} must hold one folder per class {names!r}, found {found!r}"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise ConfigError(f"no images ({sorted(IMAGE_SUFFIXES)}) under {str(root)!r}")
    return paths, labels, names


class ImageFolderDataset(Dataset[tuple[Tensor, int]]):
    """RGB images resized to a square, normalised, with optional flip/shift augmentation.

    Args:
        paths: Image files.
        labels: Class index of each file.
        image_size: Side in pixels after resizing.
        mean: Per-channel mean (RGB, in [0, 1]).
        std: Per-channel standard deviation.
        augment: Random horizontal flip and a random shift of up to ``image_size // 8``.
    """

    def __init__(
        self,
        paths: list[Path],
        labels: list[int],
        image_size: int = 32,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.25, 0.25, 0.25),
        augment: bool = False,
    ) -> None:
        self.paths = paths
        self.labels = labels
        self.image_size = image_size
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path = self.paths[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"OpenCV cannot decode image {str(path)!r}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        size = self.image_size
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        array = (image.astype(np.float32) / 255.0 - self.mean) / self.std
        if self.augment:
            rng = np.random.default_rng()
            if rng.random() < 0.5:
                array = array[:, ::-1]
            pad = size // 8
            if pad > 0:
                padded = np.pad(array, ((pad, pad), (pad, pad), (0, 0)))
                top, left = rng.integers(0, 2 * pad + 1, size=2)
                array = padded[top : top + size, left : left + size]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), self.labels[index]


class ImageFolderDataModule(L.LightningDataModule):
    """Train/val/test loaders over an ImageFolder root.

    Args:
        root: Dataset root with ``train/`` and optionally ``val/`` and ``test/``.
        image_size: Side in pixels after resizing.
        batch_size: Batch size of every loader.
        num_workers: DataLoader workers.
        val_fraction: Stratified hold-out of ``train`` used when ``val/`` is missing.
        augment: Flip/shift augmentation of the training images.
        seed: Seed of the hold-out split.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        augment: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.augment = augment
        self.seed = seed
        paths, labels, self.class_names = scan_image_folder(self.root / "train")
        if (self.root / "val").is_dir():
            self.train_items = (paths, labels)
            self.val_items = scan_image_folder(self.root / "val", self.class_names)[:2]
        else:
            tr_p, va_p, tr_y, va_y = train_test_split(
                paths, labels, test_size=val_fraction, stratify=labels, random_state=seed
            )
            self.train_items, self.val_items = (list(tr_p), list(tr_y)), (list(va_p), list(va_y))
        test_root = self.root / "test"
        self.test_items = (
            scan_image_folder(test_root, self.class_names)[:2] if test_root.is_dir() else None
        )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def _loader(self, items: tuple[list[Path], list[int]], train: bool) -> DataLoader:
        dataset = ImageFolderDataset(*items, self.image_size, augment=train and self.augment)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=train, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training loader."""
        return self._loader(self.train_items, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation loader."""
        return self._loader(self.val_items, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test loader (the validation split if there is no ``test/`` folder)."""
        return self._loader(self.test_items or self.val_items, train=False)
