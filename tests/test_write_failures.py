"""Every write failure is one clear per-slide error: no crash, no hang, no traceback.

EFBIG is produced for real with ``RLIMIT_FSIZE`` in a child process (SIGXFSZ ignored,
so ``write`` fails with errno 27 instead of killing the process); a read-only folder
with a read-only tmpfs mount (skipped where mounting is not allowed).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _cli_args import EXTRACT_CPU, TILE_SMALL
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.batch import atomic_output, find_temp_files
from wsi_ncmi.errors import DiskFullError, OutputWriteError

REPO = Path(__file__).resolve().parents[1]
TILE = TILE_SMALL
EXTRACT = (*EXTRACT_CPU, "--dtype", "float32")


def _limited(max_bytes: int) -> None:  # preexec_fn: runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored signals stay ignored over exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def _run(module: str, args: list[str], max_bytes: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=None if max_bytes is None else lambda: _limited(max_bytes),
        check=False,
    )


def _in_process(module: str, args: list[str]) -> int:
    """The CLI's ``main`` in this process (no interpreter start): its exit code."""
    import importlib

    return int(importlib.import_module(module).main(args))


def _results(out: Path, stage: str) -> dict[str, dict[str, object]]:
    path = sorted((out / "reports").glob(f"{stage}_*.json"))[-1]
    return {r["item_id"]: r for r in json.loads(path.read_text())["results"]}


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiled")
    (root / "slides").mkdir()
    for i in range(3):
        write_pyramid_tiff(root / "slides" / f"s{i}.tif", tissue_image(640, 480, seed=i))
    done = _run("wsi_ncmi.cli.tile", [str(root / "slides"), "--out_dir", str(root / "out"), *TILE])
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_efbig_in_wsi_extract_is_a_per_slide_error(tiled: Path, tmp_path: Path) -> None:
    """Was: segmentation fault (rc 139) and the remaining slides never processed."""
    out = tmp_path / "out"
    os.symlink(tiled / "out" / "coords", tmp_path / "coords")
    args = ["--out_dir", str(out), "--coords_dir", str(tmp_path / "coords"), *EXTRACT]
    done = _run("wsi_ncmi.cli.extract", [*args, "--workers", "0", "--skip_errors"], 20_000)
    assert done.returncode == 1, done.stderr[-2000:]
    results = _results(out, "wsi-extract")
    assert sorted(results) == ["s0", "s1", "s2"]  # every slide was tried
    for result in results.values():
        assert result["status"] == "failed"
        assert result["error_type"] == "OutputWriteError"
        assert "[EFBIG] File too large" in str(result["reason"])
        assert "ulimit -f" in str(result["reason"])
    assert find_temp_files(out) == []
    assert _in_process("wsi_ncmi.cli.extract", [*args, "--workers", "0"]) == 0  # no limit
    assert {r["status"] for r in _results(out, "wsi-extract").values()} == {"ok"}


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_workers_that_cannot_share_memory_stop_cleanly(tiled: Path, tmp_path: Path) -> None:
    """Was: a hang once the workers' shared memory could not grow (full /dev/shm)."""
    out = tmp_path / "out"
    args = ["--out_dir", str(out), "--coords_dir", str(tiled / "out" / "coords"), *EXTRACT]
    done = _run("wsi_ncmi.cli.extract", [*args, "--workers", "1", "--skip_errors"], 60_000)
    assert done.returncode == 1
    assert "WorkerFailedError" in done.stderr
    assert "/dev/shm" in done.stderr
    assert "--workers 0" in done.stderr
    assert "Traceback" not in done.stderr
    results = _results(out, "wsi-extract")
    assert {r["error_type"] for r in results.values()} == {"WorkerFailedError"}
    assert find_temp_files(out) == []


def test_efbig_in_wsi_tile_is_an_output_write_error(tiled: Path, tmp_path: Path) -> None:
    """Was: 'OSError: unexpected error: [Errno 27] File too large'."""
    out = tmp_path / "out"
    done = _run("wsi_ncmi.cli.tile", [str(tiled / "slides"), "--out_dir", str(out), *TILE], 8_000)
    assert done.returncode == 1, done.stderr[-2000:]
    results = _results(out, "wsi-tile")
    assert sorted(results) == ["s0", "s1", "s2"]
    for result in results.values():
        assert result["error_type"] == "OutputWriteError"
        assert "unexpected" not in str(result["reason"])
        assert "[EFBIG]" in str(result["reason"])
    assert find_temp_files(out) == []


@pytest.mark.parametrize("stage", ["wsi_ncmi.cli.tile", "wsi_ncmi.cli.extract"])
def test_out_that_is_a_file_is_a_config_error(
    tiled: Path, tmp_path: Path, stage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: a 56-line traceback and rc 1 (wsi-tile)."""
    not_a_folder = tmp_path / "out.txt"
    not_a_folder.write_text("x")
    if stage.endswith("tile"):
        args = [str(tiled / "slides"), "--out_dir", str(not_a_folder), *TILE]
    else:
        coords = str(tiled / "out" / "coords")
        args = ["--out_dir", str(not_a_folder), "--coords_dir", coords, *EXTRACT]
    assert _in_process(stage, args) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err or "error:" in err
    assert "is a file, not a folder" in err
    assert "Traceback" not in err


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "ro"
    point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, check=False)


@pytest.mark.parametrize("stage", ["wsi_ncmi.cli.tile", "wsi_ncmi.cli.extract"])
def test_read_only_out_is_a_config_error_before_any_work(
    tiled: Path, read_only_dir: Path, stage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: a Lightning traceback and an empty run report (wsi-extract)."""
    if stage.endswith("tile"):
        args = [str(tiled / "slides"), "--out_dir", str(read_only_dir), *TILE]
    else:
        coords = str(tiled / "out" / "coords")
        args = ["--out_dir", str(read_only_dir), "--coords_dir", coords, *EXTRACT]
    assert _in_process(stage, args) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EFBIG, "ulimit -f"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permissions"),
        (errno.EIO, "I/O error"),
        (errno.EDQUOT, "Free space"),
        (errno.ENOSPC, "Free space"),
    ],
)
def test_each_write_errno_is_one_error_class(tmp_path: Path, code: int, fix: str) -> None:
    final = tmp_path / "out.h5"

    def write() -> None:
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(code, os.strerror(code))

    with pytest.raises(OutputWriteError) as info:
        write()
    assert info.value.errno == code
    assert str(final) in str(info.value)
    assert fix in str(info.value)
    assert isinstance(info.value, DiskFullError) == (code in (errno.ENOSPC, errno.EDQUOT))
    assert not final.exists()
    assert find_temp_files(tmp_path) == []


def test_hdf5_runtime_error_text_is_mapped(tmp_path: Path) -> None:
    hdf5 = RuntimeError("Can't write image to file (file write failed: errno = 27, error")
    with pytest.raises(OutputWriteError, match=r"\[EFBIG\]"), atomic_output(tmp_path / "x"):
        raise hdf5


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_full_dev_shm_for_workers_stops_cleanly(tiled: Path, tmp_path: Path) -> None:
    """A real 256 KiB /dev/shm in a private mount namespace (skipped without unshare)."""
    import shutil

    prefix = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=256k tmpfs /dev/shm && "$@"']
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    probe = subprocess.run([*prefix, "sh", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot mount a private /dev/shm here")
    out = tmp_path / "out"
    args = ["--out_dir", str(out), "--coords_dir", str(tiled / "out" / "coords"), *EXTRACT]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [*prefix, "sh", sys.executable, "-m", "wsi_ncmi.cli.extract", *args, "--workers", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "WorkerFailedError" in last
    assert "/dev/shm" in last
    assert find_temp_files(out) == []


def test_eacces_out_is_a_config_error(tiled: Path, tmp_path: Path) -> None:
    """Root obeys permissions once CAP_DAC_OVERRIDE is dropped (skipped without setpriv)."""
    import shutil

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    no_dac = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None:
        pytest.skip("cannot run without CAP_DAC_OVERRIDE here")
    probe = subprocess.run([*no_dac, "touch", str(locked / "x")], capture_output=True, check=False)
    if probe.returncode == 0:
        pytest.skip("permissions are not enforced here")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [str(tiled / "slides"), "--out_dir", str(locked), *TILE]
    done = subprocess.run(
        [*no_dac, sys.executable, "-m", "wsi_ncmi.cli.tile", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "[EACCES] Permission denied" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_a_killed_dataloader_worker_stops_the_run_cleanly(tmp_path: Path) -> None:
    """A worker killed mid-run (as the kernel's OOM killer would) is a WorkerFailedError."""
    import time

    (tmp_path / "slides").mkdir()
    for i in range(3):
        write_pyramid_tiff(tmp_path / "slides" / f"s{i}.tif", tissue_image(2048, 1536, seed=i))
    done = _run("wsi_ncmi.cli.tile", [str(tmp_path / "slides"), "--out_dir", str(tmp_path), *TILE])
    assert done.returncode == 0, done.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # PyTorch reports a worker killed by a signal at once (SIGCHLD); should that report
    # be lost, the stall timeout still ends the run, well inside this test's own wait.
    args = [
        "--out_dir", str(tmp_path), *EXTRACT, "--workers", "1", "--batch_size", "8",
        "--loader_timeout_s", "60",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsi_ncmi.cli.extract", *args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    killed = False
    deadline = time.monotonic() + 120
    # PyTorch names its DataLoader workers "pt_data_worker". Other children (a library's
    # `uname -p` at import, a fork on its way to exec) are left alone.
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        tasks = Path(f"/proc/{proc.pid}/task")
        for task in tasks.glob("*/children") if tasks.is_dir() else []:
            for child in task.read_text().split():
                try:
                    if Path(f"/proc/{child}/comm").read_text().strip() != "pt_data_worker":
                        continue
                    os.kill(int(child), signal.SIGKILL)
                    killed = True
                    break
                except (ProcessLookupError, FileNotFoundError):
                    continue  # it ended between the listing and the kill: look again
            if killed:
                break
        time.sleep(0.05)
    if not killed:
        proc.kill()
        pytest.skip("the run ended before its DataLoader worker could be found")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "WorkerFailedError" in last
    assert "DataLoader worker died" in last or "stalled" in last
    assert "/dev/shm" in last
    assert find_temp_files(tmp_path) == []


def test_unwritable_features_folder_is_a_config_error(tiled: Path, tmp_path: Path) -> None:
    """Was: a Lightning traceback and an empty run report (wsi-extract)."""
    import shutil

    no_dac = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if shutil.which("setpriv") is None:
        pytest.skip("cannot run without CAP_DAC_OVERRIDE here")
    out = tmp_path / "out"
    (out / "features" / "random-cnn").mkdir(parents=True)
    (out / "features" / "random-cnn").chmod(0o555)
    probe = subprocess.run([*no_dac, "touch", str(out / "features" / "random-cnn" / "x")],
                           capture_output=True, check=False)  # fmt: skip
    if probe.returncode == 0:
        pytest.skip("permissions are not enforced here")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = ["--out_dir", str(out), "--coords_dir", str(tiled / "out" / "coords"), *EXTRACT]
    done = subprocess.run(
        [*no_dac, sys.executable, "-m", "wsi_ncmi.cli.extract", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{out / 'features' / 'random-cnn'}' is not writable" in done.stderr
    assert "[EACCES]" in done.stderr
    assert "Traceback" not in done.stderr
