"""Two `wsi-bench` jobs share one sweep (with `--shard i/2` or without): one report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wsi_ncmi.synth.bags import signal_bag_cohort

ENCODER = "signal16"


def _config(root: Path, manifest: Path, grid: bool = False) -> Path:
    config = {
        "name": "shared",
        "output_root": str(root / "bench"),
        "data": {"manifest": str(manifest), "features_root": str(root), "encoder": ENCODER},
        "prepare": {"enabled": False},
        "sweep": {
            "losses": [
                {"name": "ce", "grid": {"optim.lr": [0.01, 0.02]}} if grid else {"name": "ce"}
            ],
            "models": [{"name": "abmil", "kwargs": {"hidden_dim": 16, "attention_dim": 8}}],
            "seeds": [0, 1],
            "split": {"kind": "loho", "val_fraction": 0.25},
            "baseline": "ce",
            "treatment": "ce",
        },
        "train": {
            "data": {"batch_size": 4},
            "optim": {"lr": 0.01},
            "trainer": {"max_epochs": 2, "patience": 0, "accelerator": "cpu"},
            "report": {"bootstrap": 100, "max_heatmaps": 0, "max_geojson": 0},
        },
        "stats": {"bootstrap": 200},
        "jobs": 1,
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
@pytest.mark.parametrize(
    ("sharded", "grid"),
    [(True, False), (False, False), (False, True)],
    ids=["shard", "plain", "plain-grid"],
)
def test_two_jobs_share_a_sweep_and_one_writes_the_report(
    tmp_path: Path, sharded: bool, grid: bool
) -> None:
    """With ``--shard i/2``, or two plain runs of the same command meeting through the cell
    locks: either way each cell trains once, and the job that finds every cell done writes
    the report once, after the last cell (a plain job that left a cell to the other does
    not write a report that lacks it)."""
    manifest, _ = signal_bag_cohort(tmp_path, encoder=ENCODER, centers=5, patients_per_center=2)
    config = _config(tmp_path, manifest, grid)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "wsi_ncmi.cli.bench", "--config", str(config)]
    jobs = [
        subprocess.Popen(
            [*command, *(["--shard", f"{i}/2"] if sharded else []), "--progress=false"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    out = tmp_path / "bench" / "shared"
    cells = sorted((out / "cells").iterdir())
    # 5 loho folds x 2 seeds; with the grid, seed 0 trains both learning rates (tuning)
    assert len(cells) == (15 if grid else 10)
    pids = set()
    for cell in cells:
        result = json.loads((cell / "result.json").read_text())
        pids.add(result["pid"])
        # trained exactly once: a second training (or resume) would add a log version
        assert [p.name for p in (cell / "run" / "logs").iterdir()] == ["version_0"], cell
    assert pids <= {job.pid for job in jobs}
    assert not list((out / "locks").glob("*.lock"))  # every lock released
    # exactly one job wrote the report, after the last cell
    wrote = [o for o in outputs if "summary:" in o]
    assert len(wrote) == 1, outputs
    summary = (out / "summary.json").stat().st_mtime
    assert all(summary >= (c / "result.json").stat().st_mtime for c in cells)
    (other,) = [o for o in outputs if "summary:" not in o]
    assert (
        "the job that finishes the last cell writes the report" in other
        or "another job wrote the report during this run" in other
    ), other


def test_reports_are_written_once_per_run_but_again_on_a_rerun(tmp_path: Path) -> None:
    """The report lock and dates decide: a summary another job wrote during this run (newer
    than every cell result and than this job's start) is left; one from before this job
    started is rewritten, so rerunning a finished sweep refreshes its reports."""
    from wsi_ncmi.bench.config import BenchConfig
    from wsi_ncmi.bench.pipeline import write_reports_once
    from wsi_ncmi.bench.summaries import BenchReports
    from wsi_ncmi.bench.sweep import SweepOutcome

    config = BenchConfig(name="once", output_root=str(tmp_path))
    result = config.out_dir / "cells" / "a" / "result.json"
    result.parent.mkdir(parents=True)
    result.write_text("{}")
    summary = config.out_dir / "summary.json"
    calls: list[str] = []

    def write(cfg: BenchConfig, outcome: SweepOutcome) -> BenchReports:
        calls.append(cfg.name)
        summary.write_text("{}")
        return BenchReports("", {}, {"summary": str(summary)}, [], [], {})

    sweep = SweepOutcome(cells=[])
    # no summary yet: written
    assert write_reports_once(config, sweep, write, since=0.0) is not None
    # the summary dates from before this job began (a rerun): written again
    os.utime(summary, (1000.0, 1000.0))
    os.utime(result, (900.0, 900.0))
    assert write_reports_once(config, sweep, write, since=2000.0) is not None
    # another job wrote it during this run, after the last result: left as it is
    os.utime(summary, (3000.0, 3000.0))
    os.utime(result, (2500.0, 2500.0))
    assert write_reports_once(config, sweep, write, since=2000.0) is None
    # a cell finished after that summary: written again
    os.utime(result, (3500.0, 3500.0))
    assert write_reports_once(config, sweep, write, since=2000.0) is not None
    assert len(calls) == 3
    assert not list((config.out_dir / "locks").glob("*.lock"))
