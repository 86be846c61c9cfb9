"""Bring your own features: TRIDENT and CLAM files registered and trained on in place.

The foreign files are written here with h5py/torch in each tool's documented layout (the
dataset names and coords attributes those tools write), never with our writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from wsi_ncmi.cli.import_features import main as import_main
from wsi_ncmi.errors import CacheSchemaError, ConfigError, NonFiniteError
from wsi_ncmi.features.foreign import register_foreign_features
from wsi_ncmi.features.store import load_bag, read_feature_attrs
from wsi_ncmi.synth.bags import cycling_manifest, signal_features


def _trident_file(path: Path, features: np.ndarray, coords: np.ndarray) -> Path:
    """TRIDENT: features_<enc>/<slide>.h5 with 'features' and 'coords' (+ patching attrs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=features.astype(np.float32))
        ds = h5.create_dataset("coords", data=coords.astype(np.int64))
        ds.attrs.update(
            {
                "patch_size": 256,
                "patch_size_level0": 512,
                "level0_magnification": 40,
                "target_magnification": 20,
                "overlap": 0,
                "name": path.stem,
            }
        )
    return path


def _clam_h5(path: Path, features: np.ndarray, coords: np.ndarray) -> Path:
    """CLAM: h5_files/<slide>.h5 with 'features' and 'coords' (patch_level, patch_size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=features.astype(np.float32))
        ds = h5.create_dataset("coords", data=coords.astype(np.int64))
        ds.attrs.update({"patch_level": 0, "patch_size": 256})
    return path


def _bag(seed: int, dim: int = 16, label: int = 2) -> tuple[np.ndarray, np.ndarray]:
    coords, features = signal_features(label, np.random.default_rng(seed), dim=dim)
    return features, coords


def test_trident_files_are_registered_in_place_and_read_back_exactly(tmp_path: Path) -> None:
    features, coords = _bag(0)
    src = tmp_path / "20x_256px_0px_overlap" / "features_uni_v1"
    _trident_file(src / "s1.h5", features, coords)
    (written,) = register_foreign_features(src, "trident", tmp_path / "out", "uni")
    assert written == tmp_path / "out" / "features" / "uni" / "s1.h5"
    assert written.stat().st_size < 20_000  # a sidecar, not a copy
    bag = load_bag(written)
    assert torch.equal(bag, torch.from_numpy(features.astype(np.float32)))
    with h5py.File(written, "r") as h5:
        assert np.array_equal(h5["coords"][()], coords)
    attrs = read_feature_attrs(written)
    assert attrs["out_dim"] == 16
    assert attrs["patch_size_px"] == 256
    assert attrs["target_mpp"] == pytest.approx(0.5)  # 10 / 20x
    imported_from = attrs["imported_from"]
    assert isinstance(imported_from, str)
    provenance = json.loads(imported_from)
    assert provenance["format"] == "trident"
    assert provenance["source"] == str((src / "s1.h5").resolve())


def test_clam_h5_and_pt_layouts(tmp_path: Path) -> None:
    features, coords = _bag(1)
    _clam_h5(tmp_path / "clam" / "h5_files" / "s2.h5", features, coords)
    (h5_sidecar,) = register_foreign_features(
        tmp_path / "clam" / "h5_files", "clam", tmp_path / "out", "conch", mpp=0.5
    )
    assert torch.equal(load_bag(h5_sidecar), torch.from_numpy(features.astype(np.float32)))
    assert read_feature_attrs(h5_sidecar)["target_mpp"] == 0.5
    # pt_files/<slide>.pt plus the coords of CLAM's patching step
    (tmp_path / "clam" / "pt_files").mkdir()
    torch.save(torch.from_numpy(features), tmp_path / "clam" / "pt_files" / "s3.pt")
    patches = tmp_path / "patches"
    patches.mkdir()
    with h5py.File(patches / "s3.h5", "w") as h5:
        h5.create_dataset("coords", data=coords)
    with pytest.raises(ConfigError, match="coords_dir"):
        register_foreign_features(tmp_path / "clam" / "pt_files", "clam-pt", tmp_path / "o2", "x")
    with pytest.raises(ConfigError, match="give --mpp"):
        register_foreign_features(
            tmp_path / "clam" / "pt_files", "clam-pt", tmp_path / "o3", "x", coords_dir=patches
        )
    (pt_sidecar,) = register_foreign_features(
        tmp_path / "clam" / "pt_files",
        "clam-pt",
        tmp_path / "out",
        "conch",
        coords_dir=patches,
        mpp=0.5,
    )
    assert torch.equal(load_bag(pt_sidecar), torch.from_numpy(features.astype(np.float32)))


def test_mixed_widths_and_foreign_junk_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "mixed"
    _trident_file(src / "a.h5", *_bag(0, dim=16))
    _trident_file(src / "b.h5", *_bag(1, dim=32))
    with pytest.raises(ConfigError, match=r"mixes feature widths \[16, 32\]"):
        register_foreign_features(src, "trident", tmp_path / "out", "uni")
    register_foreign_features(src, "trident", tmp_path / "out", "uni", slide_ids=["a"])
    only_b = tmp_path / "only_b"
    _trident_file(only_b / "b.h5", *_bag(1, dim=32))
    with pytest.raises(ConfigError, match="already holds 16-wide features"):
        register_foreign_features(only_b, "trident", tmp_path / "out", "uni")
    junk = tmp_path / "junk"
    junk.mkdir()
    with h5py.File(junk / "c.h5", "w") as h5:
        h5.create_dataset("feats", data=np.zeros((3, 4)))
    assert (
        import_main(
            [str(junk), "--format", "trident", "--out_dir", str(tmp_path), "--encoder", "u"]
        )
        == 1
    )
    assert (
        import_main(
            [
                str(tmp_path / "none"),
                "--format",
                "clam",
                "--out_dir",
                str(tmp_path),
                "--encoder",
                "u",
            ]
        )
        == 2
    )


def test_a_moved_source_gives_an_error_naming_it_and_the_fix(tmp_path: Path) -> None:
    src = tmp_path / "trident"
    _trident_file(src / "s1.h5", *_bag(0))
    (sidecar,) = register_foreign_features(src, "trident", tmp_path / "out", "uni")
    (src / "s1.h5").rename(tmp_path / "moved.h5")
    with pytest.raises(CacheSchemaError, match="is gone; put it back, or run wsi-import-features"):
        load_bag(sidecar)


def test_wsi_train_trains_on_registered_trident_features(tmp_path: Path) -> None:
    from wsi_ncmi.train.config import (
        DataConfig,
        ModelConfig,
        ReportConfig,
        SplitConfig,
        TrainConfig,
        TrainerConfig,
    )
    from wsi_ncmi.train.fit import run_training

    rows = cycling_manifest(tmp_path / "manifest.csv", centers=5, patients_per_center=2)
    rng = np.random.default_rng(0)
    src = tmp_path / "job" / "20x_256px_0px_overlap" / "features_uni_v1"
    for row in rows:
        coords, features = signal_features(row.label_index, rng, dim=16)
        _trident_file(src / f"{row.slide_id}.h5", features, coords)
    args = ["--out_dir", str(tmp_path / "feats"), "--encoder", "uni"]
    code = import_main(
        [str(src), "--format", "trident", *args, "--manifest", str(tmp_path / "manifest.csv")]
    )
    assert code == 0
    torch.set_num_threads(1)
    result = run_training(
        TrainConfig(
            out_dir=str(tmp_path / "run"),
            data=DataConfig(
                manifest=str(tmp_path / "manifest.csv"),
                features_root=str(tmp_path / "feats"),
                encoder="uni",
                batch_size=4,
            ),
            split=SplitConfig(kind="fixed", train_centers=[0, 1, 2], test_centers=[3, 4]),
            model=ModelConfig("abmil", {"hidden_dim": 32, "attention_dim": 16}),
            trainer=TrainerConfig(max_epochs=6, patience=0, accelerator="cpu"),
            report=ReportConfig(bootstrap=100, max_heatmaps=1),
        )
    )
    assert result.metrics.pooled.n == 16
    assert result.metrics.pooled.scalar("macro_f1") > 0.5  # the marked classes are learnt
    tiles = json.loads(next((tmp_path / "run" / "fixed" / "qupath").glob("*.geojson")).read_text())
    assert len(tiles["features"]) == 36  # QuPath tiles from the TRIDENT coordinates


def test_our_features_files_open_like_clam_and_trident_outputs(tmp_path: Path) -> None:
    """The other way round: 'features' (N, D) and 'coords' (N, 2), as their loaders read."""
    from wsi_ncmi.synth.bags import write_signal_bag

    path = write_signal_bag(tmp_path, "s1", 3, np.random.default_rng(0), encoder="uni")
    with h5py.File(path, "r") as h5:  # what CLAM's and TRIDENT's slide datasets do
        features, coords = h5["features"][:], h5["coords"][:]
    assert features.shape == (36, 16)
    assert coords.shape == (36, 2)
    assert coords.dtype == np.int64


def test_clam_imports_need_mpp_and_the_right_format(tmp_path: Path) -> None:
    """Issue 24 #11: --mpp for CLAM; the wrong --format is refused by the file's layout."""
    clam = tmp_path / "clam" / "h5_files"
    _clam_h5(clam / "s1.h5", *_bag(0))
    with pytest.raises(ConfigError, match="give --mpp"):
        register_foreign_features(clam, "clam", tmp_path / "out", "conch")
    with pytest.raises(ConfigError, match=r"is a CLAM file.*use --format clam"):
        register_foreign_features(clam, "trident", tmp_path / "out", "conch")
    trident = tmp_path / "job" / "20x_256px_0px_overlap" / "features_uni_v1"
    _trident_file(trident / "s2.h5", *_bag(1))
    with pytest.raises(ConfigError, match=r"is a TRIDENT file.*use --format trident"):
        register_foreign_features(trident, "clam", tmp_path / "out", "uni", mpp=0.5)
    with pytest.raises(ConfigError, match=r"TRIDENT job folder.*features_uni_v1"):
        register_foreign_features(tmp_path / "job", "trident", tmp_path / "out", "uni")
    with pytest.raises(ConfigError, match=r"CLAM features folder.*h5_files"):
        register_foreign_features(tmp_path / "clam", "clam", tmp_path / "out", "c", mpp=0.5)
    code = import_main([str(clam), "--format", "clam", "--out_dir", str(tmp_path / "o"),
                        "--encoder", "c"])  # fmt: skip
    assert code == 2


def test_nan_sources_are_refused_at_registration_and_changes_name_the_source(
    tmp_path: Path,
) -> None:
    """Issue 24 #7: the fix that works is re-export + wsi-import-features, never wsi-extract."""
    features, coords = _bag(0)
    bad = features.copy()
    bad[3, 0] = np.nan
    src = tmp_path / "features_uni"
    _trident_file(src / "nan.h5", bad, coords)
    _trident_file(src / "ok.h5", features, coords)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteError, match=r"nan.h5.*1 of 36 rows.*wsi-import-features again"):
        register_foreign_features(src, "trident", out, "uni")
    assert not (out / "features").exists()  # nothing registered
    (sidecar,) = register_foreign_features(src, "trident", out, "uni", slide_ids=["ok"])
    # The source is replaced after the import by a shorter export (50 rows -> 20).
    _trident_file(src / "ok.h5", features[:20], coords[:20])
    with pytest.raises(CacheSchemaError) as info:
        load_bag(sidecar)
    message = str(info.value)
    assert str((src / "ok.h5").resolve()) in message
    assert "changed since the import" in message
    assert "re-export the features from TRIDENT, then run wsi-import-features again" in message
    assert "re-run wsi-extract on" not in message
