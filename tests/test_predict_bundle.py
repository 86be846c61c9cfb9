"""The model bundle: it reproduces training, and a damaged bundle or a checkpoint is refused.

A real ``run_training`` (real Lightning, real HDF5 bags) writes ``<fold>/model/``; the
bundle, loaded without the checkpoint, must predict the fold's test slides exactly as
the run's own ``predictions.csv`` says (labels equal, probabilities within 1e-6), through
``wsi_ncmi.load_model`` and through ``wsi-predict --features_root``. The slow tier runs
every loss x aggregator.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch
from _train_bags import ENCODER, make_cohort, train_config

from wsi_ncmi import load_model
from wsi_ncmi.cli.export_model import main as export_main
from wsi_ncmi.cli.predict import main as predict_main
from wsi_ncmi.features.store import feature_path, load_bag
from wsi_ncmi.losses import list_losses
from wsi_ncmi.mil import list_aggregators
from wsi_ncmi.predict import BundleError, Ensemble
from wsi_ncmi.train.bundle import (
    BUNDLE_FILES,
    SUMS_FILE,
    read_manifest_json,
    verify_bundle,
    write_bundle,
)
from wsi_ncmi.train.fit import run_training
from wsi_ncmi.train.splits import make_splits

MATRIX = [
    pytest.param(loss, model, marks=() if (loss, model) == ("ce", "abmil") else pytest.mark.slow)
    for loss in list_losses()
    for model in list_aggregators()
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    make_cohort(root, centers=3, patients_per_center=3, slides_per_patient=4, seed=3)
    return root


@pytest.fixture(scope="module")
def trained(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a CE + ABMIL fold (its bundle: ``fixed/model``)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    run_training(train_config(cohort, out))
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_reproduces(run: Path, bundle: Path, cohort: Path, out: Path) -> None:
    expected = {r["slide_id"]: r for r in _rows(run / "predictions.csv")}
    assert expected, "the run predicted no test slides"
    model = load_model(bundle)
    classes = model.classes
    for slide_id, row in expected.items():
        p = model.predict_bag(load_bag(feature_path(cohort, ENCODER, slide_id)))
        assert p.predicted == row["pred_label"]
        assert p.predicted_default == row["pred_label_default"]
        diff = max(
            abs(float(row[f"prob_{c}"]) - v) for c, v in zip(classes, p.probabilities, strict=True)
        )
        assert diff <= 1e-6, (slide_id, diff)
    # The same through the command, on the test slides' features.
    code = predict_main(
        [
            "--models",
            str(bundle),
            "--features_root",
            str(cohort),
            "--out_dir",
            str(out),
            *expected,
            "--geojson_tiles",
            "5",
        ]
    )
    assert code == 0
    got = {r["slide_id"]: r for r in _rows(out / "predictions.csv")}
    assert set(got) == set(expected)
    for slide_id, row in expected.items():
        assert got[slide_id]["pred_label"] == row["pred_label"]
        for c in classes:
            assert abs(float(got[slide_id][f"prob_{c}"]) - float(row[f"prob_{c}"])) <= 1e-6


@pytest.mark.parametrize(("loss", "model"), MATRIX)
def test_bundle_reproduces_the_training_runs_test_predictions(
    cohort: Path, trained: Path, tmp_path: Path, loss: str, model: str
) -> None:
    if (loss, model) == ("ce", "abmil"):
        run = trained
    else:
        run = tmp_path / "run"
        run_training(train_config(cohort, run, loss, model))
    _assert_reproduces(run, run / "fixed" / "model", cohort, tmp_path / "pred")


def test_bundle_records_the_contract(trained: Path) -> None:
    bundle = trained / "fixed" / "model"
    manifest = read_manifest_json(bundle, verify_bundle(bundle))
    assert manifest["classes"] == ["negative", "itc", "micro", "macro"]
    assert manifest["aggregator"]["name"] == "abmil"
    assert manifest["aggregator"]["kwargs"]["in_dim"] == 16
    assert manifest["loss"] == {"name": "ce", "kwargs": {"num_classes": 4}}
    assert manifest["encoder"]["name"] == ENCODER
    assert manifest["tiling"]["target_mpp"] == 1.0
    assert manifest["tiling"]["patch_size_px"] == 64
    assert manifest["features"] == {"slide_norm": "none", "standardize": True}
    assert manifest["decision"]["default"] == "calibrated"
    assert len(manifest["decision"]["rule"]["log_prior"]) == 4
    training = manifest["training"]
    assert training["hospitals"] == [0, 1]
    assert training["test_hospitals"] == [2]
    assert training["slides"] == {"train": 12, "val": 12, "test": 12}
    assert len(training["manifest_sha256"]) == 64
    assert training["selection"]["monitor"] == "val/macro_f1_calibrated"
    assert "val/macro_f1_calibrated" in training["selection"]["validation"]
    assert manifest["created_by"]["package_version"]
    assert set(manifest["files"]) == {"weights.safetensors", "stats.safetensors"}


@pytest.mark.parametrize("name", [*BUNDLE_FILES, SUMS_FILE])
def test_a_bundle_edited_by_one_byte_is_refused(trained: Path, tmp_path: Path, name: str) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(trained / "fixed" / "model", bundle)
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / name).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="damaged or was edited"):
        load_model(bundle)
    out = tmp_path / "out"
    code = predict_main(
        ["--models", str(bundle), "--features_root", str(trained), "--out_dir", str(out)]
    )
    assert code == 2


def test_a_truncated_or_incomplete_bundle_is_refused(trained: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "model"
    shutil.copytree(trained / "fixed" / "model", bundle)
    weights = bundle / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"weights\.safetensors"):
        load_model(bundle)
    weights.unlink()
    with pytest.raises(BundleError, match="lacks"):
        load_model(bundle)


def test_a_checkpoint_is_refused_with_the_conversion_command(
    trained: Path, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = next((trained / "fixed" / "checkpoints").glob("best-*.ckpt"))
    code = predict_main(
        ["--models", str(ckpt), "--features_root", str(cohort), "--out_dir", str(tmp_path / "out")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pickle" in err
    assert f"wsi-export-model {ckpt}" in err
    with pytest.raises(BundleError):
        load_model(ckpt)


def test_export_model_converts_a_trusted_checkpoint(
    trained: Path, cohort: Path, tmp_path: Path
) -> None:
    ckpt = next((trained / "fixed" / "checkpoints").glob("best-*.ckpt"))
    assert export_main([str(ckpt), "--out_dir", str(tmp_path / "exported")]) == 0
    _assert_reproduces(trained, tmp_path / "exported", cohort, tmp_path / "pred")


def _altered_features(cohort: Path, root: Path, **attrs: Any) -> Path:
    source = feature_path(cohort, ENCODER, "patient_200_node_0")
    target = feature_path(root, ENCODER, "patient_200_node_0")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    with h5py.File(target, "r+") as h5:
        for key, value in attrs.items():
            h5.attrs[key] = value
    return root


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"encoder": "another-encoder"}, "encoder 'another-encoder'"),
        ({"target_mpp": 0.5}, "0.5 µm/px, the model needs 1"),
        ({"patch_size_px": 128}, "patches of 128 px, the model needs 64 px"),
    ],
)
def test_features_that_do_not_fit_the_model_give_rc_2(
    trained: Path,
    cohort: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    attrs: dict[str, Any],
    reason: str,
) -> None:
    root = _altered_features(cohort, tmp_path / "features", **attrs)
    code = predict_main(
        [
            "--models",
            str(trained / "fixed" / "model"),
            "--features_root",
            str(root),
            "--out_dir",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert reason in capsys.readouterr().err


def test_another_encoder_identity_gives_rc_2(
    trained: Path, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = trained / "fixed" / "model"
    contents = verify_bundle(bundle)
    manifest = read_manifest_json(bundle, contents)
    manifest["encoder"]["identity_hash"] = "0123456789abcdef"
    model = load_model(bundle)
    stats = {"ood_mean": model.ood[0], "ood_std": model.ood[1]}
    stats |= dict(
        zip(("standardize_mean", "standardize_std"), model.standardize or (), strict=True)
    )
    rehashed = write_bundle(tmp_path / "model", manifest, model.module.state_dict(), stats)
    root = _altered_features(cohort, tmp_path / "features", encoder_hash="fedcba9876543210")
    out = tmp_path / "out"
    code = predict_main(
        ["--models", str(rehashed), "--features_root", str(root), "--out_dir", str(out)]
    )
    assert code == 2
    assert "encoder identity hash 'fedcba9876543210'" in capsys.readouterr().err


def test_an_ensemble_of_one_model_twice_predicts_like_the_model(
    trained: Path, cohort: Path
) -> None:
    model = load_model(trained / "fixed" / "model")
    ensemble = Ensemble([model, load_model(trained / "fixed" / "model")])
    bag = load_bag(feature_path(cohort, ENCODER, "patient_200_node_1"))
    single, mean = model.predict_bag(bag), ensemble.predict_bag(bag)
    assert mean.predicted == single.predicted
    assert (
        max(abs(a - b) for a, b in zip(mean.probabilities, single.probabilities, strict=True))
        < 1e-7
    )


def test_split_none_trains_on_every_slide_with_a_patient_validation_part(cohort: Path) -> None:
    from wsi_ncmi.manifest import read_manifest

    rows = read_manifest(cohort / "manifest.csv")
    fold = make_splits(rows, "none", seed=0, val_fraction=0.25).folds[0]
    assert fold.name == "all"
    assert fold.test == ()
    assert set(fold.train) | set(fold.val) == {r.slide_id for r in rows}
    patient = {r.slide_id: r.patient_id for r in rows}
    assert not {patient[s] for s in fold.train} & {patient[s] for s in fold.val}
    assert fold.val


def test_imported_features_are_predicted_like_the_native_ones(
    trained: Path, cohort: Path, tmp_path: Path
) -> None:
    from wsi_ncmi.features.foreign import register_foreign_features

    slides = ["patient_200_node_0", "patient_201_node_2"]
    source = tmp_path / "clam" / "h5_files"
    source.mkdir(parents=True)
    for slide_id in slides:
        with h5py.File(feature_path(cohort, ENCODER, slide_id), "r") as native:
            features, coords = native["features"][()], native["coords"][()]
        with h5py.File(source / f"{slide_id}.h5", "w") as h5:
            h5.create_dataset("features", data=features.astype("float32"))
            h5.create_dataset("coords", data=coords).attrs.update(
                {"patch_size": 64, "patch_level": 0}
            )
    register_foreign_features(source, "clam", tmp_path / "imported", ENCODER, mpp=1.0)
    bundle = str(trained / "fixed" / "model")
    for root, out in ((cohort, "native"), (tmp_path / "imported", "imported")):
        argv = ["--models", bundle, "--features_root", str(root), *slides]
        assert predict_main([*argv, "--out_dir", str(tmp_path / out)]) == 0
    native, imported = (_rows(tmp_path / out / "predictions.csv") for out in ("native", "imported"))
    assert [r["slide_id"] for r in imported] == slides
    for a, b in zip(native, imported, strict=True):
        assert {k: v for k, v in a.items() if k != "ood_score"} == {
            k: v for k, v in b.items() if k != "ood_score"
        }


def test_wsi_train_split_none_writes_the_final_model(cohort: Path, tmp_path: Path) -> None:
    from wsi_ncmi.cli.train import main as train_main

    argv = [
        "--out_dir", str(tmp_path / "final"), "--seed", "1", "--split.kind", "none",
        "--split.val_fraction", "0.25", "--data.manifest", str(cohort / "manifest.csv"),
        "--data.features_root", str(cohort), "--data.encoder", ENCODER,
        "--data.max_patches_train", "20", "--data.batch_size", "3", "--model.name", "abmil",
        "--model.kwargs", '{"hidden_dim": 16, "attention_dim": 8}', "--loss.name", "ce",
        "--trainer.max_epochs", "2", "--trainer.patience", "0", "--trainer.accelerator", "cpu",
        "--report.bootstrap", "10", "--report.max_heatmaps", "0",
    ]  # fmt: skip
    assert train_main(argv) == 0
    model = load_model(tmp_path / "final" / "all" / "model")
    training = model.manifest["training"]
    assert training["fold"] == "all"
    assert training["slides"]["test"] == 0
    assert training["slides"]["train"] + training["slides"]["val"] == 36
    assert training["hospitals"] == [0, 1, 2]
    assert _rows(tmp_path / "final" / "predictions.csv") == []
    bag = load_bag(feature_path(cohort, ENCODER, "patient_000_node_0"))
    assert model.predict_bag(bag).predicted in model.classes


@pytest.mark.parametrize(
    ("section", "key", "value", "reason"),
    [
        ("encoder", "name", "another-encoder", "encoder name 'another-encoder'"),
        ("tiling", "target_mpp", 0.5, "target_mpp 0.5 vs 1.0"),
    ],
)
def test_an_ensemble_of_disagreeing_bundles_gives_rc_2(
    trained: Path, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    section: str, key: str, value: Any, reason: str,
) -> None:  # fmt: skip
    bundle = trained / "fixed" / "model"
    manifest = read_manifest_json(bundle, verify_bundle(bundle))
    manifest[section][key] = value
    model = load_model(bundle)
    stats = {"ood_mean": model.ood[0], "ood_std": model.ood[1]}
    stats |= dict(
        zip(("standardize_mean", "standardize_std"), model.standardize or (), strict=True)
    )
    other = write_bundle(tmp_path / "other", manifest, model.module.state_dict(), stats)
    argv = ["--models", str(bundle), str(other), "--features_root", str(cohort)]
    assert predict_main([*argv, "--out_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "must share classes and encoder" in err
    assert reason in err
