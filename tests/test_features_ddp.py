"""wsi-extract under Lightning DDP on the CPU (2 processes, gloo) = the single-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from _features import make_cohort


def _extract(coords: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "wsi_ncmi.cli.extract", "--coords_dir", str(coords)]
    command += ["--out", str(out), "--encoder", "random-cnn", "--random_init"]
    command += ["--device", "cpu", "--workers", "0", "--progress=false", *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_two_process_ddp_extraction_equals_one_process(tmp_path: Path) -> None:
    coords, _ = make_cohort(tmp_path, n_slides=3)
    one = _extract(coords, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _extract(coords, tmp_path / "two", "--devices", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    reports = sorted((tmp_path / "two" / "features" / "random-cnn").glob("report-rank*.json"))
    assert [r.name for r in reports] == ["report-rank0.json", "report-rank1.json"]  # 2 ranks ran
    for i in range(3):
        name = f"slide{i}.h5"
        with (
            h5py.File(tmp_path / "one" / "features" / "random-cnn" / name) as a,
            h5py.File(tmp_path / "two" / "features" / "random-cnn" / name) as b,
        ):
            for key in ("features", "coords", "valid"):
                assert np.array_equal(a[key][()], b[key][()]), (name, key)
            assert a.attrs["extraction_hash"] == b.attrs["extraction_hash"]
