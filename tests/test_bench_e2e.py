"""End to end: synthetic slides → wsi-tile → wsi-extract (random-cnn) → wsi-bench sweep.

A very small cohort (2 slides per hospital, 1 seed, 1 epoch): the test checks the
structure of the outputs and that the metrics are sane, never which loss wins. The real
slide reader, tiler, encoder and Lightning trainer run; nothing is mocked.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from wsi_ncmi.cli.bench import main
from wsi_ncmi.manifest import read_manifest
from wsi_ncmi.synth import generate_cohort

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "bench" / "synthetic_demo.yaml"


def bench_args(cohort: Path, work: Path, name: str = "e2e") -> list[str]:
    """Arguments of a tiny run of the demo config on ``cohort``."""
    return [
        "--config",
        str(CONFIG),
        "--name",
        name,
        "--output_root",
        str(work / "bench"),
        "--data.manifest",
        str(cohort / "manifest.csv"),
        "--data.slide_dir",
        str(cohort),
        "--data.features_root",
        str(work / "tiles"),
        "--sweep.seeds",
        "0",
        "--jobs",
        "1",
        "--progress=false",
        "--set",
        "prepare.grid={target_mpp: 2.0, patch_size_px: 128}",  # 256-µm patches, 128 px
        "--set",
        "train.trainer.max_epochs=1",
        "--set",
        "train.report.bootstrap=100",
        "--set",
        "train.report.max_heatmaps=0",  # heatmaps: test_train_fit
        "--set",
        "stats.bootstrap=200",
    ]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    rows = read_manifest(REPO_ROOT / "data_manifests" / "camelyon17.csv")
    generate_cohort(rows, out, preset="demo", subset=2, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def bench_run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("work")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code = main(bench_args(cohort, work))
    finally:
        torch.set_num_threads(threads)
    return {"code": code, "work": work, "out": work / "bench" / "e2e"}


def test_exit_code_and_files(bench_run: dict[str, Any]) -> None:
    assert bench_run["code"] == 0
    out: Path = bench_run["out"]
    for name in ("results.csv", "summary.md", "summary.json", "bench_config.yaml"):
        assert (out / name).is_file(), name
    for plot in ("bars_abmil.png", "ncmi_vs_f1.png"):
        assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((bench_run["work"] / "tiles" / "thumbnails").glob("*.png"))) == 10
    assert len(list((bench_run["work"] / "tiles" / "features" / "random-cnn").glob("*.h5"))) == 10
    assert len(list(out.glob("cells/*/result.json"))) == 10  # 2 losses x 5 folds x 1 seed
    # every cell writes its test slides for QuPath (2 per held-out hospital)
    assert len(list(out.glob("cells/*/run/qupath/*.geojson"))) == 20
    assert (out / "report.html").is_file()


def test_results_csv_rows_match_each_runs_predictions(bench_run: dict[str, Any]) -> None:
    """Each (loss, hospital) row of results.csv against that run's own predictions.csv:
    macro-F1 (over the classes present), accuracy, balanced accuracy and the slide count
    recomputed with scikit-learn; the selected epoch's validation values are recorded."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    out: Path = bench_run["out"]
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10
    assert {(r["loss"], r["hospital"]) for r in rows} == {
        (loss, str(c)) for loss in ("ce", "ncmi_mil") for c in range(5)
    }
    for loss in ("ce", "ncmi_mil"):
        records = _predictions(out, loss)
        for hospital in map(str, range(5)):
            (row,) = [r for r in rows if (r["loss"], r["hospital"]) == (loss, hospital)]
            mine = [r for r in records if r["center"] == hospital]
            truth = [r["true_label"] for r in mine]
            predicted = [r["pred_label"] for r in mine]
            assert int(row["n"]) == len(mine) == 2
            assert float(row["macro_f1"]) == pytest.approx(
                f1_score(truth, predicted, average="macro", zero_division=0)
            )
            assert float(row["accuracy"]) == pytest.approx(accuracy_score(truth, predicted))
            assert float(row["balanced_accuracy"]) == pytest.approx(
                balanced_accuracy_score(truth, predicted)
            )
            # The headline follows the config's rule (calibrated); both rules are scored.
            assert float(row["macro_f1"]) == float(row["macro_f1_calibrated"])
            assert float(row["prior_scale"]) >= 0.0
            assert math.isfinite(float(row["val_ncmi"]))
            result = json.loads((out / "cells" / row["cell_id"] / "result.json").read_text())
            assert float(row["val_macro_f1"]) == pytest.approx(result["val"]["macro_f1"])
            assert row["config_hash"] == result["config_hash"]


def _predictions(out: Path, loss: str) -> list[dict[str, str]]:
    records: list[dict[str, str]] = []
    for path in sorted(out.glob(f"cells/{loss}__*/predictions.csv")):
        with path.open(newline="") as handle:
            records += list(csv.DictReader(handle))
    return records


def test_summary_json_holds_the_numbers_of_the_runs(bench_run: dict[str, Any]) -> None:
    """summary.json (what summary.md and report.html print) against the runs' own data.

    Per hospital: the macro-F1 in results.csv. Pooled: scikit-learn's macro-F1 (over the
    classes present) of the five held-out folds' predictions.csv, concatenated.
    """
    from sklearn.metrics import f1_score

    out: Path = bench_run["out"]
    summary = json.loads((out / "summary.json").read_text())["models"]["abmil"]
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    hospitals = [str(c) for c in range(5)]
    assert summary["groups"] == [*hospitals, "pooled"]
    assert summary["sizes"] == {**dict.fromkeys(hospitals, 2), "pooled": 10}
    f1 = summary["macro_f1"]
    for loss in ("ce", "ncmi_mil"):
        for hospital in hospitals:
            (row,) = [r for r in rows if (r["loss"], r["hospital"]) == (loss, hospital)]
            assert f1[loss][hospital] == [pytest.approx(float(row["macro_f1"]))]
        records = _predictions(out, loss)
        assert sorted(r["center"] for r in records) == sorted(hospitals * 2)
        truth = [r["true_label"] for r in records]
        predicted = [r["pred_label"] for r in records]
        pooled = f1_score(truth, predicted, average="macro", zero_division=0)
        assert f1[loss]["pooled"] == [pytest.approx(pooled)]
    comparison = summary["comparisons"]["ncmi_mil"]
    for group in summary["groups"]:
        est = comparison["bootstrap"][group]
        delta = f1["ncmi_mil"][group][0] - f1["ce"][group][0]  # one seed
        assert est["delta"] == pytest.approx(delta)
        assert -1.0 <= est["low"] <= est["delta"] <= est["high"] <= 1.0
    diffs = [f1["ncmi_mil"][h][0] - f1["ce"][h][0] for h in hospitals]
    wilcoxon = comparison["wilcoxon"]
    assert wilcoxon["n_pairs"] == 5
    assert (wilcoxon["wins"], wilcoxon["losses"]) == (
        sum(d > 0 for d in diffs),
        sum(d < 0 for d in diffs),
    )


def test_summary_md_has_every_section(bench_run: dict[str, Any]) -> None:
    text = (bench_run["out"] / "summary.md").read_text()
    lines = text.splitlines()
    for header in (
        "| hospital | CE macro-F1 | NCMI_MIL macro-F1 | Δ | 95% CI of Δ |",
        "| model | loss | default | calibrated |",
        "| model | loss | negative | itc | micro | macro |",
    ):
        assert header in lines
    for phrase in ("pN-κ", "Wilcoxon", "at α = 0.05", "Spearman"):
        assert phrase in text


def test_a_misspelt_encoder_stops_before_tiling(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slides without features are tiled then extracted: an encoder name that no extraction
    could build stops the run first (it used to fail after tiling every slide)."""
    args = [*bench_args(cohort, tmp_path), "--data.encoder", "stain-stat"]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("wsi-bench: error: ConfigError: data.encoder: ")
    assert "stain-stat" in line
    slides = len(read_manifest(cohort / "manifest.csv"))
    assert f"{slides} slides lack features and would be extracted" in line
    assert not (tmp_path / "tiles" / "coords").exists()  # nothing was tiled
