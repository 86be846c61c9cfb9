"""Kill and resume: SIGKILL each stage at random moments, rerun, compare with a clean run.

For every trial: start the stage, SIGKILL its whole process group at a random moment of
an uninterrupted run's duration, then check what the kill left (every file under a final
name must be complete and equal to the reference; anything else is a *partial file
accepted*). In every other trial a finished output is also truncated in place, as an
interrupted copy would leave it; the rerun must redo it, not skip it. The stage is then
rerun to completion and every output compared bitwise with the uninterrupted run; temp
files and lock files left behind are counted.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from faults.common import (
    TILE_ARGS,
    Tally,
    compare_bytes,
    compare_h5,
    kill_delays,
    kill_forked,
    kill_group,
    lock_files,
    run_cli,
    run_forked,
    start_cli,
    start_forked,
)

TILE = "wsi_ncmi.cli.tile"
EXTRACT = "wsi_ncmi.cli.extract"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# -- wsi-tile -----------------------------------------------------------------------------
def tile_args(slides: Path, out: Path, workers: int = 2) -> list[str]:
    """``wsi-tile`` arguments of the harness."""
    return [str(slides), "--out_dir", str(out), "--workers", str(workers), *TILE_ARGS]


def tile_reference(slides: Path, out: Path) -> float:
    """Tile ``slides`` into ``out`` uninterrupted; return the wall time in seconds."""
    start = time.perf_counter()
    done = run_cli(TILE, tile_args(slides, out))
    if done.returncode != 0:
        raise RuntimeError(f"reference wsi-tile failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def _compare_tiling(out: Path, ref: Path, tally: Tally) -> int:
    lost = 0
    for coords in sorted((ref / "coords").glob("*.h5")):
        stem = coords.stem
        pairs = [
            (compare_h5, out / "coords" / coords.name, coords),
            (compare_bytes, out / "thumbnails" / f"{stem}.png", ref / "thumbnails" / f"{stem}.png"),
            (
                compare_bytes,
                out / "geojson" / f"{stem}.geojson",
                ref / "geojson" / f"{stem}.geojson",
            ),
        ]
        for compare, got, want in pairs:
            total, missing = compare(got, want)
            tally.outputs_compared += 1
            tally.bytes_compared += total
            lost += missing
    return lost


def _latest_report(reports: Path) -> dict[str, str]:
    path = max(reports.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    record = json.loads(path.read_text())
    return {r["item_id"]: r["status"] for r in record["results"]}


def tile_kill_resume(
    slides: Path, work: Path, trials: int, seed: int, planted: Tally | None = None
) -> Tally:
    """``trials`` SIGKILL-and-rerun trials of ``wsi-tile --workers 2``."""
    from wsi_ncmi.tiling import read_coords

    tally = Tally("kill+resume wsi-tile", command=f"wsi-tile {' '.join(TILE_ARGS)} --workers 2")
    ref = work / "tile_ref"
    duration = tile_reference(slides, ref)
    tally.notes.append(f"uninterrupted run {duration:.1f} s; kills at random moments in it")
    moments = {"before any output": 0, "mid-way": 0, "after all outputs": 0}
    for trial, delay in enumerate(kill_delays(trials, duration, seed)):
        out = work / f"tile_{trial}"
        proc = start_cli(TILE, tile_args(slides, out))
        time.sleep(delay)
        kill_group(proc)
        tally.injected += 1
        complete = set()
        for path in sorted((out / "coords").glob("*.h5")) if (out / "coords").is_dir() else []:
            try:
                read_coords(path)
            except Exception:
                tally.partial_accepted += 1  # an incomplete file under its final name
                continue
            if compare_h5(path, ref / "coords" / path.name)[1]:
                tally.partial_accepted += 1
            complete.add(path.stem)
        n_ref = len(list((ref / "coords").glob("*.h5")))
        key = "before any output" if not complete else "mid-way"
        moments["after all outputs" if len(complete) == n_ref else key] += 1
        victim = None
        if planted is not None and complete and trial % 2 == 0:
            victim = sorted(complete)[trial % len(complete)]
            _truncate(out / "coords" / f"{victim}.h5")
            planted.injected += 1
        done = run_cli(TILE, tile_args(slides, out))
        if done.returncode != 0:
            tally.fail(f"trial {trial}: rerun exit {done.returncode}: {done.stderr[-500:]}")
            continue
        status = _latest_report(out / "reports")
        skipped = {k for k, v in status.items() if v == "skipped"}
        expected = complete - {victim}
        if skipped != expected:
            tally.fail(f"trial {trial}: skipped {sorted(skipped)}, expected {sorted(expected)}")
        lost = _compare_tiling(out, ref, tally)
        tally.bytes_lost += lost
        tally.count_temp_left(out)
        tally.locks_left += len(lock_files(out / "locks"))
        if planted is not None and victim is not None:
            accepted = status.get(victim) != "ok"
            planted.partial_accepted += int(accepted)
            planted.recovered += int(not accepted and not lost)
            planted.outputs_compared += 1
        tally.recovered += int(lost == 0)
        shutil.rmtree(out)
    tally.notes.append("kill moments: " + ", ".join(f"{k} {v}" for k, v in moments.items()))
    return tally


# -- wsi-extract --------------------------------------------------------------------------
def extract_args(coords: Path, out: Path) -> list[str]:
    """``wsi-extract`` arguments of the harness (built-in random-init CNN, CPU)."""
    return [
        "--out_dir", str(out), "--coords_dir", str(coords), "--device", "cpu", "--workers", "0",
        "--batch_size", "32", "--random_init", "--allow_mpp_mismatch", "--progress=false",
    ]  # fmt: skip


def _extract_main() -> Callable[[list[str]], int]:
    from wsi_ncmi.cli.extract import main

    return main


def extract_kill_resume(
    coords: Path,
    work: Path,
    trials: int,
    seed: int,
    planted: Tally | None = None,
    subprocess_every: int = 5,
) -> Tally:
    """``trials`` SIGKILL-and-rerun trials of ``wsi-extract``.

    Runs are forked from this process (``cli.extract.main`` without interpreter start-up);
    every ``subprocess_every``-th trial starts the real ``python -m wsi_ncmi.cli.extract``
    instead.
    """
    from wsi_ncmi.features import read_features

    main = _extract_main()
    tally = Tally("kill+resume wsi-extract", command="wsi-extract " + " ".join(extract_args(
        Path("<coords>"), Path("<out>"))))  # fmt: skip
    ref = work / "extract_ref"
    start = time.perf_counter()
    if run_forked(main, extract_args(coords, ref)) != 0:
        raise RuntimeError("reference wsi-extract failed")
    duration = time.perf_counter() - start
    ref_dir = ref / "features" / "random-cnn"
    ref_files = sorted(ref_dir.glob("*.h5"))
    startup = 0.0
    tally.notes.append(f"uninterrupted run {duration:.1f} s; kills at random moments in it")
    moments = {"before any output": 0, "mid-way": 0, "after all outputs": 0}
    for trial, delay in enumerate(kill_delays(trials, duration, seed)):
        out = work / f"extract_{trial}"
        feat = out / "features" / "random-cnn"
        if subprocess_every and trial % subprocess_every == 0:
            if not startup:
                t = time.perf_counter()
                run_cli(EXTRACT, ["--list_encoders"])
                startup = time.perf_counter() - t
            proc = start_cli(EXTRACT, extract_args(coords, out))
            time.sleep(startup + delay)
            kill_group(proc)
        else:
            forked = start_forked(main, extract_args(coords, out))
            time.sleep(delay)
            kill_forked(forked)
        tally.injected += 1
        complete = set()
        for path in sorted(feat.glob("*.h5")) if feat.is_dir() else []:
            try:
                read_features(path)
            except Exception:
                tally.partial_accepted += 1
                continue
            if compare_h5(path, ref_dir / path.name)[1]:
                tally.partial_accepted += 1
            complete.add(path.stem)
        key = "before any output" if not complete else "mid-way"
        moments["after all outputs" if len(complete) == len(ref_files) else key] += 1
        victim = None
        if planted is not None and complete and trial % 2 == 0:
            victim = sorted(complete)[trial % len(complete)]
            _truncate(feat / f"{victim}.h5")
            planted.injected += 1
        code = run_forked(main, extract_args(coords, out))
        if code != 0:
            tally.fail(f"trial {trial}: rerun exit {code}")
            continue
        record = json.loads((feat / "report.json").read_text())
        status = {r["item_id"]: r["status"] for r in record["results"]}
        skipped = {k for k, v in status.items() if v == "skipped"}
        expected = complete - {victim}
        if skipped != expected:
            tally.fail(f"trial {trial}: skipped {sorted(skipped)}, expected {sorted(expected)}")
        lost = 0
        for want in ref_files:
            total, missing = compare_h5(feat / want.name, want)
            tally.outputs_compared += 1
            tally.bytes_compared += total
            lost += missing
        tally.bytes_lost += lost
        tally.count_temp_left(out)
        tally.locks_left += len(lock_files(out / "locks"))
        if planted is not None and victim is not None:
            accepted = status.get(victim) != "ok"
            planted.partial_accepted += int(accepted)
            planted.recovered += int(not accepted and not lost)
            planted.outputs_compared += 1
        tally.recovered += int(lost == 0)
        shutil.rmtree(out)
    tally.notes.append("kill moments: " + ", ".join(f"{k} {v}" for k, v in moments.items()))
    return tally


# -- wsi-train ----------------------------------------------------------------------------
def _train_main() -> Callable[[list[str]], int]:
    from wsi_ncmi.cli.train import main

    return main


def _state_bytes(path: Path) -> dict[str, bytes]:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v.detach().numpy().tobytes() for k, v in state.items()}


def _ckpt_epoch(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"])


def _run_files(run: Path) -> set[str]:
    """Files of a run folder, without the per-attempt CSV logs (a resume adds a version)."""
    return {
        str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and "logs" not in p.parts
    }


def train_kill_resume(config: Path, work: Path, trials: int, seed: int) -> Tally:
    """``trials`` SIGKILL-and-resume trials of ``wsi-train --config <yaml>``.

    The rerun adds ``--resume true``; the final ``last.ckpt`` weights must equal the
    uninterrupted run's bit for bit, and ``predictions.csv`` byte for byte.
    """
    main = _train_main()
    tally = Tally("kill+resume wsi-train", command="wsi-train --config <yaml> [--resume true]")
    ref = work / "train_ref"
    start = time.perf_counter()
    if run_forked(main, ["--config", str(config), "--out_dir", str(ref)]) != 0:
        raise RuntimeError("reference wsi-train failed")
    duration = time.perf_counter() - start
    ref_ckpt = next(ref.glob("*/checkpoints/last.ckpt"))
    fold = ref_ckpt.parent.parent.name
    want = _state_bytes(ref_ckpt)
    want_files = _run_files(ref) - {p for p in _run_files(ref) if "best-" in p}
    tally.notes.append(f"uninterrupted run {duration:.1f} s; kills at random moments in it")
    resumed_from: list[str] = []
    for trial, delay in enumerate(kill_delays(trials, duration, seed)):
        out = work / f"train_{trial}"
        proc = start_forked(main, ["--config", str(config), "--out_dir", str(out)])
        time.sleep(delay)
        kill_forked(proc)
        tally.injected += 1
        last = out / fold / "checkpoints" / "last.ckpt"
        epoch = None
        if last.is_file():
            try:
                epoch = _ckpt_epoch(last)
            except Exception:
                tally.partial_accepted += 1  # a checkpoint under its final name is broken
        resumed_from.append("fresh" if epoch is None else f"epoch {epoch}")
        args = ["--config", str(config), "--out_dir", str(out), "--resume", "true"]
        code = run_forked(main, args)
        if code != 0:
            tally.fail(f"trial {trial}: resumed run exit {code}")
            continue
        got = _state_bytes(last)
        total = sum(len(v) for v in want.values())
        lost = sum(len(v) for k, v in want.items() if got.get(k) != v)
        p_total, p_lost = compare_bytes(out / "predictions.csv", ref / "predictions.csv")
        tally.outputs_compared += 2
        tally.bytes_compared += total + p_total
        tally.bytes_lost += lost + p_lost
        missing = want_files - _run_files(out)
        if missing:
            tally.fail(f"trial {trial}: outputs missing after resume: {sorted(missing)[:5]}")
        tally.count_temp_left(out)
        tally.recovered += int(lost + p_lost == 0 and not missing)
        if lost + p_lost:
            differs = sorted(k for k, v in want.items() if got.get(k) != v)
            tally.fail(
                f"trial {trial} (killed at {delay:.1f} s, resumed from {resumed_from[-1]}): "
                f"{len(differs)} tensors differ (kept in {out}), predictions lost {p_lost} B"
            )
        else:
            shutil.rmtree(out)
    tally.notes.append("killed runs resumed from: " + ", ".join(resumed_from))
    return tally
