"""GPU benchmark of wsi-extract (issues 4 and 26), prepared to run in one short device call.

    python tools/bench/extract_gpu.py --slides 8 --size 8192 [--readers openslide auto gpu]

For ``resnet50-trunc`` (fp16) and a ViT-L/16 (``uni``: UNI's architecture, bf16, random
weights: speed does not depend on the weights) it measures, through the real pipeline
(Lightning predict, DataLoader workers, HDF5 writer), for each reader of ``--readers``
(``openslide``: the path before issue 26; ``auto``: tile decode on the CPU workers;
``gpu``: tile decode with ``--gpu_decode``, the workers read bytes and nvJPEG decodes):
  * patches/s of the full pipeline on a generated cohort,
  * GPU busy % sampled by ``nvidia-smi`` (utilization.gpu) while it runs, and
  * that rate as a fraction of the encoder alone on device-resident batches (the GPU
    ceiling, measured once per encoder).
Needs torchvision and timm. Prints one JSON object including the card's name.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_speed import make_cohort

from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.encoders import build_encoder
from wsi_ncmi.features.run import run_extraction

ENCODERS = {"resnet50-trunc": {}, "uni": {}}  # full-size architectures, random weights


def sample_busy(stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            text = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout  # fmt: skip
            out.append(float(text.split()[0]))
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
        stop.wait(0.2)


def encoder_ceiling(encoder: torch.nn.Module, batch: int, precision: str) -> float:
    x = torch.randint(0, 256, (batch, 256, 256, 3), dtype=torch.uint8, device="cuda")
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float16
    enabled = not precision.startswith("32")
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=enabled):
        for _ in range(3):
            encoder(x)
        torch.cuda.synchronize()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 5:
            encoder(x)
            n += batch
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--slides", type=int, default=8)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--readers", nargs="+", default=["openslide", "auto", "gpu"],
        choices=["openslide", "auto", "gpu"],
    )  # fmt: skip
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="extract-gpu-"))
    result: dict[str, object] = {"device": torch.cuda.get_device_name(0)}
    try:
        coords_dir = make_cohort(root, args.slides, args.size)
        for name in ENCODERS:
            encoder = build_encoder(name, random_init=True)
            rows: dict[str, object] = {}
            result[name] = rows
            precision = "32-true"
            for reader in args.readers:
                config = ExtractConfig(
                    coords_dir=coords_dir, out_dir=root / f"{name}-{reader}", encoder=name,
                    random_init=True, device="cuda", batch_size=args.batch_size,
                    workers=args.workers, progress=False, lock=False,
                    backend="openslide" if reader == "openslide" else "auto",
                    gpu_decode=reader == "gpu",
                )  # fmt: skip
                busy: list[float] = []
                stop = threading.Event()
                sampler = threading.Thread(target=sample_busy, args=(stop, busy), daemon=True)
                sampler.start()
                start = time.perf_counter()
                try:
                    report = run_extraction(config, encoder=encoder)
                except Exception as err:  # one reader failing must not lose the others
                    rows[reader] = {"error": f"{type(err).__name__}: {err}"}
                    continue
                finally:
                    stop.set()
                    sampler.join()
                seconds = time.perf_counter() - start
                runtime = report.params["runtime"]
                precision = runtime["precision"]  # type: ignore[index]
                steady = busy[len(busy) // 5 :] or busy  # drop the start-up fifth
                rows[reader] = {
                    "pipeline_patches_per_s": runtime["patches_per_s"],  # type: ignore[index]
                    "wall_s": seconds,
                    "precision": precision,
                    "gpu_busy_pct_mean": sum(steady) / max(1, len(steady)),
                    "statuses": sorted({r.status for r in report.results}),
                }
                print(json.dumps(result), flush=True)
            ceiling = encoder_ceiling(encoder.cuda(), args.batch_size, precision)
            rows["encoder_only_patches_per_s"] = ceiling
            for reader in args.readers:
                row = rows.get(reader)
                if isinstance(row, dict) and "pipeline_patches_per_s" in row:
                    row["ratio_vs_encoder_only"] = row["pipeline_patches_per_s"] / ceiling
            print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
