"""The features HDF5 store, the bag loader and the CLAM/TRIDENT coords importers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.errors import CacheSchemaError
from wsi_ncmi.features import feature_path, load_bag, read_feature_attrs, read_features
from wsi_ncmi.features.store import FeatureFileWriter, is_complete
from wsi_ncmi.tiling.imports import import_external_coords

ATTRS = {
    "slide_id": "s",
    "encoder": "enc",
    "encoder_spec": {"name": "enc"},
    "coords_params_hash": "abc",
    "extraction_hash": "h1",
}


def _write(path: Path, n: int = 10, dim: int = 8, dtype: str = "float16") -> np.ndarray:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    valid = np.ones(n, bool)
    valid[3] = False
    writer = FeatureFileWriter(path, np.arange(2 * n).reshape(n, 2), dim, dtype, ATTRS)
    writer.write_rows(0, feats[:4], valid[:4])
    writer.write_rows(4, feats[4:], valid[4:])
    writer.finish()
    return feats


def test_roundtrip_and_load_bag(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    feats = _write(path)
    bag = read_features(path)
    assert bag.features.dtype == np.float16
    assert bag.features.shape == (10, 8)
    assert not bag.valid[3]
    assert not bag.features[3].any()
    np.testing.assert_allclose(bag.features[4:], feats[4:], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(bag.coords[:, 0], np.arange(0, 20, 2))
    assert bag.attrs["n_invalid"] == 1
    assert bag.attrs["encoder_spec"] == {"name": "enc"}
    with h5py.File(path) as h5:
        assert h5["features"].chunks is None  # contiguous, never one row per chunk
    tensor = load_bag(path)
    assert isinstance(tensor, torch.Tensor)
    assert tensor.shape == (9, 8)
    assert load_bag(path, valid_only=False).shape == (10, 8)
    assert is_complete(path, extraction_hash="h1", n_rows=10)
    assert not is_complete(path, extraction_hash="other", n_rows=10)
    with pytest.raises(CacheSchemaError, match="expected 'x'"):
        load_bag(path, expect_encoder="x")
    with pytest.raises(CacheSchemaError, match="dim"):
        load_bag(path, expect_dim=4)


def test_load_bag_validates_an_unchanged_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch after epoch, a bag is read without re-opening it through HDF5; a file
    replaced since (atomic rename: a new inode) is validated again."""
    import os

    from wsi_ncmi.features import store

    opens: list[Path] = []
    checked = store._open_checked

    def counting(path: Path) -> h5py.File:
        opens.append(path)
        return checked(path)

    monkeypatch.setattr(store, "_open_checked", counting)
    path = tmp_path / "s.h5"
    feats = _write(path)
    first = load_bag(path)
    again = load_bag(path)
    assert len(opens) == 1
    assert torch.equal(first, again)
    assert first.shape == (9, 8)
    again[0, 0] = 99.0  # each load returns its own array
    assert load_bag(path)[0, 0] != 99.0
    assert load_bag(path, valid_only=False).shape == (10, 8)  # another key: one more open
    assert len(opens) == 2
    with pytest.raises(CacheSchemaError, match="expected 'x'"):
        load_bag(path, expect_encoder="x")  # checked against the remembered layout
    with pytest.raises(CacheSchemaError, match="dim"):
        load_bag(path, expect_dim=4)
    assert len(opens) == 2
    fresh = tmp_path / "fresh.h5"
    _write(fresh, n=12)
    os.replace(fresh, path)
    assert load_bag(path).shape == (11, 8)
    assert len(opens) == 3
    np.testing.assert_allclose(first[3:].numpy(), feats[4:], rtol=1e-3, atol=1e-3)


def test_schema_is_enforced(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    _write(path)
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = 0
    with pytest.raises(CacheSchemaError, match="schema version"):
        load_bag(path)
    assert not is_complete(path, extraction_hash="h1", n_rows=10)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheSchemaError):
        read_feature_attrs(tmp_path / "junk.h5")
    writer = FeatureFileWriter(tmp_path / "p.h5", np.zeros((4, 2)), 3, "float16", ATTRS)
    writer.write_rows(0, np.ones((2, 3), np.float32), np.ones(2, bool))
    with pytest.raises(CacheSchemaError, match="only 2 of 4"):
        writer.finish()
    writer.close()
    with pytest.raises(CacheSchemaError, match="overflow"):
        FeatureFileWriter(tmp_path / "o.h5", np.zeros((1, 2)), 1, "float16", ATTRS).write_rows(
            0, np.full((1, 1), 1e6, np.float32), np.ones(1, bool)
        )


def test_feature_path_layout(tmp_path: Path) -> None:
    assert feature_path(tmp_path, "timm:vit_small", "a") == (
        tmp_path / "features" / "timm_vit_small" / "a.h5"
    )


@pytest.mark.parametrize("style", ["clam", "trident"])
def test_import_external_coords(tmp_path: Path, style: str) -> None:
    slide = write_pyramid_tiff(tmp_path / "s.tif", tissue_image(256, 256), tile=64)
    src = tmp_path / f"{style}.h5"
    coords = np.array([[0, 0], [128, 0], [0, 128]], np.int64)
    with h5py.File(src, "w") as h5:
        ds = h5.create_dataset("coords", data=coords)
        if style == "clam":
            ds.attrs["patch_level"] = 1
            ds.attrs["patch_size"] = 64
        else:
            ds.attrs["patch_size"] = 64
            ds.attrs["patch_size_level0"] = 128
    cf = import_external_coords(src, slide, tmp_path / "out" / "s.h5", backend="tiffslide")
    np.testing.assert_array_equal(cf.coords, coords)
    assert cf.attrs["read_level"] == 1
    assert cf.attrs["read_size_px"] == 64
    assert cf.attrs["target_mpp"] == pytest.approx(1.0)
    assert cf.attrs["segmentation"]["imported_from"] == style
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5.create_dataset("coords", data=coords)
    with pytest.raises(CacheSchemaError, match="CLAM"):
        import_external_coords(tmp_path / "bad.h5", slide, tmp_path / "o2.h5")
