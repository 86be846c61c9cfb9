"""Issue 24: one writer per training folder, atomic checkpoints, resume fallback, guards.

Real Lightning training on a few generated bags (CPU, one thread), through ``wsi-train``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import _faults  # noqa: F401  (tools/ on sys.path)
import pytest
import torch
import yaml
from _train_bags import ENCODER, make_cohort
from faults.common import mount_tmpfs, umount

from wsi_ncmi.batch.atomic import find_temp_files
from wsi_ncmi.batch.locks import claim_folder, lock_dir
from wsi_ncmi.cli.train import main
from wsi_ncmi.train.checkpoint_io import AtomicCheckpointIO, checkpoint_problem

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bags")
    make_cohort(root, centers=4, patients_per_center=1, slides_per_patient=3)
    path = root / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "manifest": str(root / "manifest.csv"),
                    "features_root": str(root),
                    "encoder": ENCODER,
                    "max_patches_train": 20,
                },
                "split": {
                    "kind": "fixed",
                    "train_centers": [0, 1],
                    "val_centers": [2],
                    "test_centers": [3],
                },
                "model": {"name": "abmil", "kwargs": {"hidden_dim": 8, "attention_dim": 4}},
                "loss": {"name": "ce"},
                "trainer": {"max_epochs": 2, "patience": 0, "accelerator": "cpu"},
                "report": {"bootstrap": 5, "max_heatmaps": 0, "max_geojson": 0},
            }
        )
    )
    return path


def _train(config: Path, out: Path, *extra: str) -> int:
    return main(["--config", str(config), "--out_dir", str(out), *extra])


def test_a_second_run_into_a_held_folder_is_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with claim_folder(out, "train"):
        assert _train(config, out) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err
    assert "in use by another run" in err
    assert not (out / "config.yaml").exists()  # nothing written by the refused run
    assert _train(config, out) == 0  # released: the folder is free again
    assert not list(lock_dir(out).glob("*.lock"))


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_max_epochs_below_one_is_refused(config: Path, tmp_path: Path, epochs: str) -> None:
    assert _train(config, tmp_path / "run", "--trainer.max_epochs", epochs) == 2
    assert not (tmp_path / "run").exists()


def test_an_out_that_is_a_file_is_refused_before_any_work(config: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert _train(config, tmp_path / "file") == 2
    assert _train(config, tmp_path / "file" / "sub") == 2


def test_checkpoint_save_is_atomic_in_the_destination_folder(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> Any:
            raise RuntimeError("killed mid-save")

    io = AtomicCheckpointIO()
    final = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"state": torch.zeros(3)}, final)
    assert checkpoint_problem(final) is None
    good = final.read_bytes()
    with pytest.raises(RuntimeError, match="killed mid-save"):
        io.save_checkpoint({"state": torch.ones(3), "x": Boom()}, final)
    assert final.read_bytes() == good  # the previous checkpoint is untouched
    assert find_temp_files(tmp_path) == []


def test_resume_sets_aside_an_unloadable_checkpoint_and_uses_the_last_good_one(
    config: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    out = tmp_path / "run"
    assert _train(config, out) == 0
    checkpoints = out / "fixed" / "checkpoints"
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # what a full disk left before issue 24
    assert checkpoint_problem(last) is not None
    assert _train(config, out, "--resume", "true", "--trainer.max_epochs", "3") == 0
    assert (checkpoints / "last.ckpt.unloadable").is_file()
    assert checkpoint_problem(last) is None
    assert any("cannot load checkpoint" in str(w.message) for w in recwarn.list)
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 2  # resumed from best-epoch=*, trained up to max_epochs 3


def _blank(config: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the cohort whose first training and first test slide are blank."""
    import shutil

    import numpy as np

    from wsi_ncmi.batch import atomic_output
    from wsi_ncmi.features.store import FeatureFileWriter, feature_path
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth.bags import bag_attrs

    root = tmp_path / "bags"
    shutil.copytree(config.parent, root)
    settings = yaml.safe_load(config.read_text())
    settings["data"] |= {"manifest": str(root / "manifest.csv"), "features_root": str(root)}
    (root / "run.yaml").write_text(yaml.safe_dump(settings))
    rows = read_manifest(root / "manifest.csv")
    blank = [next(r.slide_id for r in rows if r.center == c) for c in (0, 3)]
    for slide_id in blank:
        with atomic_output(feature_path(root, ENCODER, slide_id)) as tmp:
            attrs = bag_attrs(slide_id, ENCODER, 16)
            FeatureFileWriter(tmp, np.zeros((0, 2), np.int64), 16, "float16", attrs).finish()
    return root / "run.yaml", blank


def test_blank_slides_are_excluded_and_counted(config: Path, tmp_path: Path) -> None:
    """Issue 24 #8: no_tissue slides leave training and evaluation, with a count."""
    import json

    blank_config, blank = _blank(config, tmp_path)
    out = tmp_path / "run"
    assert _train(blank_config, out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["no_tissue_excluded"] == sorted(blank)
    assert blank[1] not in (out / "predictions.csv").read_text()
    note = f"{len(blank)} blank slide(s) without tissue (no_tissue) excluded"
    assert note in (out / "summary.txt").read_text()
    assert note in (out / "report.html").read_text()
    # --include_empty keeps the old behaviour: the run stops, naming the slide.
    assert _train(blank_config, tmp_path / "old", "--data.include_empty") == 1


def test_a_full_disk_leaves_no_truncated_checkpoint(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: --out on a tiny filesystem. rc 1, one line, no partial .ckpt."""
    point = tmp_path / "small"
    if not mount_tmpfs(point, "size=400k"):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        code = _train(config, point / "run", "--model.kwargs.hidden_dim", "512")
        err = capsys.readouterr().err
        assert code == 1, err
        assert "DiskFullError" in err
        assert "Traceback" not in err
        for ckpt in point.rglob("*.ckpt"):
            with zipfile.ZipFile(ckpt) as archive:  # every file under a final name is whole
                assert archive.testzip() is None
        assert find_temp_files(point) == []
    finally:
        umount(point)


@pytest.mark.slow  # two wsi-train processes
def test_two_concurrent_runs_into_one_folder_one_runs_one_is_refused(
    config: Path, tmp_path: Path
) -> None:
    """The issue's case: two runs started together; the loser is refused and writes nothing."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "wsi_ncmi.cli.train", "--config", str(config),
               "--out_dir", str(out), "--trainer.max_epochs", "8"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes == [0, 2], errors
    winner, loser = (0, 1) if runs[0].returncode == 0 else (1, 0)
    assert f"pid {runs[winner].pid}" in errors[loser]
    assert "Traceback" not in errors[loser]
    assert not (lock_dir(out) / "train.lock").exists()
    assert len(list((out / "fixed" / "logs").glob("version_*"))) == 1  # one writer
    assert not list((out / "fixed" / "checkpoints").glob("*-v1.ckpt"))


def test_workers_and_progress_are_the_shared_options(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24 minor: --workers and --progress, as on every wsi-* command."""
    from wsi_ncmi.cli.train import with_common_options
    from wsi_ncmi.train.config import TrainConfig

    argv = ["--config", str(config), "--workers", "2", "--progress", "false", "--print_config"]
    assert main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["workers"], printed["progress"]) == (2, False)
    applied = with_common_options(TrainConfig(), 2, True)
    assert (applied.data.num_workers, applied.trainer.progress_bar) == (2, True)
    assert with_common_options(TrainConfig(), None, None) == TrainConfig()
    assert main(["--config", str(config), "--workers", "-1", "--out_dir", "/nonexistent/x"]) == 2
