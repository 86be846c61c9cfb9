"""Benchmark ``wsi-tile`` on a synthetic CAMELYON-scale slide, and on a small cohort.

The slide: 100,000 x 80,000 px at 0.25 µm/px, JPEG (quality 80) tiles of 256 px, a
pyramid down to 1/64, and 4 wobbly elliptical tissue blobs covering about 25% of the
area. It is generated deterministically, tile by tile (pre-encoded JPEG segments
streamed to tifffile), so memory stays small; it is cached under /tmp.

Usage:
    python tools/bench/tile_speed.py make            # build (or reuse) the slide
    python tools/bench/tile_speed.py whole --runs 5  # whole-process wsi-tile wall time
    python tools/bench/tile_speed.py floor           # reading the ~8 µm/px level
    python tools/bench/tile_speed.py cohort          # slides/min with 1 and 2 workers
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from wsi_ncmi.synth.blob_slide import CAMELYON_SCALE, write_blob_slide

SPEC = CAMELYON_SCALE  # 100,000 x 80,000 px, 0.25 µm/px, 4 blobs (wsi_ncmi.synth.blob_slide)
DEFAULT_SLIDE = Path(tempfile.gettempdir()) / "wsi_ncmi_bench" / "camelyon_synth_v1.tif"
REPO = Path(__file__).resolve().parents[2]


def make_slide(path: Path = DEFAULT_SLIDE) -> Path:
    """Write the benchmark slide (skipped if it already exists)."""
    if path.is_file():
        return path
    t0 = time.time()
    write_blob_slide(path, SPEC)
    print(f"written in {time.time() - t0:.0f} s", flush=True)
    return path


def _run(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of the child, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")
    return wall, max(after, before), proc.stdout


def bench_whole(slide: Path, runs: int, backend: str) -> dict[str, object]:
    """Whole-process ``wsi-tile`` on one core, fresh --out_dir each run."""
    walls, rss = [], 0
    out = Path(tempfile.mkdtemp(prefix="wsi_tile_bench_"))
    patches = None
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", str(slide), "--out_dir", str(out)]
        cmd += ["--workers", "1", "--progress=false", "--backend", backend]
        wall, peak, _ = _run(["taskset", "-c", "0", *cmd])
        walls.append(wall)
        rss = max(rss, peak)
        report = json.loads(next((out / "reports").glob("*.json")).read_text())
        patches = report["results"][0]["count"]
        extra = report["results"][0]["extra"]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "median_s": round(statistics.median(walls), 3),
        "best_s": round(min(walls), 3),
        "runs": runs,
        "patches": patches,
        "peak_rss_mib_max_of_children": round(rss / 1024, 1),
        "last_run_stages": extra,
    }


def bench_floor(slide: Path, runs: int) -> dict[str, float]:
    """Reading the 1/32 level (8 µm/px): OpenSlide in process, and tifffile."""
    import openslide
    import tifffile

    lv = SPEC.downsamples.index(32)
    os_t, tf_t = [], []
    for _ in range(runs):
        t = time.perf_counter()
        s = openslide.OpenSlide(str(slide))
        w, h = s.level_dimensions[lv]
        np.asarray(s.read_region((0, 0), lv, (w, h)))
        s.close()
        os_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        with tifffile.TiffFile(slide) as tif:
            tif.pages[lv].asarray()
        tf_t.append(time.perf_counter() - t)
    return {
        "openslide_median_s": round(statistics.median(os_t), 3),
        "tifffile_median_s": round(statistics.median(tf_t), 3),
    }


def bench_cohort(n: int, runs: int) -> dict[str, object]:
    """slides/min for 1 and 2 workers on n generated 8,000 x 6,000 px slides."""
    sys.path.insert(0, str(REPO / "tests"))
    from _slides import tissue_image, write_pyramid_tiff

    root = Path(tempfile.gettempdir()) / "wsi_ncmi_bench" / f"cohort_{n}"
    if not root.is_dir():
        root.mkdir(parents=True)
        import cv2

        for i in range(n):
            img = cv2.resize(tissue_image(1000, 750, seed=i), (8_000, 6_000))
            write_pyramid_tiff(root / f"slide_{i:03d}.tif", img, mpp=0.25, levels=5, tile=256)
    result: dict[str, object] = {"slides": n, "slide_px": "8000x6000 @0.25 µm/px"}
    for workers in (1, 2):
        walls = []
        for _ in range(runs):
            out = Path(tempfile.mkdtemp(prefix="wsi_tile_cohort_"))
            cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", str(root), "--out_dir", str(out)]
            wall, _, _ = _run([*cmd, "--workers", str(workers), "--progress=false"])
            walls.append(wall)
            shutil.rmtree(out, ignore_errors=True)
        med = statistics.median(walls)
        result[f"workers_{workers}"] = {
            "median_s": round(med, 2),
            "slides_per_min": round(n / med * 60, 1),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("what", choices=("make", "whole", "floor", "cohort"))
    p.add_argument("--slide", type=Path, default=DEFAULT_SLIDE)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backend", default="auto")
    p.add_argument("--cohort-size", type=int, default=16)
    args = p.parse_args(argv)
    if args.what == "make":
        print(make_slide(args.slide))
        return 0
    if args.what == "cohort":
        print(json.dumps(bench_cohort(args.cohort_size, args.runs), indent=2))
        return 0
    slide = make_slide(args.slide)
    result = (
        bench_whole(slide, args.runs, args.backend)
        if args.what == "whole"
        else bench_floor(slide, args.runs)
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
