"""Two unsharded ``wsi-extract`` jobs on one folder vs one job: do they share the slides?

    .venv/bin/python tools/bench/extract_jobs.py [--slides 10] [--repeats 2] [--threads 1]

A folder of generated slides (:mod:`wsi_ncmi.synth.blob_slide`) is tiled once with
``wsi-tile``; then, alternating, one ``wsi-extract`` job and two concurrent ones (the same
command, no ``--shard``) extract it into a fresh ``--out_dir``, each as its own
``python -m wsi_ncmi.cli.extract`` process with ``OMP_NUM_THREADS=--threads``. Wall time
runs from the first launch until every job has exited. Prints one JSON object with the
times, the ratio (two jobs / one job, median over the repeats; target <= 0.7) and how
many slides each of the two jobs extracted. Numbers depend on the host's load: the
ratio comes from runs interleaved in one process, so slow phases hit both sides, but
two jobs can only beat one when a second core is free. So each repeat also times two
concurrent pure-Python spin loops against one (``cpu_control_two_over_one``: 1.0 when
two cores are free, 2.0 when the host gives this benchmark one core), and the 1-minute
load average before and after is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def make_folder(root: Path, n: int, size: int) -> Path:
    """``n`` generated slides under ``root/slides``, tiled into ``root/tiled``."""
    from wsi_ncmi.synth.blob_slide import BlobSlideSpec, write_blob_slide

    for i in range(n):
        dx = 40 * i
        spec = BlobSlideSpec(
            width=size,
            height=size,
            mpp=0.5,
            centers=((size // 4 + dx, size // 3), (3 * size // 4 - dx, 2 * size // 3)),
            semi_axes=(size // 5, size // 6),
            downsamples=(1, 2, 4, 8),
        )
        write_blob_slide(root / "slides" / f"slide_{i:02d}.tif", spec)
    cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", str(root / "slides"), "--out_dir",
           str(root / "tiled"), "--progress=false", "--workers", "2"]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return root / "tiled" / "coords"


def run_jobs(coords: Path, out: Path, jobs: int, threads: int, workers: int) -> float:
    """Start ``jobs`` identical extract processes on one ``--out_dir``; seconds until all exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "wsi_ncmi.cli.extract", "--out_dir", str(out), "--coords_dir",
           str(coords), "--random_init", "--device", "cpu", "--workers", str(workers),
           "--progress=false", "--allow_mpp_mismatch"]  # fmt: skip
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(jobs)
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"wsi-extract exited {proc.returncode}: {err[-2000:]}")
    return time.perf_counter() - start


SPIN = "x = 0\nfor i in range(20_000_000):\n    x += i\n"


def cpu_control(processes: int) -> float:
    """Wall seconds of ``processes`` concurrent pure-Python spin loops (a CPU-only job)."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(processes)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


def slides_per_job(out: Path) -> list[int]:
    """Slides each run extracted (``ok``), from its run report."""
    counts = []
    for path in sorted((out / "reports").glob("wsi-extract_*.json")):
        results = json.loads(path.read_text())["results"]
        counts.append(sum(r["status"] == "ok" for r in results))
    return counts


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slides", type=int, default=10)
    p.add_argument("--size", type=int, default=8192, help="slide side in level-0 px")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each job")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of each job")
    p.add_argument("--work", type=Path, help="work folder (default: a temp folder, removed)")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="wsi-extract-jobs-"))
    try:
        coords = make_folder(work, args.slides, args.size)
        one, two, shares, control = [], [], [], []
        load_before = os.getloadavg()[0]
        for r in range(args.repeats):
            control.append(cpu_control(2) / cpu_control(1))
            for jobs, times in ((1, one), (2, two)):
                out = work / f"out_{jobs}_{r}"
                shutil.rmtree(out, ignore_errors=True)
                times.append(run_jobs(coords, out, jobs, args.threads, args.workers))
                if jobs == 2:
                    shares.append(slides_per_job(out))
        ratio = statistics.median(t2 / t1 for t1, t2 in zip(one, two, strict=True))
        print(json.dumps({
            "slides": args.slides, "size_px": args.size, "threads_per_job": args.threads,
            "workers_per_job": args.workers, "cpus": os.cpu_count(),
            "one_job_s": [round(t, 2) for t in one], "two_jobs_s": [round(t, 2) for t in two],
            "slides_extracted_by_each_of_two_jobs": shares,
            "ratio_two_over_one_median": round(ratio, 3), "target": 0.7,
            "load_average_1min_before_after": [round(load_before, 2),
                                               round(os.getloadavg()[0], 2)],
            "cpu_control_two_over_one": [round(c, 2) for c in control],
        }, indent=2))  # fmt: skip
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
