"""BagDataModule: fp16 bags, sub-sampling, missing files, NaN features, balanced sampling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _train_bags import ENCODER, make_cohort, write_bag

from wsi_ncmi.errors import MissingFeaturesError, NonFiniteError
from wsi_ncmi.features.store import feature_path
from wsi_ncmi.train.batching import EpochSampler
from wsi_ncmi.train.data import BagDataModule, BagDataset
from wsi_ncmi.train.splits import make_splits, save_splits


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, Path]:
    manifest, rows = make_cohort(tmp_path, centers=3, patients_per_center=2)
    splits = save_splits(make_splits(rows, "loho"), tmp_path / "splits.json")
    return manifest, splits


def _datamodule(root: Path, manifest: Path, splits: Path, **kwargs: Any) -> BagDataModule:
    return BagDataModule(str(manifest), str(root), ENCODER, str(splits), 0, **kwargs)


def test_bags_stay_float16_and_eval_bags_are_full(cohort: tuple[Path, Path]) -> None:
    manifest, splits = cohort
    dm = _datamodule(manifest.parent, manifest, splits, max_patches_train=10)
    dm.setup("fit")
    train = next(iter(dm.train_dataloader()))
    assert train["features"].dtype == torch.float16
    assert train["features"].shape == (1, 10, 16)
    val = next(iter(dm.val_dataloader()))
    assert val["features"].shape == (1, 36, 16)
    test = next(iter(dm.test_dataloader()))
    assert test["features"].shape == (1, 36, 16)
    assert dm.fold is not None
    assert dm.fold.test_centers == (0,)
    assert sum(dm.class_counts()) == len(dm.rows["train"])


def test_subsample_depends_on_epoch_and_index_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = [write_bag(tmp_path, f"s{i}", 1, rng) for i in range(2)]
    data = BagDataset(paths, [1, 1], max_patches=5, seed=3)
    a, b = data[(0, 1)]["features"], data[(0, 1)]["features"]
    assert torch.equal(a, b)
    assert not torch.equal(a, data[(0, 2)]["features"])
    assert data[0]["features"].shape[0] == 36  # plain index: full bag


def test_ram_cache_returns_the_loaded_bag(tmp_path: Path) -> None:
    path = write_bag(tmp_path, "s", 0, np.random.default_rng(0))
    data = BagDataset([path], [0], cache_in_ram=True)
    assert data.bag(0) is data.bag(0)


def test_missing_features_are_an_error_or_excluded_explicitly(cohort: tuple[Path, Path]) -> None:
    manifest, splits = cohort
    root = manifest.parent
    gone = feature_path(root, ENCODER, "patient_100_node_2")
    gone.unlink()
    with pytest.raises(MissingFeaturesError, match=r"patient_100_node_2.*missing='exclude'"):
        _datamodule(root, manifest, splits).setup("fit")
    dm = _datamodule(root, manifest, splits, missing="exclude")
    with pytest.warns(UserWarning, match="excluded"):
        dm.setup("fit")
    assert dm.excluded == ["patient_100_node_2"]
    assert "patient_100_node_2" not in {r.slide_id for part in dm.rows.values() for r in part}


def test_non_finite_features_raise_naming_the_file(tmp_path: Path) -> None:
    path = write_bag(tmp_path, "bad", 2, np.random.default_rng(0), nan=True)
    with pytest.raises(NonFiniteError, match=r"bad\.h5.*NaN/inf features in 1 of 36 rows"):
        BagDataset([path], [2])[0]


def test_epoch_sampler_is_seeded_and_balanced() -> None:
    labels = [0] * 90 + [1] * 10
    sampler = EpochSampler(labels, seed=1)
    sampler.set_epoch(3)
    first = list(sampler)
    assert first == list(sampler)
    assert sorted(i for i, _ in first) == list(range(100))
    assert {e for _, e in first} == {3}
    sampler.set_epoch(4)
    assert list(sampler) != first
    balanced = EpochSampler(labels, seed=1, balanced=True)
    counts: Counter[int] = Counter()
    for epoch in range(20):
        balanced.set_epoch(epoch)
        counts.update(labels[i] for i, _ in balanced)
    assert 0.4 < counts[1] / sum(counts.values()) < 0.6


def test_standardize_uses_training_statistics_only(cohort: tuple[Path, Path]) -> None:
    manifest, splits = cohort
    dm = _datamodule(manifest.parent, manifest, splits, standardize=True)
    dm.setup("fit")
    train = torch.cat(
        [dm.datasets["train"].bag(i).double() for i in range(len(dm.datasets["train"]))]
    )
    mean, std = train.mean(dim=0), train.std(dim=0, unbiased=False)
    standardized = torch.cat(
        [dm.datasets["train"][i]["features"].double() for i in range(len(dm.datasets["train"]))]
    )
    assert torch.allclose(standardized.mean(dim=0), torch.zeros(16, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(
        standardized.std(dim=0, unbiased=False), torch.ones(16, dtype=torch.float64), atol=1e-3
    )
    # Validation bags are shifted by the *training* moments, not their own.
    raw_val = dm.datasets["val"].bag(0).double()
    val = dm.datasets["val"][0]["features"].double()
    assert torch.allclose(val, (raw_val - mean) / std, atol=1e-3)
    assert val.dtype == torch.float64


def test_training_batches_pad_bags_and_eval_stays_one_bag(tmp_path: Path) -> None:
    """B bags of different lengths per step; at most B x max_patches_train patches."""
    from _train_bags import make_manifest

    rows = make_manifest(tmp_path / "manifest.csv", centers=3, patients_per_center=2)
    rng = np.random.default_rng(0)
    for k, row in enumerate(rows):
        write_bag(tmp_path, row.slide_id, row.label_index, rng, side=3 + k % 4)
    splits = save_splits(make_splits(rows, "loho"), tmp_path / "splits.json")
    dm = _datamodule(
        tmp_path, tmp_path / "manifest.csv", splits, batch_size=3, max_patches_train=20
    )
    dm.setup("fit")
    n_train = len(dm.rows["train"])
    batches = list(dm.train_dataloader())
    assert len(batches) == -(-n_train // 3)
    assert sum(int(b["target"].shape[0]) for b in batches) == n_train
    lengths = set()
    for batch in batches:
        b, n, _d = batch["features"].shape
        assert batch["mask"].shape == (b, n)
        assert n <= 20
        lengths |= set(batch["mask"].sum(dim=1).tolist())
        # padding rows are zeros and masked out
        assert float(batch["features"][~batch["mask"]].abs().sum()) == 0.0
    assert len(lengths) > 1  # bags really differ in length
    assert next(iter(dm.val_dataloader()))["features"].shape[0] == 1


def test_batch_size_must_be_positive(cohort: tuple[Path, Path]) -> None:
    from wsi_ncmi.errors import ConfigError

    manifest, splits = cohort
    with pytest.raises(ConfigError, match="batch_size"):
        _datamodule(manifest.parent, manifest, splits, batch_size=0)


def test_one_bag_batches_are_exactly_the_unbatched_step(tmp_path: Path) -> None:
    """B = 1 reproduces the one-bag-per-step trainer: same tensor, no mask reaches the model."""
    from wsi_ncmi.losses import build_loss
    from wsi_ncmi.mil import build_aggregator
    from wsi_ncmi.train.batching import collate_bags
    from wsi_ncmi.train.module import MILClassifier

    path = write_bag(tmp_path, "s", 2, np.random.default_rng(0))
    item = BagDataset([path], [2])[0]
    batch = collate_bags([item])
    assert torch.equal(batch["features"], item["features"].unsqueeze(0))
    assert bool(batch["mask"].all())
    torch.manual_seed(0)
    model = MILClassifier(
        build_aggregator("abmil", in_dim=16, num_classes=4, hidden_dim=8, attention_dim=4),
        build_loss("ce", num_classes=4),
        4,
    ).eval()
    with_mask = model(batch["features"], batch["mask"])
    without = model(item["features"].unsqueeze(0))
    assert torch.equal(with_mask.logits, without.logits)
    assert torch.equal(with_mask.attention, without.attention)
