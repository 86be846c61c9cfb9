"""``wsi-predict`` end to end: a folder of new slides (never tiled) in, a report out.

The slides are generated here; the bundle is an untrained ABMIL for ``stain-stats``
features (the pipeline is under test, not the accuracy). The slow tier kills the command
with SIGKILL mid-run, runs it again, and compares every output with an uninterrupted
run byte for byte.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _predict_bundles import encoder_bundle
from _tiling_slides import blank_slide, small_slide

from wsi_ncmi.cli.predict import main

SLIDES = ("s0", "s1", "s2")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``slides/`` (three slides with tissue, one blank), ``model/`` and ``manifest.csv``."""
    root = tmp_path_factory.mktemp("lab")
    (root / "slides").mkdir()
    for i, name in enumerate(SLIDES):
        small_slide(root / "slides" / f"{name}.tiff", seed=i)
    blank_slide(root / "slides" / "blank.tiff")
    encoder_bundle(root / "model")
    (root / "manifest.csv").write_text(
        "slide_id,patient_id\ns0,p0\ns1,p0\ns2,p1\nblank,p1\nmissing,p2\n"
    )
    return root


def _args(lab: Path, out: Path) -> list[str]:
    return [
        str(lab / "slides"), "--models", str(lab / "model"), "--out_dir", str(out),
        "--manifest", str(lab / "manifest.csv"), "--workers", "1", "--extract_workers", "0",
        "--device", "cpu",
        "--geojson_tiles", "7",
    ]  # fmt: skip


def _outputs(out: Path) -> dict[str, bytes]:
    names = ["predictions.csv", "patients.csv", "report.html"]
    files = [out / n for n in names] + sorted((out / "qupath").glob("*"))
    files += sorted((out / "heatmaps").glob("*"))
    return {str(f.relative_to(out)): f.read_bytes() for f in files}


def test_slides_in_report_out_in_one_command(
    lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(_args(lab, out)) == 0
    printed = capsys.readouterr().out
    assert "seconds per stage: load" in printed
    for stage in ("tile", "extract", "predict", "report"):
        assert f" {stage} " in printed
    assert set(json.loads((out / "timings.json").read_text())) >= {"tile", "extract", "predict"}
    with (out / "predictions.csv").open() as handle:
        rows = {r["slide_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {*SLIDES, "blank"}
    assert rows["blank"]["qc"] == "no_tissue"
    assert rows["blank"]["pred_label"] == ""
    classes = ("negative", "itc", "micro", "macro")
    for name in SLIDES:
        row = rows[name]
        probs = [float(row[f"prob_{c}"]) for c in classes]
        assert abs(sum(probs) - 1) < 1e-5
        assert row["pred_label"] in classes
        assert row["decision"] == "calibrated"
        assert row["qc"] in ("ok", "too_few_patches")
        assert int(row["n_patches"]) > 0
        collection = json.loads((out / "qupath" / f"{name}.geojson").read_text())
        assert len(collection["features"]) == min(7, int(row["n_patches"]))
        ranks = sorted(f["properties"]["measurements"]["attention_rank"]
                       for f in collection["features"])  # fmt: skip
        assert ranks == list(range(1, len(ranks) + 1))
        assert (out / "heatmaps" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    with (out / "patients.csv").open() as handle:
        patients = {r["patient_id"]: r for r in csv.DictReader(handle)}
    assert patients["p0"]["complete"] == "True"
    assert patients["p0"]["pN_stage"].startswith("pN")
    assert patients["p1"]["complete"] == "False"  # the blank slide has no prediction
    assert patients["p2"]["pN_stage"] == ""
    page = (out / "report.html").read_text()
    assert "http://" not in page
    assert "https://" not in page
    order = [page.index(f'data-slide="{name}"') for name in (*SLIDES, "blank")]
    assert order[-1] == max(order)  # slides without a prediction come last
    # A second run reuses the tiles and features and writes the same outputs.
    before = _outputs(out)
    assert main(_args(lab, out)) == 0
    assert _outputs(out) == before


def test_a_missing_slide_folder_is_a_usage_error(lab: Path, tmp_path: Path) -> None:
    args = [str(tmp_path / "nothing"), "--models", str(lab / "model"), "--out_dir", str(tmp_path)]
    assert main(args) == 2


@pytest.mark.slow
@pytest.mark.parametrize("kill_when", ["coords", "features"])
def test_resumes_after_kill_9_with_bitwise_equal_outputs(
    lab: Path, tmp_path: Path, kill_when: str
) -> None:
    reference = tmp_path / "reference"
    assert main(_args(lab, reference)) == 0
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "wsi_ncmi.cli.predict", *_args(lab, out)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    watched = out / "coords" if kill_when == "coords" else out / "features" / "stain-stats"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if watched.is_dir() and any(watched.glob("*.h5")):
            break
        time.sleep(0.01)
    assert process.poll() is None, "the run ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _outputs(out) == _outputs(reference)


@pytest.mark.slow
def test_shards_share_one_output_folder_and_the_last_writes_the_report(
    lab: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([*_args(lab, out), "--shard", "0/2"]) == 0
    assert "still lack features" in capsys.readouterr().out
    assert not (out / "predictions.csv").exists()
    assert main([*_args(lab, out), "--shard", "1/2"]) == 0
    with (out / "predictions.csv").open() as handle:
        assert {r["slide_id"] for r in csv.DictReader(handle)} == {*SLIDES, "blank"}
