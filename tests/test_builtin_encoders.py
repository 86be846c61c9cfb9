"""The built-in ``random-cnn`` baseline tells synthetic tumour from node across hospitals.

Two ``demo``-preset macro-metastasis slides of hospitals with very different stains are
rendered in memory (no TIFF); patches fully inside the tumour polygon and fully outside it
(inside the tissue) are encoded. A nearest-class-mean rule learnt on one hospital's
patches, threshold included, must classify the other hospital's patches: ranking them
within a hospital is not enough (version 1 of the encoder ranked them well but called
every patch of some hospitals tumour). That needs features that follow morphology rather
than stain intensity: ``random-cnn`` standardises each patch's channels first.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_ncmi.features.encoders import build_encoder
from wsi_ncmi.features.encoders.builtin import standardise_patches
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.synth import get_preset, plan_slide
from wsi_ncmi.synth.generate import render_strips
from wsi_ncmi.synth.geometry import points_in_polygon

PATCH = 128


def _patches(row: ManifestRow, max_per_class: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """``(N, PATCH, PATCH, 3)`` uint8 patches and ``(N,)`` tumour flags of one slide."""
    plan = plan_slide(row, get_preset("demo"), seed=3)
    image = np.concatenate(list(render_strips(plan)))
    offsets = np.array([[x, y] for x in (0, PATCH / 2, PATCH) for y in (0, PATCH / 2, PATCH)])
    tumour, normal = [], []
    height, width = image.shape[:2]
    for y in range(0, height - PATCH, PATCH // 2):
        for x in range(0, width - PATCH, PATCH // 2):
            pts = np.array([x, y], dtype=np.float64) + offsets
            in_tumour = np.zeros(len(pts), bool)
            for poly in plan.tumour.regions:
                in_tumour |= points_in_polygon(pts, poly)
            in_tissue = np.zeros(len(pts), bool)
            for poly in plan.tissue.sections:
                in_tissue |= points_in_polygon(pts, poly)
            patch = image[y : y + PATCH, x : x + PATCH]
            if in_tumour.all():
                tumour.append(patch)
            elif in_tissue.all() and not in_tumour.any():
                normal.append(patch)
    rng = np.random.default_rng(0)
    picked_t = rng.permutation(len(tumour))[:max_per_class]
    picked_n = rng.permutation(len(normal))[:max_per_class]
    assert len(picked_t) >= 10, "the macro slide should have tumour-only patches"
    patches = np.stack([tumour[i] for i in picked_t] + [normal[i] for i in picked_n])
    flags = np.r_[np.ones(len(picked_t), bool), np.zeros(len(picked_n), bool)]
    return patches, flags


def _cross_hospital_balanced_accuracy(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> float:
    """Nearest class mean in the training hospital's standardised feature space."""
    x_train, y_train = train
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    z_train = (x_train - mean) / std
    centroids = np.stack([z_train[~y_train].mean(axis=0), z_train[y_train].mean(axis=0)])
    x_test, y_test = test
    # Standardised with the *training* hospital's statistics: no test-time adaptation.
    z_test = (x_test - mean) / std
    called = ((z_test[:, None] - centroids[None]) ** 2).sum(-1).argmin(1).astype(bool)
    return float(
        ((called & y_test).sum() / y_test.sum() + (~called & ~y_test).sum() / (~y_test).sum()) / 2
    )


@pytest.fixture(scope="module")
def slides() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    # Center 2: weak hematoxylin, strong eosin; center 1: strong hematoxylin, weak eosin.
    rows = {
        1: ManifestRow("patient_020_node_0", "patient_020", 1, "macro"),
        2: ManifestRow("patient_040_node_0", "patient_040", 2, "macro"),
    }
    return {center: _patches(row) for center, row in rows.items()}


def test_standardise_patches_ignores_channel_gain_and_offset() -> None:
    x = torch.rand(2, 3, 16, 16)
    gain = torch.tensor([0.5, 2.0, 1.3]).view(1, 3, 1, 1)
    shifted = standardise_patches(x * gain + 0.2)
    assert torch.allclose(shifted, standardise_patches(x), atol=1e-2)
    assert torch.allclose(shifted.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)


def test_random_cnn_tumour_rule_transfers_across_hospitals(
    slides: dict[int, tuple[np.ndarray, np.ndarray]],
) -> None:
    encoder = build_encoder("random-cnn").eval()
    feats = {}
    with torch.no_grad():
        for center, (patches, flags) in slides.items():
            feats[center] = (encoder(torch.from_numpy(patches)).double().numpy(), flags)
    for train, test in ((1, 2), (2, 1)):
        accuracy = _cross_hospital_balanced_accuracy(feats[train], feats[test])
        assert accuracy > 0.9, (train, test, accuracy)
