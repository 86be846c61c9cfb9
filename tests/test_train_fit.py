"""End-to-end ``run_training`` and ``wsi-train`` on generated bags (real Lightning Trainer, CPU).

One uninterrupted reference run is shared by the tests: it must learn (macro-F1 ≥ 0.9),
write every report, be reproduced exactly by a second run with the same seed, and be
reproduced exactly by a run that is killed after two epochs and resumed.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from _train_bags import ENCODER, make_cohort

from wsi_ncmi.cli.train import main
from wsi_ncmi.quiet import lightning_loop
from wsi_ncmi.train.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ReportConfig,
    SplitConfig,
    TrainConfig,
    TrainerConfig,
)
from wsi_ncmi.train.fit import run_training
from wsi_ncmi.train.results import TrainingResult

EPOCHS = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    make_cohort(root, centers=5, patients_per_center=2)
    return root


def _config(root: Path, out: Path, **trainer: Any) -> TrainConfig:
    return TrainConfig(
        out_dir=str(out),
        seed=0,
        data=DataConfig(
            manifest=str(root / "manifest.csv"),
            features_root=str(root),
            encoder=ENCODER,
            slide_dir=str(root / "slides"),
            max_patches_train=30,
            batch_size=1,
        ),
        split=SplitConfig(kind="fixed", train_centers=[0, 1], val_centers=[2], test_centers=[3, 4]),
        model=ModelConfig("abmil", {"hidden_dim": 32, "attention_dim": 16, "dropout": 0.1}),
        loss=LossConfig("ncmi", {}),
        optim=OptimConfig(lr=2e-2),
        trainer=TrainerConfig(
            **{"max_epochs": EPOCHS, "patience": 0, "accelerator": "cpu", **trainer}
        ),
        report=ReportConfig(bootstrap=100, attention_top_k=3, max_heatmaps=2),
    )


@pytest.fixture(scope="module")
def reference(
    cohort: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainingResult]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference")
    return out, run_training(_config(cohort, out))


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _predictions(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_tiny_fit_learns_and_its_metrics_are_its_predictions(
    reference: tuple[Path, TrainingResult],
) -> None:
    """The signal is learnt, and the reported figures are those of predictions.csv:
    macro-F1 (scikit-learn, over the classes present) pooled and per test hospital."""
    from sklearn.metrics import f1_score

    out, result = reference
    rows = _predictions(out)
    assert len(rows) == 16
    assert {"slide_id", "center", "true_label", "pred_label", "split", "prob_macro"} <= set(rows[0])
    pooled = result.metrics.pooled
    assert pooled.scalar("macro_f1") >= 0.9, result.summary

    def f1(subset: list[dict[str, str]]) -> float:
        truth = [r["true_label"] for r in subset]
        return float(f1_score(truth, [r["pred_label"] for r in subset], average="macro"))

    assert pooled.macro_f1 == pytest.approx(f1(rows))
    assert set(result.metrics.per_center) == {"3", "4"}
    for center, metrics in result.metrics.per_center.items():
        assert metrics.macro_f1 == pytest.approx(f1([r for r in rows if r["center"] == center]))
    assert pooled.patients == len({r["slide_id"].split("_node")[0] for r in rows}) == 4
    assert result.folds[0].epochs_trained == EPOCHS
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["loss"]["name"] == "ncmi"
    assert config["version"]


def test_tiny_fit_writes_every_report(reference: tuple[Path, TrainingResult]) -> None:
    out, result = reference
    fold = out / "fixed"
    for name in ("config.json", "splits.json", "metrics.json", "predictions.csv", "summary.txt"):
        assert (out / name).is_file(), name
    for name in ("confusion_pooled.png", "confusion_center3.png", "confusion_center4.png"):
        assert (out / name).stat().st_size > 0
    for name in ("curves.png", "attention_topk.csv", "metrics.json", "checkpoints/last.ckpt"):
        assert (fold / name).is_file(), name
    assert len(list((fold / "heatmaps").glob("*.png"))) == 2
    fold_metrics = json.loads((fold / "metrics.json").read_text())
    logged = {k for epoch in fold_metrics["history"] for k in epoch}
    assert {"train/loss", "train/cmi", "val/macro_f1", "val/cmi", "val/gamma", "val/ncmi"} <= logged
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # confusion matrices, curves, heatmaps
    assert f"{result.metrics.pooled.scalar('macro_f1'):.3f}" in page
    assert "git_commit" in page


def test_tiny_fit_qupath_files_carry_the_attention_and_the_prediction(
    reference: tuple[Path, TrainingResult],
) -> None:
    out, result = reference
    rows = _predictions(out)
    geojson = sorted((out / "fixed" / "qupath").glob("*.geojson"))
    assert len(geojson) == len(rows)  # every test slide, for QuPath
    predicted = {r["slide_id"]: r["pred_label"] for r in rows}
    for path in geojson:
        tiles = json.loads(path.read_text())["features"]
        assert len(tiles) == 36  # the whole 6 x 6 bag (test bags are never sub-sampled)
        total = sum(t["properties"]["measurements"]["attention"] for t in tiles)
        assert total == pytest.approx(1.0, abs=1e-4)
        assert {t["properties"]["classification"]["name"] for t in tiles} == {predicted[path.stem]}
    attention = result.folds[0].attention
    assert attention.slides_with_ground_truth == 12
    assert attention.mean_tumour_attention is not None
    assert attention.mean_tumour_patch_fraction is not None
    assert attention.mean_tumour_attention > 2 * attention.mean_tumour_patch_fraction


def test_reports_carry_the_diagnostics_of_the_selected_checkpoint(
    reference: tuple[Path, TrainingResult],
) -> None:
    out, result = reference
    fold = result.folds[0]
    (diag,) = json.loads((out / "metrics.json").read_text())["diagnostics"]
    assert diag["val_selected"] == fold.best_score
    assert diag["test_macro_f1"] == fold.metrics.pooled.macro_f1
    assert diag["val_to_test_drop"] == pytest.approx(diag["val_selected"] - diag["test_macro_f1"])
    # The bags carry the class in their features: a linear probe on the learnt slide
    # embeddings finds it on validation and test.
    assert fold.probe.train_slides == 16
    assert diag["probe_val"] >= 0.9
    assert diag["probe_test"] >= 0.9
    # Ground truth of every positive test slide: the model attends to its tumour patches
    # far above what uniform attention would give them.
    by_class = diag["tumour_attention_by_class"]
    assert set(by_class) == {"itc", "micro", "macro"}
    assert fold.attention.mean_tumour_patch_fraction is not None
    assert min(by_class.values()) > 2 * fold.attention.mean_tumour_patch_fraction
    summary = (out / "summary.txt").read_text()
    assert "Diagnostics per fold" in summary
    assert f"| fixed | {fold.best_score:.3f} |" in summary
    assert "probe test" in (out / "report.html").read_text()


def test_same_seed_gives_identical_results(
    cohort: Path, reference: tuple[Path, TrainingResult], tmp_path: Path
) -> None:
    out, _ = reference
    run_training(_config(cohort, tmp_path))
    assert _predictions(tmp_path) == _predictions(out)
    ref, again = (
        _state(out / "fixed/checkpoints/last.ckpt"),
        _state(tmp_path / "fixed/checkpoints/last.ckpt"),
    )
    assert ref.keys() == again.keys()
    assert all(torch.equal(ref[k], again[k]) for k in ref)


class _Kill(L.Callback):
    """Raise at the start of epoch ``at`` (after ``last.ckpt`` of the previous one)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated kill")


def test_resume_after_a_kill_matches_the_uninterrupted_run(
    cohort: Path, reference: tuple[Path, TrainingResult], tmp_path: Path
) -> None:
    out, _ = reference
    config = _config(cohort, tmp_path)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_training(config, callbacks=[_Kill(at=3)])
    assert _state(tmp_path / "fixed/checkpoints/last.ckpt")  # epoch-2 checkpoint survived
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_training(replace(config, resume=True))
    # the folder holds the run's own checkpoints: Lightning's "not empty" warning is moot
    assert [w for w in caught if "exists and is not empty" in str(w.message)] == []
    assert result.folds[0].epochs_trained == EPOCHS
    ref, resumed = (
        _state(out / "fixed/checkpoints/last.ckpt"),
        _state(tmp_path / "fixed/checkpoints/last.ckpt"),
    )
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)
    assert _predictions(tmp_path) == _predictions(out)


def test_cli_layers_yaml_and_overrides_and_saves_the_config(cohort: Path, tmp_path: Path) -> None:
    config = {
        "data": {
            "manifest": str(cohort / "manifest.csv"),
            "features_root": str(cohort),
            "encoder": ENCODER,
        },
        "split": {
            "kind": "fixed",
            "train_centers": [0, 1],
            "val_centers": [2],
            "test_centers": [3],
        },
        "model": {"name": "mean", "kwargs": {"hidden_dim": 8}},
        "loss": {"name": "focal"},
        "trainer": {"max_epochs": 5, "accelerator": "cpu"},
        "report": {"bootstrap": 10, "max_heatmaps": 0},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "cli"
    code = main(["--config", str(path), "--trainer.max_epochs", "1", "--out_dir", str(out)])
    assert code == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 1
    assert saved["model"]["name"] == "mean"
    assert saved["loss"]["name"] == "focal"
    assert (out / "metrics.json").is_file()


def test_cli_exit_codes(cohort: Path, tmp_path: Path) -> None:
    assert main(["--trainer.max_epochs", "notanint"]) == 2
    manifest = tmp_path / "manifest.csv"
    manifest.write_text((cohort / "manifest.csv").read_text() + "extra_slide,patient_x,4,macro\n")
    args = [
        "--data.manifest",
        str(manifest),
        "--data.features_root",
        str(cohort),
        "--data.encoder",
        ENCODER,
        "--split.kind",
        "loho",
        "--split.folds",
        "[4]",
        "--out_dir",
        str(tmp_path / "out"),
        "--trainer.accelerator",
        "cpu",
    ]
    assert main(args) == 3
    assert main([*args[:-2], "--split.folds", "[9]"]) == 2


def test_batched_ncmi_mil_learns_and_reports_both_decision_rules(
    cohort: Path, tmp_path: Path
) -> None:
    config = _config(cohort, tmp_path / "mil")
    config.loss = LossConfig("ncmi_mil", {})
    config.data.batch_size = 4
    result = run_training(config)
    assert result.metrics.pooled.scalar("macro_f1") >= 0.9, result.summary
    assert set(result.by_decision) == {"default", "calibrated"}
    rows = _predictions(tmp_path / "mil")
    assert {"pred_label_default", "pred_label_calibrated"} <= set(rows[0])
    assert all(r["pred_label"] == r["pred_label_calibrated"] for r in rows)
    fold = json.loads((tmp_path / "mil" / "fixed" / "metrics.json").read_text())
    logged = {k for epoch in fold["history"] for k in epoch}
    assert {"val/macro_f1_calibrated", "val/prior_scale", "train/gamma"} <= logged
    assert fold["decision_rule"]["log_prior"]
    # Slide-level centroids: the Q-step ran after every epoch on the whole training split.
    assert fold["epochs_trained"] == EPOCHS


@pytest.mark.slow  # an optional logger
def test_tensorboard_logger_shows_the_per_epoch_metrics(cohort: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(cohort, tmp_path / "tb", logger="tensorboard", max_epochs=3)
    run_training(config)
    runs = list((tmp_path / "tb" / "fixed" / "tb").glob("version_*"))
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    wanted = {"train/loss", "train/ncmi", "val/macro_f1", "val/macro_f1_calibrated"}
    assert wanted | {"val/cmi", "val/gamma", "val/ncmi"} <= tags
    # one value per epoch, the same as the CSV log the reports read
    assert len(events.Scalars("val/ncmi")) == 3
    csv_rows = [
        r
        for r in csv.DictReader(
            next((tmp_path / "tb" / "fixed" / "logs").glob("version_*/metrics.csv")).open()
        )
        if r.get("val/ncmi")
    ]
    tb_values = [e.value for e in events.Scalars("val/ncmi")]
    assert tb_values == pytest.approx([float(r["val/ncmi"]) for r in csv_rows], rel=1e-5)


def test_unknown_or_missing_logger_is_a_config_error(cohort: Path, tmp_path: Path) -> None:
    from wsi_ncmi.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trainer\.logger"):
        run_training(_config(cohort, tmp_path / "x", logger="wandb"))


def test_validation_logs_epoch_means_and_the_dataset_level_ncmi(
    reference: tuple[Path, TrainingResult], cohort: Path
) -> None:
    """The epoch's logged values, recomputed slide by slide outside the module."""
    from wsi_ncmi.losses.callbacks import NCMIDiagnostics
    from wsi_ncmi.losses.diagnostics import NCMIMetric
    from wsi_ncmi.train.build import build_model
    from wsi_ncmi.train.data import BagDataModule

    out, _ = reference
    config = _config(cohort, out)
    data = config.data
    dm = BagDataModule(data.manifest, data.features_root, data.encoder, str(out / "splits.json"), 0)
    dm.setup("fit")
    model = build_model(config, dm)
    model.load_state_dict(_state(out / "fixed" / "checkpoints" / "last.ckpt"))
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[NCMIDiagnostics(dm.num_classes)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with lightning_loop():  # as wsi-train runs its loops
        logged = trainer.validate(model, datamodule=dm, verbose=False)[0]
    model.eval()
    losses, hits, terms = [], [], []
    metric = NCMIMetric(dm.num_classes)
    with torch.no_grad():
        for batch in dm.val_dataloader():
            outputs, targets = model.loss_inputs(batch)
            result = model.criterion(outputs, targets)
            losses.append(float(result.loss))
            terms.append(float(result.terms["ncmi"]))
            hits.append(bool((model.criterion.predict(outputs) == targets).all()))
            metric.update(model.criterion.probabilities(outputs), targets)
    assert logged["val/loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert logged["val/accuracy"] == pytest.approx(sum(hits) / len(hits), rel=1e-6)
    # val/ncmi is the whole validation set's NCMI (the callback), not the slides' mean term.
    dataset_ncmi = float(metric.compute()["ncmi"])
    assert logged["val/ncmi"] == pytest.approx(dataset_ncmi, rel=1e-4)
    assert abs(dataset_ncmi - sum(terms) / len(terms)) > 1e-3
