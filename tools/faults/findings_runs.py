"""Issue 24's process, disk and command-line findings, one harness row each.

Two ``wsi-train`` runs into one folder, a full disk during training (and the resume
after it), an unwritable ``--out``, ``max_epochs 0``, the README's commands run outside
the repository, Ctrl-C in ``wsi-tile``, a FIFO named ``.svs``, an already full disk under
``wsi-extract`` and the shared ``--workers``/``--progress`` options. Helpers are
:mod:`faults.findings`'.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from faults.common import (
    PYTHON,
    TILE_ARGS_1UM,
    Tally,
    lock_files,
    mount_tmpfs,
    quiet_env,
    remount_tmpfs,
    temp_files,
    umount,
)
from faults.findings import (
    IMPORT,
    TRAIN,
    bag_config,
    check,
    clean_exit,
    last_line,
    run,
    trident_file,
)
from faults.kill import EXTRACT, TILE, extract_args
from faults.repair import small_slide

BENCH = "wsi_ncmi.cli.bench"
SYNTH = "wsi_ncmi.cli.synth"


def _start(module: str, args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([PYTHON, "-m", module, *args], cwd=cwd, env=quiet_env(None),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


# -- 3: one writer per training folder -----------------------------------------------------
def two_trainings(work: Path) -> Tally:
    """Two ``wsi-train`` started together into one ``--out_dir``: one runs, one is refused."""
    tally = Tally(
        "#3 two wsi-train, one --out_dir", command="wsi-train & wsi-train (same --out_dir)"
    )
    root = work / "two"
    shutil.rmtree(root, ignore_errors=True)
    config = bag_config(root / "bags", "two", epochs=4)
    out = root / "run"
    args = ["--config", str(config), "--out_dir", str(out)]
    procs = [_start(TRAIN, [*args, "--loss.name", loss], root) for loss in ("ce", "ncmi_mil")]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    loser = 0 if procs[0].returncode == 2 else 1
    named = f"pid {procs[1 - loser].pid}" in errors[loser]
    versions = list((out / "fixed" / "logs").glob("version_*"))
    doubles = list((out / "fixed" / "checkpoints").glob("*-v1.ckpt"))
    ok = codes == [0, 2] and named and "Traceback" not in errors[loser]
    ok = ok and len(versions) == 1 and not doubles
    line = errors[loser].strip().splitlines()[-1] if errors[loser].strip() else ""
    check(tally, "one runs, one refused naming the holder", ok,
          f"exits {codes}, log versions {len(versions)}: {line}")  # fmt: skip
    tally.locks_left += len(lock_files(out))
    tally.temp_left += len(temp_files(out))
    return tally


# -- 4: a full disk during training --------------------------------------------------------
def _ckpts_whole(root: Path) -> tuple[int, int]:
    whole = broken = 0
    for ckpt in root.rglob("*.ckpt"):
        try:
            with zipfile.ZipFile(ckpt) as archive:
                broken_member = archive.testzip()
        except (OSError, zipfile.BadZipFile):
            broken_member = "?"
        whole, broken = (whole + 1, broken) if broken_member is None else (whole, broken + 1)
    return whole, broken


def training_disk_full(work: Path) -> Tally:
    """``--out_dir`` on a 400 KB tmpfs; then room is made and ``--resume true`` continues."""
    tally = Tally("#4 full disk during wsi-train", command="wsi-train --out_dir <400 KB tmpfs>")
    root = work / "trainfull"
    shutil.rmtree(root, ignore_errors=True)
    config = bag_config(root / "bags", "full", epochs=3)
    point = root / "tinyfs"
    if not mount_tmpfs(point, "size=400k"):
        tally.notes.append("skipped the tmpfs trial: cannot mount here (not root)")
    else:
        try:
            args = ["--config", str(config), "--out_dir", str(point / "run"),
                    "--model.kwargs", "{hidden_dim: 512, attention_dim: 256}"]  # fmt: skip
            done = run(TRAIN, args, root)
            whole, broken = _ckpts_whole(point)
            tally.partial_accepted += broken
            tally.temp_left += len(temp_files(point))
            check(tally, "disk full: one line, no truncated checkpoint",
                  clean_exit(done, 1, "DiskFullError") and not broken,
                  f"exit {done.returncode}, {whole} whole / {broken} broken .ckpt: "
                  f"{last_line(done)}")  # fmt: skip
            remount_tmpfs(point, "size=64m")
            again = run(TRAIN, [*args, "--resume", "true"], root)
            check(tally, "room made: --resume true finishes", again.returncode == 0,
                  f"exit {again.returncode}: {last_line(again)}")  # fmt: skip
        finally:
            umount(point)
    out = root / "run"  # an unloadable last.ckpt, as the old atomic save left it
    first = run(TRAIN, ["--config", str(config), "--out_dir", str(out)], root)
    last = out / "fixed" / "checkpoints" / "last.ckpt"
    if first.returncode == 0 and last.is_file():
        last.write_bytes(last.read_bytes()[: 118_784 // 8])
    resumed = run(TRAIN, ["--config", str(config), "--out_dir", str(out), "--resume", "true",
                          "--trainer.max_epochs", "4"], root)  # fmt: skip
    ok = resumed.returncode == 0 and (last.parent / "last.ckpt.unloadable").is_file()
    ok = ok and _ckpts_whole(last.parent)[1] == 0
    check(tally, "--resume with a truncated last.ckpt falls back", ok,
          f"exit {resumed.returncode}: {last_line(resumed)}")  # fmt: skip
    return tally


# -- 5: unwritable --out -------------------------------------------------------------------
def unwritable_out(work: Path) -> Tally:
    """``--out`` an existing file, or on a read-only filesystem: rc 2 before any work.

    ``wsi-tile`` and ``wsi-extract`` have the same check (the ``writefail`` kind).
    """
    tally = Tally("#5 unwritable --out, 4 CLIs", command="--out <file | ro fs>")
    root = work / "unwritable"
    shutil.rmtree(root, ignore_errors=True)
    config = bag_config(root / "bags", "unwritable")
    src = root / "features_uni"
    trident_file(src / "s.h5", 10)
    (root / "file").write_text("not a folder")
    targets = [("an existing file", root / "file")]
    point = root / "ro"
    if mount_tmpfs(point, "ro,size=1m"):
        targets.append(("a read-only filesystem", point))
    else:
        tally.notes.append("EROFS: skipped (cannot mount a read-only tmpfs here)")
    try:
        for what, out in targets:
            commands = {
                "wsi-train": (TRAIN, ["--config", str(config), "--out_dir", str(out)]),
                "wsi-bench": (BENCH, ["--config", "bench/synthetic_demo.yaml", "--output_root",
                                      str(out)]),
                "wsi-import-features": (IMPORT, [str(src), "--format", "trident", "--out_dir",
                                                 str(out), "--encoder", "uni"]),
                "wsi-synth-cohort": (SYNTH, ["--preset", "demo", "--out_dir", str(out)]),
            }  # fmt: skip
            for name, (module, args) in commands.items():
                done = run(module, args, root)
                ok = clean_exit(done, 2, "--out", "ConfigError")  # --out_dir, --output_root, --out
                check(tally, f"{name}, --out {what}", ok, last_line(done))
    finally:
        umount(point)
    return tally


# -- 9: max_epochs < 1 ---------------------------------------------------------------------
def zero_epochs(work: Path) -> Tally:
    """``--trainer.max_epochs 0``: rc 2 and nothing written (was: rc 0, untrained metrics)."""
    tally = Tally("#9 max_epochs 0", command="wsi-train --trainer.max_epochs 0")
    root = work / "zero"
    shutil.rmtree(root, ignore_errors=True)
    config = bag_config(root / "bags", "zero")
    done = run(TRAIN, ["--config", str(config), "--out_dir", str(root / "run"),
                       "--trainer.max_epochs", "0"], root)  # fmt: skip
    ok = clean_exit(done, 2, "max_epochs") and not (root / "run").exists()
    check(tally, "refused, nothing written", ok, last_line(done))
    return tally


# -- 12: the README's commands outside the repository --------------------------------------
def readme_outside(work: Path) -> Tally:
    """``--config configs/...``, ``--list_configs`` and the default manifest, from elsewhere."""
    tally = Tally("#12 README commands outside repo", command="cd <elsewhere> && wsi-train")
    here = work / "elsewhere"
    here.mkdir(parents=True, exist_ok=True)
    cases = [
        ("wsi-train --config configs/camelyon17/abmil_ncmi.yaml",
         TRAIN, ["--config", "configs/camelyon17/abmil_ncmi.yaml", "--print_config"]),
        ("wsi-train --config camelyon17/abmil_ce.yaml",
         TRAIN, ["--config", "camelyon17/abmil_ce.yaml", "--print_config"]),
        ("wsi-bench --config configs/bench/camelyon17_loho.yaml",
         BENCH, ["--config", "configs/bench/camelyon17_loho.yaml", "--print_config"]),
        ("wsi-train --list_configs", TRAIN, ["--list_configs"]),
    ]  # fmt: skip
    for name, module, args in cases:
        done = run(module, args, here)
        check(tally, name, done.returncode == 0 and "Traceback" not in done.stderr,
              f"exit {done.returncode}: {last_line(done)}")  # fmt: skip
    probe = "from wsi_ncmi.manifest import read_manifest as r\n"
    probe += "print(len(r('data_manifests/camelyon17.csv')))"
    done = subprocess.run([PYTHON, "-c", probe], cwd=here, capture_output=True, text=True,
                          env=quiet_env(None), check=False)  # fmt: skip
    check(tally, "the default manifest", done.stdout.strip() == "500", done.stdout.strip()
          or last_line(done))  # fmt: skip
    return tally


# -- minor: Ctrl-C in wsi-tile, a FIFO, an already full disk, --workers/--progress ---------
def tile_ctrl_c(work: Path, trials: int = 3) -> Tally:
    """SIGINT to ``wsi-tile --workers 2`` mid-run: rc 130, no temp file, no lock left."""
    tally = Tally("minor: Ctrl-C in wsi-tile", command="wsi-tile --workers 2; SIGINT")
    root = work / "ctrlc"
    shutil.rmtree(root, ignore_errors=True)
    for i in range(6):
        small_slide(root / "slides" / f"s{i}.tif", seed=i, width=3072, height=2048)
    args = [str(root / "slides"), "--out_dir", str(root / "ref"), *TILE_ARGS_1UM]
    args[args.index("--workers") + 1] = "2"
    start = time.perf_counter()
    run(TILE, args, root)
    duration = time.perf_counter() - start
    for k in range(trials):
        out = root / f"out{k}"
        proc = _start(TILE, [*args[:2], str(out), *args[3:]], root)
        time.sleep(duration * (0.45 + 0.15 * k))
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        temps, locks = temp_files(out), lock_files(out)
        tally.temp_left += len(temps)
        tally.locks_left += len(locks)
        rerun = run(TILE, [*args[:2], str(out), *args[3:]], root)
        ok = proc.returncode in (0, 130) and "Traceback" not in err and rerun.returncode == 0
        check(tally, f"SIGINT at {0.45 + 0.15 * k:.0%}", ok and not temps and not locks,
              f"exit {proc.returncode}, {len(temps)} temps, {len(locks)} locks left")  # fmt: skip
    return tally


def fifo_slide(work: Path) -> Tally:
    """A FIFO named ``.svs`` beside a good slide: its own clear error, the batch goes on."""
    tally = Tally("minor: FIFO named .svs", command="wsi-tile <folder with a FIFO>")
    root = work / "fifo"
    shutil.rmtree(root, ignore_errors=True)
    small_slide(root / "slides" / "ok.tif", seed=0)
    os.mkfifo(root / "slides" / "pipe.svs")
    done = run(TILE, [str(root / "slides"), "--out_dir", str(root / "out"), *TILE_ARGS_1UM], root,
               timeout=120)  # fmt: skip
    report = sorted((root / "out" / "reports").glob("wsi-tile_*.json"))
    text = report[-1].read_text() if report else ""
    ok = done.returncode == 1 and "not a regular file" in text and "0-byte" not in text
    check(tally, "'not a regular file', not 'empty (0-byte)'", ok, f"exit {done.returncode}")
    return tally


def extract_on_full_disk(work: Path) -> Tally:
    """``wsi-extract`` onto a disk with a few KB free: rc 2 before any slide is computed."""
    tally = Tally("minor: extract on a full disk", command="wsi-extract --out_dir <full>")
    tiles = work / "fulltiles"
    shutil.rmtree(tiles, ignore_errors=True)
    for i in range(2):
        small_slide(tiles / "slides" / f"s{i}.tif", seed=i)
    run(TILE, [str(tiles / "slides"), "--out_dir", str(tiles / "out"), *TILE_ARGS_1UM], work)
    coords = tiles / "out" / "coords"
    point = work / "fullfs"
    if not mount_tmpfs(point, "size=1m"):
        tally.notes.append("skipped: cannot mount a tmpfs here (not root)")
        return tally
    try:
        free = os.statvfs(point).f_bavail * os.statvfs(point).f_frsize
        (point / "filler").write_bytes(b"x" * (free - 16 * 1024))
        start = time.perf_counter()
        done = run(EXTRACT, extract_args(coords, point / "out"), work)
        seconds = time.perf_counter() - start
        computed = list((point / "out" / "features").rglob("*.h5"))
        ok = clean_exit(done, 2, "ENOSPC") and not computed
        check(tally, "refused before computing", ok,
              f"exit {done.returncode} after {seconds:.0f} s: {last_line(done)}")  # fmt: skip
        tally.temp_left += len(temp_files(point))
    finally:
        umount(point)
    return tally


def shared_options(work: Path) -> Tally:
    """``--progress``, and ``--workers`` (``wsi-bench``: ``--jobs``), on wsi-train and wsi-bench."""
    tally = Tally("minor: --workers/--progress", command="wsi-train --workers, wsi-bench --jobs")
    here = work / "elsewhere"
    here.mkdir(parents=True, exist_ok=True)
    for module, config, workers in (
        (TRAIN, "synthetic/demo.yaml", "--workers"),
        (BENCH, "bench/synthetic_demo.yaml", "--jobs"),
    ):
        done = run(module, ["--config", config, workers, "2", "--progress", "false",
                            "--print_config"], here)  # fmt: skip
        name = "wsi-train" if module == TRAIN else "wsi-bench"
        check(tally, name, done.returncode == 0, f"exit {done.returncode}: {last_line(done)}")
    return tally


def all_findings() -> list[Callable[[Path], Tally]]:
    """Every check of issue 24, in the issue's order (the harness's ``findings`` kind)."""
    from faults import findings as data

    return [
        data.cwd_independence, data.slide_ids, two_trainings, training_disk_full,
        unwritable_out, data.huge_header, data.imported_features, data.blank_slide,
        zero_epochs, data.one_class_group, data.clam_strictness, readme_outside,
        tile_ctrl_c, fifo_slide, extract_on_full_disk, shared_options,
    ]  # fmt: skip


__all__ = [
    "all_findings",
    "extract_on_full_disk",
    "fifo_slide",
    "readme_outside",
    "shared_options",
    "tile_ctrl_c",
    "training_disk_full",
    "two_trainings",
    "unwritable_out",
    "zero_epochs",
]
