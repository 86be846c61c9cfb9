"""Write failures other than a full disk: file-size limit, no permission, read-only, /dev/shm.

* EFBIG: ``wsi-tile`` and ``wsi-extract --workers 0 --skip_errors`` under a file-size
  limit (``RLIMIT_FSIZE`` in the child, SIGXFSZ ignored so ``write`` fails with errno 27).
  Every slide must fail with ``OutputWriteError`` (no segmentation fault, no "unexpected
  error"), no temp file may be left, and a rerun without the limit must produce outputs
  bitwise equal to an undisturbed run.
* EACCES: both commands run without ``CAP_DAC_OVERRIDE`` (``setpriv``; root then obeys
  file permissions) with ``--out_dir`` a ``0555`` folder; EROFS: ``--out_dir`` on a read-only
  tmpfs. Both must stop with ``ConfigError``, exit code 2 and no traceback, before any
  work.
* A full ``/dev/shm``: ``wsi-extract --workers 1`` in a private mount namespace
  (``unshare -m``) whose ``/dev/shm`` is a 256 KiB tmpfs, so DataLoader workers cannot
  hand over a batch (caught by the probe at worker start), and one of 500 KiB that fills
  up mid-run (caught by ``--loader_timeout_s 20``). Both must stop cleanly with
  ``WorkerFailedError`` naming /dev/shm (exit 1, no hang). Without ``unshare``/``mount``
  the limit is simulated with ``RLIMIT_FSIZE``, which stops the shared-memory files
  growing the same way.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faults.common import (
    PYTHON,
    REPO,
    TILE_ARGS_1UM,
    Tally,
    compare_h5,
    quiet_env,
    temp_files,
)
from faults.kill import EXTRACT, TILE, extract_args
from faults.repair import small_slide

TILE_ARGS = TILE_ARGS_1UM


def _fsize_limit(max_bytes: int) -> Callable[[], None]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # stays ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def _run(
    module: str,
    args: list[str],
    *,
    preexec: Callable[[], None] | None = None,
    prefix: tuple[str, ...] = (),
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, PYTHON, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env=quiet_env(None), preexec_fn=preexec, check=False,
    )  # fmt: skip


def _results(out: Path, stage: str) -> dict[str, dict[str, Any]]:
    paths = sorted((out / "reports").glob(f"{stage}_*.json"))
    if not paths:
        return {}
    return {r["item_id"]: r for r in json.loads(paths[-1].read_text())["results"]}


def _cohort(root: Path) -> tuple[Path, Path]:
    """Three slides and their undisturbed tile + extract run (the reference)."""
    slides, ref = root / "slides", root / "ref"
    for i in range(3):
        small_slide(slides / f"slide_{i}.tif", seed=i)
    _run(TILE, [str(slides), "--out_dir", str(ref), *TILE_ARGS])
    _run(EXTRACT, extract_args(ref / "coords", ref))
    return slides, ref


def _compare(out: Path, ref: Path, sub: str, tally: Tally) -> int:
    lost = 0
    for want in sorted((ref / sub).glob("*.h5")):
        compared, missing = compare_h5(out / sub / want.name, want)
        tally.outputs_compared += 1
        tally.bytes_compared += compared
        lost += missing
    tally.bytes_lost += lost
    return lost


def _efbig(stage: str, slides: Path, ref: Path, work: Path, tally: Tally, limit: int) -> None:
    out = work / f"efbig_{stage}"
    if stage == "tile":
        module, args, sub = TILE, [str(slides), "--out_dir", str(out), *TILE_ARGS], "coords"
    else:
        module, sub = EXTRACT, "features/random-cnn"
        args = [*extract_args(ref / "coords", out), "--skip_errors"]
    tally.injected += 1
    done = _run(module, args, preexec=_fsize_limit(limit))
    results = _results(out, f"wsi-{'tile' if stage == 'tile' else 'extract'}")
    types = {r.get("error_type") for r in results.values()}
    clear = done.returncode == 1 and types == {"OutputWriteError"} and len(results) == 3
    clear = clear and all("[EFBIG]" in str(r.get("reason")) for r in results.values())
    left = temp_files(out)
    tally.temp_left += len(left)
    reason = next(iter(results.values()), {}).get("reason", done.stderr[-300:])
    tally.notes.append(f"EFBIG wsi-{stage}: exit {done.returncode}, {str(reason)[:160]}")
    if not clear:
        tally.fail(f"EFBIG wsi-{stage}: exit {done.returncode}, types {types}, {reason}")
    rerun = _run(module, args)  # the fix: no limit
    lost = _compare(out, ref, sub, tally)
    tally.recovered += int(clear and not left and rerun.returncode == 0 and lost == 0)


def _config_error(name: str, module: str, args: list[str], tally: Tally, **kw: Any) -> None:
    tally.injected += 1
    done = _run(module, args, **kw)
    text = done.stderr.strip()
    ok = done.returncode == 2 and "Traceback" not in text and "--out" in text
    tally.notes.append(
        f"{name}: exit {done.returncode}: {text.splitlines()[-1][:200] if text else ''}"
    )
    if not ok:
        tally.fail(
            f"{name}: expected exit 2 and a ConfigError, got {done.returncode}: {text[-400:]}"
        )
    tally.recovered += int(ok)


#: Runs a command as root without the capabilities that bypass file permissions.
NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def _permissions(slides: Path, ref: Path, work: Path, tally: Tally) -> None:
    locked = work / "eacces_out"
    locked.mkdir(parents=True, exist_ok=True)
    os.chmod(locked, 0o555)  # nobody may write in it, root included once DAC is dropped
    probe = subprocess.run([*NO_DAC, "touch", str(locked / "probe")], capture_output=True,
                           check=False)  # fmt: skip
    if probe.returncode == 0 or shutil.which("setpriv") is None:
        (locked / "probe").unlink(missing_ok=True)
        tally.notes.append("EACCES: skipped (cannot drop CAP_DAC_OVERRIDE with setpriv here)")
        return
    _config_error("EACCES wsi-tile", TILE, [str(slides), "--out_dir", str(locked), *TILE_ARGS],
                  tally, prefix=NO_DAC)  # fmt: skip
    _config_error("EACCES wsi-extract", EXTRACT, extract_args(ref / "coords", locked), tally,
                  prefix=NO_DAC)  # fmt: skip


def _read_only(slides: Path, ref: Path, work: Path, tally: Tally) -> None:
    point = work / "readonly_out"
    point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)],
                             capture_output=True, check=False)  # fmt: skip
    if mounted.returncode != 0:
        tally.notes.append("EROFS: skipped (cannot mount a read-only tmpfs here)")
        return
    try:
        args = [str(slides), "--out_dir", str(point), *TILE_ARGS]
        _config_error("EROFS wsi-tile", TILE, args, tally)
        _config_error("EROFS wsi-extract", EXTRACT, extract_args(ref / "coords", point), tally)
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, check=False)


def _full_shm(ref: Path, work: Path, tally: Tally, size_kb: int, stall: bool) -> None:
    """``/dev/shm`` of ``size_kb``: too small for one batch, or filling up mid-run."""
    out = work / f"shm_out_{size_kb}k"
    args = [*extract_args(ref / "coords", out), "--loader_timeout_s", "20"]
    args[args.index("--workers") + 1] = "1"
    script = f'mount -t tmpfs -o size={size_kb}k tmpfs /dev/shm && exec "$@"'
    prefix = ("unshare", "-m", "sh", "-c", script, "sh")
    ok_ns = subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0
    tally.injected += 1
    how = f"unshare -m + {size_kb} KiB /dev/shm" if ok_ns else "RLIMIT_FSIZE (simulated)"
    try:
        if ok_ns:
            done = _run(EXTRACT, args, prefix=prefix, timeout=600)
        else:
            done = _run(EXTRACT, args, preexec=_fsize_limit(size_kb * 1000), timeout=600)
    except subprocess.TimeoutExpired:
        tally.fail(f"full /dev/shm ({how}): hang, no exit within 600 s")
        return
    text = done.stderr.strip()
    last = text.splitlines()[-1] if text else ""
    ok = done.returncode == 1 and "WorkerFailedError" in last and "/dev/shm" in last
    ok = ok and ("stalled" in last) == stall and not temp_files(out)
    tally.notes.append(f"full /dev/shm ({how}): exit {done.returncode}: {last[:150]}")
    if not ok:
        tally.fail(f"full /dev/shm ({how}): exit {done.returncode}: {last[:400]}")
    tally.temp_left += len(temp_files(out))
    tally.recovered += int(ok)


def write_failure_trials(work: Path) -> Tally:
    """Every trial of the module docstring; one tally."""
    tally = Tally("EFBIG/EACCES/EROFS/full /dev/shm", command="see tools/faults/writefail.py")
    root = work / "writefail"
    slides, ref = _cohort(root)
    _efbig("tile", slides, ref, root, tally, limit=8_000)
    _efbig("extract", slides, ref, root, tally, limit=20_000)
    _permissions(slides, ref, root, tally)
    _read_only(slides, ref, root, tally)
    _full_shm(ref, root, tally, 256, stall=False)  # caught by the probe at worker start
    _full_shm(ref, root, tally, 500, stall=True)  # fills mid-run: caught by the timeout
    return tally
