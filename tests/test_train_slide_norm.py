"""Per-slide robust standardisation (``data.slide_norm: robust``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _train_bags import make_cohort

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.train.data import BagDataModule, BagDataset
from wsi_ncmi.train.slide_norm import apply_slide_norm, robust_standardize
from wsi_ncmi.train.splits import make_splits, save_splits


def _oracle(x: np.ndarray) -> np.ndarray:
    """Median/MAD z-scores written out with numpy, column by column."""
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[1]):
        col = x[:, j].astype(np.float64)
        med = np.median(col)
        spread = 1.4826 * np.median(np.abs(col - med))
        if spread <= 1e-12:
            spread = 1.2533 * np.mean(np.abs(col - med))
        if spread <= 1e-12:
            spread = 1.0
        out[:, j] = (col - med) / spread
    return out


def test_matches_a_numpy_oracle_with_mad_fallbacks() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(101, 4))  # odd N: torch and numpy medians agree
    x[:, 1] = 1.0
    x[:7, 1] = 0.5  # MAD 0 (constant on most patches): mean-deviation fallback
    x[:, 2] = 5.0  # constant: stays 0
    got = robust_standardize(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(got, _oracle(x), rtol=1e-5, atol=1e-5)
    assert np.all(got[:, 2] == 0.0)
    assert np.all(np.isfinite(got))


def test_cancels_a_per_slide_stain_shift_but_keeps_outliers() -> None:
    rng = np.random.default_rng(1)
    slide = rng.normal(0.0, 1.0, size=(201, 6))
    slide[:3] += 8.0  # a small tumour cluster
    shifted = slide * rng.uniform(0.5, 2.0, size=6) + rng.uniform(-5, 5, size=6)
    a = robust_standardize(torch.from_numpy(slide))
    b = robust_standardize(torch.from_numpy(shifted))
    assert torch.allclose(a, b, atol=1e-4)
    assert bool((a[:3].mean(dim=1) > 4).all())


def test_none_is_the_identity_and_unknown_modes_fail() -> None:
    bag = torch.randn(5, 3).half()
    assert apply_slide_norm(bag, "none") is bag
    assert apply_slide_norm(bag, "robust").dtype == torch.float32
    with pytest.raises(ValueError, match="slide_norm"):
        apply_slide_norm(bag, "zscore")
    with pytest.raises(ConfigError, match="slide_norm"):
        BagDataset([], [], slide_norm="zscore")


def test_datamodule_normalises_every_part_before_standardising(tmp_path: Path) -> None:
    manifest, rows = make_cohort(tmp_path, centers=3, patients_per_center=2)
    splits = save_splits(make_splits(rows, "loho"), tmp_path / "splits.json")
    from _train_bags import ENCODER

    dm = BagDataModule(
        str(manifest), str(tmp_path), ENCODER, str(splits), 0, slide_norm="robust", standardize=True
    )
    dm.setup("fit")
    plain = BagDataModule(str(manifest), str(tmp_path), ENCODER, str(splits), 0)
    plain.setup("fit")
    for part in ("train", "val", "test"):
        raw = plain.datasets[part].bag(0)
        normed = dm.datasets[part].bag(0)
        assert torch.allclose(normed, robust_standardize(raw))
        median = normed.median(dim=0).values
        assert torch.allclose(median, torch.zeros_like(median), atol=1e-6)
    # The training moments are those of the normalised bags.
    train = torch.cat(
        [dm.datasets["train"][i]["features"] for i in range(len(dm.datasets["train"]))]
    )
    assert torch.allclose(
        train.double().mean(dim=0), torch.zeros(16, dtype=torch.float64), atol=1e-4
    )
