"""Batch behaviour of wsi-tile: statuses, resume by parameter hash, kills, concurrency."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _slides import truncate
from _tiling_slides import blank_slide, small_slide

from wsi_ncmi.batch import find_temp_files
from wsi_ncmi.cli.tile import build_parser, main
from wsi_ncmi.tiling import (
    GridParams,
    TilingConfig,
    make_tasks,
    read_coords,
    run_tiling,
    slide_params_hash,
)
from wsi_ncmi.tiling.run import discover_slides

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    for i in range(6):
        small_slide(root / f"s{i}.tif", seed=i)
    return root


def _cli(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", *args, "--progress=false"]
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _reports(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out / "reports").glob("*.json"))]


def test_statuses_do_not_stop_the_batch(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    small_slide(slides / "good.tif")
    blank_slide(slides / "blank.tif")
    truncate(small_slide(slides / "corrupt.tif", seed=1))
    small_slide(slides / "nompp.tif", mpp=None)
    out = tmp_path / "out"
    code = main([str(slides), "--out_dir", str(out), "--workers", "2", "--progress=false"])
    assert code == 1
    (report,) = _reports(out)
    by_id = {r["item_id"]: r for r in report["results"]}
    assert by_id["good"]["status"] == "ok"
    assert by_id["good"]["count"] > 0
    assert by_id["blank"]["status"] == "no_tissue"
    assert (out / "thumbnails" / "blank.png").is_file()
    assert read_coords(out / "coords" / "blank.h5").attrs["status"] == "no_tissue"
    assert by_id["corrupt"]["status"] == "failed"
    assert by_id["corrupt"]["error_type"] == "SlideOpenError"
    assert by_id["nompp"]["status"] == "failed"
    assert by_id["nompp"]["error_type"] == "MissingMppError"
    # --mpp fixes the missing resolution; the finished slides are skipped.
    code = main(
        [
            str(slides),
            "--out_dir",
            str(out),
            "--mpp_override",
            "0.5",
            "--workers",
            "1",
            "--progress=false",
        ]
    )
    latest = _reports(out)[-1] if len(_reports(out)) == 2 else None
    assert latest is not None
    by_id = {r["item_id"]: r for r in latest["results"]}
    assert by_id["nompp"]["status"] == "ok"
    assert code == 1  # the corrupt slide still fails


def test_resume_skips_and_changed_params_retile(cohort: Path, tmp_path: Path) -> None:
    tasks = make_tasks(discover_slides([cohort]))
    config = TilingConfig(out_dir=str(tmp_path))
    first = run_tiling(tasks, config, workers=1, progress=False)
    assert first.counts["ok"] == 6
    # A leftover temp file and a garbage file under a final name are never accepted.
    (tmp_path / "coords" / ".s1.h5.tmp-999999-dead").write_bytes(b"partial")
    (tmp_path / "coords" / "s2.h5").write_bytes(b"garbage")
    again = run_tiling(tasks, config, workers=1, progress=False)
    status = {r.item_id: r.status for r in again.results}
    assert status == {f"s{i}": "ok" if i == 2 else "skipped" for i in range(6)}
    assert find_temp_files(tmp_path / "coords") == []
    changed = TilingConfig(out_dir=str(tmp_path), grid=GridParams(min_tissue=0.75))
    third = run_tiling(tasks, changed, workers=1, progress=False)
    assert third.counts["ok"] == 6
    assert all(
        r.extra["replaced_params_hash"] == slide_params_hash(config, tasks[0])
        for r in third.results
    )
    new_hash = slide_params_hash(changed, tasks[0])
    assert (
        read_coords(tmp_path / "coords" / "s0.h5", expect_hash=new_hash).attrs["min_tissue"] == 0.75
    )


@pytest.fixture(scope="module")
def reference(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("reference")
    run_tiling(
        make_tasks(discover_slides([cohort])),
        TilingConfig(out_dir=str(out)),
        workers=1,
        progress=False,
    )
    return {p.stem: read_coords(p).coords for p in (out / "coords").glob("*.h5")}


@pytest.mark.slow  # wsi-* stages in child processes, killed or interrupted
@pytest.mark.parametrize("trial", range(3))
def test_sigkill_then_rerun(
    cohort: Path, reference: dict[str, np.ndarray], tmp_path: Path, trial: int
) -> None:
    out = tmp_path / "out"
    proc = _cli(str(cohort), "--out_dir", str(out), "--workers", "2", start_new_session=True)
    time.sleep(random.Random(trial).uniform(0.6, 2.0))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whatever was left, every coords file under its final name is complete.
    for path in (out / "coords").glob("*.h5") if (out / "coords").is_dir() else []:
        read_coords(path)
    proc = _cli(str(cohort), "--out_dir", str(out), "--workers", "2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    expect = slide_params_hash(TilingConfig(out_dir=str(out)), make_tasks([cohort / "s0.tif"])[0])
    done = sorted(p.stem for p in (out / "coords").glob("*.h5"))
    assert done == sorted(reference)
    for stem in done:
        coords = read_coords(out / "coords" / f"{stem}.h5", expect_hash=expect)
        assert np.array_equal(coords.coords, reference[stem])
    assert find_temp_files(out) == []
    assert not list((out / ".locks").glob("*.lock"))


@pytest.mark.slow  # wsi-* stages in child processes, killed or interrupted
def test_two_concurrent_processes_tile_each_slide_once(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [_cli(str(cohort), "--out_dir", str(out), "--workers", "1") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    reports = _reports(out)
    assert len(reports) == 2
    ok = [r["item_id"] for rep in reports for r in rep["results"] if r["status"] == "ok"]
    assert sorted(ok) == [f"s{i}" for i in range(6)]
    for rep in reports:
        assert sorted(r["item_id"] for r in rep["results"]) == sorted(ok)


def test_shards_partition_the_cohort(cohort: Path, tmp_path: Path) -> None:
    tasks = make_tasks(discover_slides([cohort]))
    config = TilingConfig(out_dir=str(tmp_path), grid=GridParams(target_mpp=2.0))
    ids = []
    for i in range(3):
        ids += [
            r.item_id
            for r in run_tiling(tasks, config, shard=f"{i}/3", workers=1, progress=False).results
        ]
    assert sorted(ids) == sorted(t.slide_id for t in tasks)


def test_help_documents_every_option_with_its_unit(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for unit in ("µm/px", "µm²", "pixels at ``target_mpp``", "fraction", "Seconds"):
        assert unit in text


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nothing-*.svs", "--out_dir", str(tmp_path)]) == 2
    assert "matches no file" in capsys.readouterr().err
    assert main([str(tmp_path), "--out_dir", str(tmp_path), "--grid.patch_size_px", "0"]) == 2


def test_tiling_path_imports_no_torch() -> None:
    code = (
        "import sys, wsi_ncmi.cli.tile as t, wsi_ncmi.tiling.run; "
        "import wsi_ncmi.tiling.job; print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_slides_and_manifest_naming_the_same_file_tile_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsi_ncmi.manifest import ManifestRow, write_manifest

    slides = tmp_path / "cohort"
    (slides / "center_0").mkdir(parents=True)
    small_slide(slides / "center_0" / "patient_000_node_0.tif")
    write_manifest([ManifestRow("patient_000_node_0", "patient_000", 0, "macro")], slides / "m.csv")
    monkeypatch.chdir(tmp_path)  # SLIDES relative, manifest lookups absolute: same file
    args = ["cohort", "--manifest", str(slides / "m.csv"), "--out_dir", "out", "--progress=false"]
    code = main(args)
    assert code == 0
    (report,) = _reports(tmp_path / "out")
    assert [r["item_id"] for r in report["results"]] == ["patient_000_node_0"]
