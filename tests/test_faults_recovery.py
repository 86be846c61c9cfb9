"""Quick versions of the fault harness (``tools/faults/run_all --quick`` is the CI size).

SIGKILL and resume of wsi-tile and wsi-extract (3 trials each), 4 concurrent wsi-tile
workers with one killed mid-slide, disk full on a tiny tmpfs, a NaN loss step. Training
kill-and-resume and the whole quick harness are ``slow``. Outputs are compared bitwise
with an uninterrupted run; nothing may be lost, accepted half-written or left behind.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import _faults  # noqa: F401  (tools/ on sys.path)
import numpy as np
import pytest
import torch
from faults import concurrency, kill
from faults.common import (
    Tally,
    compare_h5,
    lock_files,
    mount_tmpfs,
    remount_tmpfs,
    temp_files,
    umount,
)
from faults.slides import tissue, write_tiff

from wsi_ncmi.batch import BatchAbortedError
from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.run import run_extraction

REPO = Path(__file__).resolve().parents[1]


def _assert_clean(tally: Tally) -> None:
    assert tally.problems == []
    assert tally.injected > 0
    assert tally.recovered == tally.injected
    assert (tally.bytes_lost, tally.partial_accepted) == (0, 0)
    assert tally.left_behind == []
    assert (tally.temp_left, tally.locks_left) == (0, 0)
    assert tally.bytes_compared > 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 2048 × 1536 slides and their uninterrupted wsi-tile reference (``tile_ref``)."""
    root = tmp_path_factory.mktemp("faults")
    for seed in range(3):
        write_tiff(root / "slides" / f"s{seed}.tif", tissue(2048, 1536, seed), levels=3)
    kill.tile_reference(root / "slides", root / "tile_ref")
    return root


@pytest.mark.slow  # wsi-* stages in child processes, killed or interrupted
def test_tile_kill_and_resume(work: Path, tmp_path: Path) -> None:
    shutil.copytree(work / "tile_ref", tmp_path / "tile_ref")  # reference reused as is
    planted = Tally("planted")
    tally = kill.tile_kill_resume(work / "slides", tmp_path, trials=3, seed=1, planted=planted)
    _assert_clean(tally)
    assert planted.partial_accepted == 0
    assert planted.recovered == planted.injected


@pytest.mark.slow  # wsi-* stages in child processes, killed or interrupted
def test_four_workers_one_killed_each_slide_once(work: Path, tmp_path: Path) -> None:
    tally = concurrency.tile_concurrency(
        work / "slides", tmp_path, trials=1, seed=3, ref=work / "tile_ref"
    )
    _assert_clean(tally)


@pytest.mark.slow  # wsi-* stages in child processes, killed or interrupted
def test_extract_kill_and_resume(work: Path, tmp_path: Path) -> None:
    planted = Tally("planted")
    tally = kill.extract_kill_resume(
        work / "tile_ref" / "coords", tmp_path, trials=3, seed=2, planted=planted,
        subprocess_every=0,
    )  # fmt: skip
    _assert_clean(tally)
    assert planted.partial_accepted == 0


def test_disk_full_is_clear_and_leaves_nothing(work: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    coords = work / "tile_ref" / "coords"
    common: dict[str, Any] = {"random_init": True, "device": "cpu", "batch_size": 16,
                              "workers": 0, "progress": False, "dtype": "float32"}  # fmt: skip
    ref = tmp_path / "ref"
    run_extraction(ExtractConfig(coords_dir=coords, out_dir=ref, **common))
    ref_files = sorted((ref / "features" / "random-cnn").glob("*.h5"))
    point = tmp_path / "tiny"
    # Room for the first slide, its metadata margin and the 3 lock files; not for the second.
    if not mount_tmpfs(point, f"size={ref_files[0].stat().st_size // 1024 + 36}k"):
        pytest.skip("cannot mount a tmpfs here (not root); see test_batch for simulated ENOSPC")
    try:
        config = ExtractConfig(coords_dir=coords, out_dir=point, **common)
        with pytest.raises(BatchAbortedError) as info:
            run_extraction(config)
        message = str(info.value)
        assert "DiskFullError: no space left on the device while writing" in message
        assert f"{point}/features/random-cnn/s1.h5" in message  # the file, not its temp
        assert "Free space or choose another --out_dir directory" in message
        assert temp_files(point) == []
        assert lock_files(point) == []
        kept = point / "features" / "random-cnn" / "s0.h5"
        assert compare_h5(kept, ref_files[0])[1] == 0  # the finished slide is intact
        remount_tmpfs(point, "size=16m")
        report = run_extraction(config)
        assert {r.item_id: r.status for r in report.results} == {
            "s0": "skipped", "s1": "ok", "s2": "ok",
        }  # fmt: skip
        for want in ref_files:
            assert compare_h5(point / "features" / "random-cnn" / want.name, want)[1] == 0
    finally:
        umount(point)


def test_disk_fills_up_during_a_write(tmp_path: Path) -> None:
    """Another job fills the disk while a features file is written (a real tmpfs)."""
    from faults.diskfull import _mid_write

    tally = Tally("mid-write")
    _mid_write(tmp_path, tally)
    if not tally.injected:
        pytest.skip("cannot mount a tmpfs here (not root)")
    assert tally.problems == []
    assert (tally.recovered, tally.temp_left) == (1, 0)


def test_hdf5_disk_full_errors_are_recognised(tmp_path: Path) -> None:
    from wsi_ncmi.batch.atomic import final_path_of, is_disk_full, temp_path_for

    hdf5 = RuntimeError("Can't decrement id ref count (file write failed: errno = 28, error")
    assert is_disk_full(hdf5)
    assert not is_disk_full(RuntimeError("errno = 2, no such file"))
    final = tmp_path / "a b ñ.h5"
    assert final_path_of(temp_path_for(final)) == final


def test_nan_loss_step_stops_cleanly_with_the_checkpoint_intact(tmp_path: Path) -> None:
    from faults.training import nan_loss_step

    torch.set_num_threads(1)
    _, seen = nan_loss_step(tmp_path)
    assert seen["got"] == "NonFiniteError"
    assert "non-finite training loss nan" in seen["message"]
    assert "step 15" in seen["message"]
    assert seen["checkpoint_intact"]  # last.ckpt of epoch 0 loads, with finite weights
    assert temp_files(tmp_path / "nan") == []


def test_nan_loss_step_names_the_slide_id(tmp_path: Path) -> None:
    """The trainer's NonFiniteError names the slide whose step gave a NaN loss.

    The oracle does not use the trainer's index → slide lookup: each training slide has a
    bag size of its own (``side²`` patches, no sub-sampling, one slide per step), so the
    callback picks the step of ``POISONED`` by the batch's shape alone, and the expected
    slide id comes from the test's own table.
    """
    import lightning as L

    from wsi_ncmi.errors import NonFiniteError
    from wsi_ncmi.manifest import ManifestRow, write_manifest
    from wsi_ncmi.synth.bags import write_signal_bag
    from wsi_ncmi.train.config import (
        DataConfig,
        ModelConfig,
        ReportConfig,
        SplitConfig,
        TrainConfig,
        TrainerConfig,
    )  # fmt: skip
    from wsi_ncmi.train.fit import run_training

    torch.set_num_threads(1)
    # slide id -> (center, label, side); centers 0-1 train, 2 validation, 3 test
    table = {
        "p0_node_0": (0, "negative", 3), "p0_node_1": (0, "macro", 4),
        "p1_node_0": (1, "itc", 5), "p1_node_1": (1, "micro", 6),
        "p2_node_0": (2, "negative", 4), "p2_node_1": (2, "macro", 4),
        "p3_node_0": (3, "negative", 4), "p3_node_1": (3, "macro", 4),
    }  # fmt: skip
    rows = [ManifestRow(s, s.split("_")[0], c, label) for s, (c, label, _) in table.items()]
    write_manifest(rows, tmp_path / "manifest.csv")
    rng = np.random.default_rng(0)
    for row in rows:
        side = table[row.slide_id][2]
        write_signal_bag(tmp_path, row.slide_id, row.label_index, rng, encoder="e", side=side)
    poisoned = "p1_node_0"
    patches = table[poisoned][2] ** 2
    seen: list[int] = []

    class Poison(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            seen.append(int(batch["features"].shape[1]))
            if trainer.current_epoch == 1 and seen[-1] == patches:
                with torch.no_grad():
                    next(module.aggregator.parameters()).fill_(float("nan"))

    config = TrainConfig(
        out_dir=str(tmp_path / "run"),
        data=DataConfig(manifest=str(tmp_path / "manifest.csv"), features_root=str(tmp_path),
                        encoder="e", max_patches_train=None, batch_size=1),
        split=SplitConfig(kind="fixed", train_centers=[0, 1], val_centers=[2],
                          test_centers=[3]),
        model=ModelConfig("abmil", {"hidden_dim": 8, "attention_dim": 4}),
        trainer=TrainerConfig(max_epochs=3, patience=0, accelerator="cpu"),
        report=ReportConfig(bootstrap=10, max_heatmaps=0, max_geojson=0),
    )  # fmt: skip
    with pytest.raises(NonFiniteError) as info:
        run_training(config, callbacks=[Poison()])
    message = str(info.value)
    assert sorted(seen[:4]) == [9, 16, 25, 36]  # epoch 0: each training slide once
    assert seen[-1] == patches  # the run stopped at the poisoned step
    assert "non-finite training loss nan at epoch 1" in message
    assert f"slide {poisoned};" in message
    for other in set(table) - {poisoned}:
        assert other not in message


@pytest.mark.slow
def test_train_kill_and_resume(tmp_path: Path) -> None:
    from faults.cohorts import bag_cohort, train_config

    bag_cohort(tmp_path / "bags")
    config = train_config(tmp_path / "bags", tmp_path / "train.yaml", epochs=4)
    _assert_clean(kill.train_kill_resume(config, tmp_path, trials=3, seed=4))


@pytest.mark.slow
def test_run_all_quick(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "faults" / "run_all"), "--quick",
         "--work", str(tmp_path), "--keep"],
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    assert (tmp_path / "faults_report.json").is_file(), done.stderr[-3000:]
    assert "bytes lost" in done.stdout


@pytest.mark.slow  # wsi-tile, wsi-extract, wsi-train in child processes
def test_each_stage_runs_from_another_directory_with_the_same_results(tmp_path: Path) -> None:
    """Issue 24: outputs made in one directory, used from ``/``; a re-scan is still caught."""
    from faults.findings import cwd_independence

    tally = cwd_independence(tmp_path)
    assert tally.problems == []
    assert tally.recovered == tally.injected == 4
    assert tally.outputs_compared == 1  # predictions.csv, byte for byte


@pytest.mark.slow  # every issue-24 finding through the real commands
def test_every_issue_24_finding_is_fixed(tmp_path: Path) -> None:
    from faults.findings_runs import all_findings

    for finding in all_findings():
        tally = finding(tmp_path)
        assert tally.problems == [], tally.kind
        assert tally.recovered == tally.injected, tally.kind
        assert (tally.partial_accepted, tally.temp_left, tally.locks_left) == (0, 0, 0)
