"""Concurrency: 4 ``wsi-tile`` processes share one output folder, one is killed midway.

The processes use no shards: each slide is claimed with its lock file. The victim is
SIGKILLed while it holds a slide's lock, mid-slide; the survivors must take that stale
lock over and finish the slide. While they run, the harness polls the coords folder
and records every distinct file that appears under a final name (inode, mtime, size),
so a slide written twice would be seen twice.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

from faults.common import Tally, kill_group, lock_files, start_cli
from faults.kill import TILE, _compare_tiling, tile_args, tile_reference


def _holder_pid(lock: Path) -> int | None:
    try:
        pid = json.loads(lock.read_text()).get("pid")
    except (OSError, ValueError):
        return None
    return pid if isinstance(pid, int) else None


def tile_concurrency(
    slides: Path, work: Path, trials: int, seed: int, workers: int = 4, ref: Path | None = None
) -> Tally:
    """``trials`` runs of ``workers`` concurrent ``wsi-tile`` processes, one killed."""
    tally = Tally(
        f"{workers} workers, 1 killed (wsi-tile)",
        command=f"{workers} x wsi-tile SLIDES --out_dir SAME --workers 1; SIGKILL one mid-slide",
    )
    if ref is None:
        ref = work / "conc_ref"
        tile_reference(slides, ref)
    n_slides = len(list((ref / "coords").glob("*.h5")))
    rng = random.Random(seed)
    takeovers = 0
    for trial in range(trials):
        out = work / f"conc_{trial}"
        procs = [start_cli(TILE, tile_args(slides, out, workers=1)) for _ in range(workers)]
        victim = procs[rng.randrange(workers)]
        seen: dict[str, set[tuple[int, int, int]]] = {}
        skip_locks = rng.randrange(1, 3)  # kill at the victim's 1st or 2nd slide lock
        held: set[str] = set()
        killed = False
        held_at_kill: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for lock in lock_files(out / "locks") if not killed else []:
                if _holder_pid(lock) == victim.pid and lock.name not in held:
                    held.add(lock.name)
                    if len(held) >= skip_locks:
                        time.sleep(rng.uniform(0.0, 0.05))  # mid-slide: it takes ~0.5 s
                        kill_group(victim)
                        killed = True
                        held_at_kill = [  # locks of slides the victim had not finished
                            p.name
                            for p in lock_files(out / "locks")
                            if _holder_pid(p) == victim.pid
                            and not (out / "coords" / f"{p.stem}.h5").is_file()
                        ]
                        break
            for path in (out / "coords").glob("*.h5") if (out / "coords").is_dir() else []:
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                seen.setdefault(path.stem, set()).add((st.st_ino, st.st_mtime_ns, st.st_size))
            if all(p.poll() is not None for p in procs if p is not victim) and (
                killed or victim.poll() is not None
            ):
                break
            time.sleep(0.005)
        if not killed:
            kill_group(victim)
            tally.notes.append(f"trial {trial}: victim finished before holding a lock")
        for p in procs:
            if p is not victim and p.wait(timeout=300) != 0:
                tally.fail(f"trial {trial}: a surviving worker exited {p.returncode}")
        tally.injected += 1
        reports = [json.loads(p.read_text()) for p in sorted((out / "reports").glob("*.json"))]
        ok_ids = [r["item_id"] for rep in reports for r in rep["results"] if r["status"] == "ok"]
        took = [
            r["item_id"]
            for rep in reports
            for r in rep["results"]
            if r.get("extra", {}).get("took_over_stale_lock")
        ]
        takeovers += len(took)
        if held_at_kill and not took:
            tally.fail(f"trial {trial}: nobody reported taking over the victim's stale lock")
        if killed and not held_at_kill:
            tally.notes.append(f"trial {trial}: killed between slides (no lock held)")
        if len(ok_ids) != len(set(ok_ids)):
            tally.fail(f"trial {trial}: surviving workers tiled a slide twice: {sorted(ok_ids)}")
        twice = {k: len(v) for k, v in seen.items() if len(v) > 1}
        if twice:
            tally.fail(f"trial {trial}: coords written more than once: {twice}")
        done = {p.stem for p in (out / "coords").glob("*.h5")}
        if len(done) != n_slides:
            tally.fail(f"trial {trial}: {len(done)} of {n_slides} slides done")
        lost = _compare_tiling(out, ref, tally)
        tally.bytes_lost += lost
        tally.count_temp_left(out)
        tally.locks_left += len(lock_files(out / "locks"))
        tally.recovered += int(lost == 0 and len(done) == n_slides and not twice)
        shutil.rmtree(out)
    tally.notes.append(
        f"stale locks taken over: {takeovers}; every slide written once (polled inodes)"
    )
    return tally
