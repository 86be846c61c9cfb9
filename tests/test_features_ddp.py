"""wsi-extract under Lightning DDP on the CPU (2 processes, gloo) = the single-process run.

The single-process run is made in the test's own process (no second interpreter start).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _features import make_cohort

from wsi_ncmi.cli.extract import main as extract_main


def _args(coords: Path, out: Path) -> list[str]:
    return [
        "--coords_dir", str(coords), "--out_dir", str(out), "--encoder", "random-cnn",
        "--random_init", "--device", "cpu", "--workers", "0", "--progress=false",
    ]  # fmt: skip


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_two_process_ddp_extraction_equals_one_process(tmp_path: Path) -> None:
    coords, _ = make_cohort(tmp_path, n_slides=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the DDP ranks below (OMP_NUM_THREADS=1)
    try:
        assert extract_main(_args(coords, tmp_path / "one")) == 0  # in this process
    finally:
        torch.set_num_threads(threads)
    command = [sys.executable, "-m", "wsi_ncmi.cli.extract", *_args(coords, tmp_path / "two")]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [*command, "--devices", "2"], capture_output=True, text=True, timeout=600, env=env
    )
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
