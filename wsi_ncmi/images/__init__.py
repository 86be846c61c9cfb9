"""Generic image classification with any registered loss (the paper's natural-image side)."""

from wsi_ncmi.images.data import ImageFolderDataModule, ImageFolderDataset, scan_image_folder
from wsi_ncmi.images.fit import (
    FitResult,
    ImageTrainConfig,
    ImageTrainResult,
    fit_classifier,
    train_images,
)
from wsi_ncmi.images.models import MLP, SmallCNN, build_backbone
from wsi_ncmi.images.module import LossClassifier

__all__ = [
    "MLP",
    "FitResult",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ImageTrainConfig",
    "ImageTrainResult",
    "LossClassifier",
    "SmallCNN",
    "build_backbone",
    "fit_classifier",
    "scan_image_folder",
    "train_images",
]
