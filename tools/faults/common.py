"""Shared pieces of the fault harness: the tally, cohorts, output comparison, kills.

Every figure the harness prints comes from a :class:`Tally`: faults injected, runs that
recovered, outputs compared bitwise with an uninterrupted run, bytes lost (outputs
missing or different after recovery; must be 0), partial files accepted (must be 0)
and temp/lock files left behind (must be 0).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

#: Tiling parameters of the harness (small patches: many patches on tiny slides).
TILE_ARGS = ("--grid.target_mpp", "2.0", "--grid.patch_size_px", "64", "--progress=false")
#: One tiling worker at 1 µm/px (the lab, repair and write-failure kinds).
TILE_ARGS_1UM = ("--workers", "1", "--progress=false", "--grid.target_mpp", "1.0")
TILE_ARGS_1UM += ("--grid.patch_size_px", "64")


@dataclass
class Tally:
    """Figures of one fault kind."""

    kind: str
    injected: int = 0
    recovered: int = 0
    outputs_compared: int = 0
    bytes_compared: int = 0
    bytes_lost: int = 0
    partial_accepted: int = 0
    temp_left: int = 0
    locks_left: int = 0
    left_behind: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    command: str = ""

    @property
    def ok(self) -> bool:
        """Every injected fault recovered with nothing lost, accepted half-done or left."""
        return (
            self.recovered == self.injected
            and self.bytes_lost == 0
            and self.partial_accepted == 0
            and self.temp_left == 0
            and self.locks_left == 0
            and not self.problems
        )

    def fail(self, message: str) -> None:
        """Record a problem (the kind then counts as not ok)."""
        self.problems.append(message)

    def count_temp_left(self, root: Path) -> None:
        """Count the temp files left under ``root`` and keep their paths (relative to it)."""
        left = temp_files(root)
        self.temp_left += len(left)
        self.left_behind += [str(p.relative_to(root)) for p in left]


@dataclass
class HarnessReport:
    """All tallies of one harness run."""

    mode: str
    command: str
    tallies: list[Tally] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def add(self, tally: Tally) -> Tally:
        """Append and return ``tally``."""
        self.tallies.append(tally)
        return tally

    @property
    def ok(self) -> bool:
        """Whether every kind is ok."""
        return all(t.ok for t in self.tallies)

    def table(self) -> str:
        """The figures as a fixed-width text table plus the problems, if any."""
        head = (
            f"{'fault kind':<34} {'injected':>8} {'recovered':>9} {'outputs':>7} "
            f"{'bytes cmp':>10} {'lost':>4} {'partial':>7} {'temps':>5} {'locks':>5}"
        )
        lines = [head, "-" * len(head)]
        for t in self.tallies:
            lines.append(
                f"{t.kind:<34} {t.injected:>8} {t.recovered:>9} {t.outputs_compared:>7} "
                f"{t.bytes_compared:>10} {t.bytes_lost:>4} {t.partial_accepted:>7} "
                f"{t.temp_left:>5} {t.locks_left:>5}"
            )
        total = [sum(getattr(t, k) for t in self.tallies) for k in _SUMMED]
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<34} {total[0]:>8} {total[1]:>9} {total[2]:>7} {total[3]:>10} "
            f"{total[4]:>4} {total[5]:>7} {total[6]:>5} {total[7]:>5}"
        )
        for t in self.tallies:
            for note in t.notes:
                lines.append(f"  note    {t.kind}: {note}")
            for left in t.left_behind:
                lines.append(f"  LEFT    {t.kind}: {left}")
            for problem in t.problems:
                lines.append(f"  PROBLEM {t.kind}: {problem}")
        lines.append(f"{'ALL OK' if self.ok else 'FAILURES'} in {self.seconds:.0f} s")
        return "\n".join(lines)

    def write_json(self, path: Path) -> Path:
        """Write the report as JSON."""
        record = {
            "mode": self.mode,
            "command": self.command,
            "started": self.started,
            "seconds": self.seconds,
            "ok": self.ok,
            "tallies": [asdict(t) | {"ok": t.ok} for t in self.tallies],
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path


_SUMMED = (
    "injected",
    "recovered",
    "outputs_compared",
    "bytes_compared",
    "bytes_lost",
    "partial_accepted",
    "temp_left",
    "locks_left",
)


# -- cohorts ----------------------------------------------------------------------------
def synthetic_slides(root: Path, per_center: int = 1, centers: Sequence[int] = (0, 1, 2)) -> Path:
    """A small synthetic CAMELYON-like cohort (demo preset) under ``root``; returns it."""
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth import generate_cohort

    rows = read_manifest(REPO / "data_manifests" / "camelyon17.csv")
    generate_cohort(
        rows,
        root,
        preset="demo",
        seed=0,
        subset=per_center,
        use_preset_subset=False,
        centers=list(centers),
        progress=False,
    )
    return root


def slide_files(root: Path) -> list[Path]:
    """The ``.tif`` slides under ``root``, sorted."""
    return sorted(root.rglob("*.tif"))


# -- output inspection ------------------------------------------------------------------
def mount_tmpfs(point: Path, options: str) -> bool:
    """Mount a tmpfs with mount ``options`` (e.g. ``size=400k``, ``ro,size=1m``) at ``point``.

    Returns:
        Whether it is mounted (``False`` without the right to mount, e.g. not root).
    """
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def remount_tmpfs(point: Path, options: str) -> None:
    """Change a mounted tmpfs's options (``size=16m`` gives a full disk room again)."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


def umount(point: Path) -> None:
    """Detach what is mounted at ``point`` (lazily; nothing if nothing is)."""
    subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def temp_files(root: Path) -> list[Path]:
    """Temp files left by writers (``.*.tmp-*``, and fsspec/Lightning ``*.tmp`` files)."""
    from wsi_ncmi.batch import find_temp_files

    if not root.is_dir():
        return []
    extra = [p for p in root.rglob("*.tmp") if p.is_file()]
    return sorted({*find_temp_files(root), *extra})


def lock_files(root: Path) -> list[Path]:
    """Lock files left under ``root``."""
    return sorted(p for p in root.rglob("*.lock") if p.is_file()) if root.is_dir() else []


def h5_datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file, read whole."""
    import h5py

    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in h5 if isinstance(h5[name], h5py.Dataset)}


def compare_h5(got: Path, ref: Path) -> tuple[int, int]:
    """``(bytes compared, bytes lost)``: datasets of ``got`` vs ``ref``, bitwise.

    A missing or unreadable ``got`` loses all of ``ref``'s bytes; a dataset that differs
    in shape, dtype or any bit loses its bytes.
    """
    reference = h5_datasets(ref)
    total = sum(a.nbytes for a in reference.values())
    try:
        current = h5_datasets(got)
    except (OSError, KeyError):
        return total, total
    lost = 0
    for name, want in reference.items():
        have = current.get(name)
        same = (
            have is not None
            and have.shape == want.shape
            and have.dtype == want.dtype
            and have.tobytes() == want.tobytes()
        )
        lost += 0 if same else want.nbytes
    return total, lost


def compare_bytes(got: Path, ref: Path) -> tuple[int, int]:
    """``(bytes compared, bytes lost)`` of two plain files, byte for byte."""
    want = ref.read_bytes()
    if not got.is_file() or got.read_bytes() != want:
        return len(want), len(want)
    return len(want), 0


# -- processes ----------------------------------------------------------------------------
def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a process started with ``start_new_session=True`` and all its children."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_cli(
    module: str, args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <module> args`` to completion (one thread per process)."""
    return subprocess.run(
        [PYTHON, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=quiet_env(env),
        check=False,
    )


def start_cli(module: str, args: Sequence[str]) -> subprocess.Popen[str]:
    """Start ``python -m <module> args`` in its own process group."""
    return subprocess.Popen(
        [PYTHON, "-m", module, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=quiet_env(None),
        start_new_session=True,
    )


def quiet_env(extra: dict[str, str] | None) -> dict[str, str]:
    """Environment of child runs: one compute thread (bitwise-reproducible CPU maths)."""
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.update(extra or {})
    return env


def _fork_target(main: Callable[[list[str]], int], argv: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    os.setsid()  # its own process group: a kill reaches DataLoader workers too
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os._exit(int(main(argv) or 0))


def start_forked(main: Callable[[list[str]], int], argv: Sequence[str]) -> mp.Process:
    """Run a CLI's ``main(argv)`` in a forked process (no interpreter/torch start-up).

    The parent must not have run torch maths (no OpenMP pool) before forking.
    """
    proc = mp.get_context("fork").Process(target=_fork_target, args=(main, list(argv)))
    proc.start()
    return proc


def kill_forked(proc: mp.Process) -> None:
    """SIGKILL a process from :func:`start_forked` and its process group."""
    if proc.pid is not None:
        for kill in (os.killpg, os.kill):
            try:
                kill(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.join()


def run_forked(main: Callable[[list[str]], int], argv: Sequence[str], timeout: float = 900) -> int:
    """Run :func:`start_forked` to completion; return its exit code."""
    proc = start_forked(main, argv)
    proc.join(timeout)
    if proc.is_alive():
        kill_forked(proc)
        return -9
    return int(proc.exitcode or 0)


def kill_delays(trials: int, duration_s: float, seed: int) -> list[float]:
    """Random kill moments in ``[2 %, 98 %]`` of an uninterrupted run's duration."""
    rng = random.Random(seed)
    return [rng.uniform(0.02, 0.98) * duration_s for _ in range(trials)]
