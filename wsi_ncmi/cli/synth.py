"""``wsi-synth-cohort``: generate a synthetic CAMELYON-17-like cohort from a slide manifest.

Example (the demo subset, 20 slides per center):

    wsi-synth-cohort --preset demo --workers 2 --out outputs/synth/demo

(``tools/synth_cohort.py`` runs the same command from a checkout.) Paths are relative to
the working directory. Exit codes: 0 success, 2 bad arguments, manifest or configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wsi_ncmi.synth.presets import PRESETS


def _subset(value: str) -> int:
    """Slides per center; 0 stands for 'all'."""
    if value == "all":
        return 0
    try:
        number = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all', got {value!r}"
        ) from err
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="wsi-synth-cohort",
        description="Generate synthetic CAMELYON-like slides (pyramidal JPEG TIFF + ground truth).",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path("data_manifests/camelyon17.csv"),
        help="slide manifest CSV (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="cohort folder (default: outputs/synth/<preset>)"
    )
    parser.add_argument(
        "--preset",
        choices=tuple(sorted(PRESETS)),
        default="demo",
        help="demo: ~1 µm/px, a few thousand px; bench: the 500-slide benchmark twin "
        "(~2 µm/px, real tumour sizes; tile at 2.0 µm/px, 64 px); full: CAMELYON scale",
    )
    parser.add_argument(
        "--subset",
        type=_subset,
        default=None,
        help="slides per center, or 'all' (default: 20 for demo, all for bench, 1 for full)",
    )
    parser.add_argument("--seed", type=int, default=0, help="global seed (default: 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument(
        "--centers", type=int, nargs="+", default=None, help="only these centers (default: all)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``wsi-synth-cohort``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from wsi_ncmi.errors import WsiNcmiError
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth import generate_cohort

    out = args.out if args.out is not None else Path("outputs") / "synth" / args.preset
    start = time.perf_counter()
    try:
        result = generate_cohort(
            read_manifest(args.manifest),
            out,
            preset=args.preset,
            seed=args.seed,
            subset=args.subset or None,
            use_preset_subset=args.subset is None,
            centers=args.centers,
            workers=args.workers,
            progress=not args.quiet,
        )
    except WsiNcmiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    print(
        f"{result.out_dir}: {len(result.generated)} slides generated, "
        f"{len(result.skipped)} already present, {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
