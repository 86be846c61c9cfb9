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
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, MPP, TILE, QUALITY = 100_000, 80_000, 0.25, 256, 80
DOWNSAMPLES = (1, 2, 4, 8, 16, 32, 64)
CENTERS = ((25_000, 20_000), (75_000, 20_000), (25_000, 60_000), (75_000, 60_000))
SEMI_AXES = (14_000, 11_300)  # 4 * pi * a * b ≈ 25% of the slide
BACKGROUND = (242, 241, 239)
DEFAULT_SLIDE = Path(tempfile.gettempdir()) / "wsi_ncmi_bench" / "camelyon_synth_v1.tif"
REPO = Path(__file__).resolve().parents[2]


def blob_polygons() -> list[np.ndarray]:
    """The 4 tissue outlines in level-0 pixels (deterministic)."""
    theta = np.linspace(0, 2 * np.pi, 1440, endpoint=False)
    polys = []
    for k, (cx, cy) in enumerate(CENTERS):
        r = 1 + 0.08 * np.sin(3 * theta + k) + 0.05 * np.sin(5 * theta + 2 * k)
        a, b = SEMI_AXES
        polys.append(np.stack([cx + a * r * np.cos(theta), cy + b * r * np.sin(theta)], 1))
    return polys


def tissue_bank(n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Textured H&E-like tiles: pink stroma with purple nuclei."""
    import cv2

    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(n):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (TILE, TILE)).astype(np.float32), (0, 0), 3)
        base = np.array([215, 140, 185], np.float32) + 25 * noise[..., None]
        img = np.clip(base, 0, 255).astype(np.uint8)
        for _ in range(60):
            x, y = rng.integers(0, TILE, 2)
            cv2.circle(img, (int(x), int(y)), int(rng.integers(2, 6)), (110, 60, 150), -1)
        tiles.append(img)
    return tiles


def _encode(tile: np.ndarray) -> bytes:
    import imagecodecs

    return bytes(
        imagecodecs.jpeg8_encode(
            tile, level=QUALITY, colorspace="RGB", outcolorspace="YCBCR", subsampling=(2, 2)
        )
    )


def _level_tiles(ds: int, bank_bytes: list[bytes], bank: list[np.ndarray], bg_bytes: bytes):
    """Yield the JPEG segments of one level, row by row."""
    import cv2

    w, h = math.ceil(WIDTH / ds), math.ceil(HEIGHT / ds)
    ntx, nty = math.ceil(w / TILE), math.ceil(h / TILE)
    sub = 16  # coarse raster: 16 x 16 samples per tile to classify tiles
    coarse = np.zeros((nty * sub, ntx * sub), np.uint8)
    polys = [p / ds for p in blob_polygons()]
    cv2.fillPoly(coarse, [np.round(p * sub / TILE).astype(np.int32) for p in polys], 1)
    cover = coarse.reshape(nty, sub, ntx, sub).mean(axis=(1, 3))
    for ty in range(nty):
        for tx in range(ntx):
            c = cover[ty, tx]
            pick = (tx * 7919 + ty * 104729) % len(bank)
            if c == 0:
                yield bg_bytes
            elif c == 1:
                yield bank_bytes[pick]
            else:
                m = np.zeros((TILE, TILE), np.uint8)
                off = np.array([tx * TILE, ty * TILE])
                cv2.fillPoly(
                    m, [np.round((p - off) * 16).astype(np.int32) for p in polys], 1, shift=4
                )
                tile = np.empty((TILE, TILE, 3), np.uint8)
                tile[:] = BACKGROUND
                tile[m > 0] = bank[pick][m > 0]
                yield _encode(tile)


def make_slide(path: Path = DEFAULT_SLIDE) -> Path:
    """Write the benchmark slide (skipped if it already exists)."""
    import tifffile

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    bank = tissue_bank()
    bank_bytes = [_encode(t) for t in bank]
    bg = np.empty((TILE, TILE, 3), np.uint8)
    bg[:] = BACKGROUND
    bg_bytes = _encode(bg)
    tmp = path.with_suffix(".partial.tif")
    t0 = time.time()
    with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
        for i, ds in enumerate(DOWNSAMPLES):
            w, h = math.ceil(WIDTH / ds), math.ceil(HEIGHT / ds)
            res = 1e4 / (MPP * ds)
            tif.write(
                _level_tiles(ds, bank_bytes, bank, bg_bytes),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="jpeg",
                photometric="rgb",
                subsampling=(2, 2),
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=1 if i else 0,
                metadata=None,
            )
            print(f"level {i} (1/{ds}) {w}x{h} written, {time.time() - t0:.0f} s", flush=True)
    os.replace(tmp, path)
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
    """Whole-process ``wsi-tile`` on one core, fresh --out each run."""
    walls, rss = [], 0
    out = Path(tempfile.mkdtemp(prefix="wsi_tile_bench_"))
    patches = None
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", str(slide), "--out", str(out)]
        cmd += ["--workers", "1", "--no-progress", "--backend", backend]
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

    lv = DOWNSAMPLES.index(32)
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
            cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", str(root), "--out", str(out)]
            wall, _, _ = _run([*cmd, "--workers", str(workers), "--no-progress"])
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
