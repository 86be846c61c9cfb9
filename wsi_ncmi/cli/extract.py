"""``wsi-extract``: frozen-encoder features for every tiled slide.

Exit codes: 0 all slides ok/skipped/no tissue; 1 some slides failed (report lists
them); 2 bad arguments or configuration (µm/px mismatch, unknown encoder, bad coords
file without --skip-errors); 3 encoder weights unavailable (gated/offline).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (defaults suit a 16-core, one-GPU host and still run on 2 cores)."""
    p = argparse.ArgumentParser(
        prog="wsi-extract",
        description="Extract frozen-encoder patch features into <out>/features/<encoder>/.",
    )
    p.add_argument("--list-encoders", action="store_true", help="print encoders and exit")
    p.add_argument("--out", type=Path, help="output root (features/<encoder>/ is created)")
    p.add_argument("--coords", type=Path, help="coords directory (default: <out>/coords)")
    p.add_argument("--encoder", default="random-cnn", help="registered name or timm:<model>")
    p.add_argument("--weights", type=Path, help="local checkpoint (.safetensors/.bin/.pth)")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="random weights, no download (demos/tests; recorded as random_init)",
    )
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--devices", default="1", help="devices per node, or 'auto' (DDP)")
    p.add_argument("--num-nodes", type=int, default=1)
    p.add_argument("--batch-size", type=int, help="default 256 on GPU, 64 on CPU")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: CPUs - 2, 1..12)")
    p.add_argument("--precision", choices=("auto", "32", "bf16", "16"), default="auto")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    p.add_argument("--allow-mpp-mismatch", action="store_true")
    p.add_argument("--max-bad-fraction", type=float, default=0.1)
    p.add_argument("--shard", help="i/N: process one deterministic part of the cohort")
    p.add_argument("--skip-errors", action="store_true", help="record failures and go on")
    p.add_argument("--no-lock", action="store_true", help="no per-slide lock files")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for slides that another live job is extracting: report them as "
        "'locked' (default: after its own slides, wait until they are done (then "
        "'skipped') or their holder dies (then extract them here))",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        metavar="SECONDS",
        help="wait at most this many seconds (e.g. 3600) for slides locked by other jobs, "
        "then report the rest as 'locked' (default: no limit)",
    )
    p.add_argument(
        "--redo",
        nargs="+",
        default=(),
        metavar="SLIDE",
        help="extract these slide ids again even if their features files look fine "
        "(files that fail the checks training applies, e.g. NaN/inf rows or truncation, "
        "are redone without it)",
    )
    p.add_argument("--force", action="store_true", help="extract every slide again")
    p.add_argument(
        "--loader-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="stop when the DataLoader workers deliver no batch for this long, e.g. when "
        "/dev/shm is full (default: 600)",
    )
    p.add_argument("--slide-dir", type=Path, help="find slides here by file name")
    p.add_argument("--backend", choices=("auto", "openslide", "tiffslide"))
    p.add_argument("--coords-hash", help="refuse coords files with another params_hash")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    p.add_argument("--no-progress", action="store_true")
    return p


def _list_encoders() -> str:
    from wsi_ncmi.features.encoders import list_encoders

    lines = [f"{'name':<16} {'dim':>5} {'input':>6} {'µm/px':>6}  {'weights':<34} description"]
    for s in list_encoders():
        mpp = f"{s.mpp:g}" if s.mpp is not None else "-"
        size = str(s.input_size_px or "any")
        gated = " (gated)" if s.gated else ""
        lines.append(
            f"{s.name:<16} {s.out_dim:>5} {size:>6} {mpp:>6}  "
            f"{s.weights_source + gated:<34} {s.description}"
        )
    lines.append("also: timm:<any timm model name>, with --weights PATH for a local checkpoint")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-extract``; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.list_encoders:
        print(_list_encoders())
        return 0
    if args.out is None:
        print("wsi-extract: error: --out is required", file=sys.stderr)
        return 2

    from wsi_ncmi.batch import BatchAbortedError
    from wsi_ncmi.errors import WeightsUnavailableError, WorkerFailedError, WsiNcmiError
    from wsi_ncmi.features.run import ExtractConfig, run_extraction

    config = ExtractConfig(
        coords_dir=args.coords or args.out / "coords",
        out_dir=args.out,
        encoder=args.encoder,
        weights=args.weights,
        random_init=args.random_init,
        device=args.device,
        devices=args.devices,
        num_nodes=args.num_nodes,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=args.precision,
        dtype=args.dtype,
        allow_mpp_mismatch=args.allow_mpp_mismatch,
        max_bad_fraction=args.max_bad_fraction,
        shard=args.shard,
        skip_errors=args.skip_errors,
        lock=not args.no_lock,
        wait_locked=not args.no_wait,
        max_wait_s=args.max_wait,
        slide_dir=args.slide_dir,
        backend=args.backend,
        expect_coords_hash=args.coords_hash,
        compile_model=args.compile,
        progress=not args.no_progress,
        redo=tuple(args.redo),
        force=args.force,
        loader_timeout_s=args.loader_timeout,
    )
    try:
        report = run_extraction(config)
    except WeightsUnavailableError as err:
        print(f"wsi-extract: weights unavailable: {err}", file=sys.stderr)
        return 3
    except (BatchAbortedError, WorkerFailedError) as err:
        print(f"wsi-extract: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except WsiNcmiError as err:
        print(f"wsi-extract: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    runtime = report.params.get("runtime", {})
    if runtime:
        print(
            f"  throughput: {runtime['patches_per_s']:.1f} patches/s over "
            f"{runtime['seconds']:.1f} s ({runtime['accelerator']}, {runtime['precision']}, "
            f"batch {runtime['batch_size']}, {runtime['workers']} workers)"
        )
    if report.params.get("report_path"):
        print(f"report: {report.params['report_path']}")
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
