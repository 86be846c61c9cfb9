"""``wsi-synth-cohort``: generate a synthetic CAMELYON-17-like cohort from a slide manifest.

Example (the demo subset, 20 slides per center):

    wsi-synth-cohort --preset demo --workers 2 --out_dir outputs/synth/demo

(``tools/synth_cohort.py`` runs the same command from a checkout.) Paths are relative to
the working directory. Exit codes (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`): 0 success,
2 bad arguments, manifest or configuration.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ncmi.cli.common import new_parser, parse, run_cli
from wsi_ncmi.synth.presets import PRESETS

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def _subset(value: str | int) -> int:
    """Slides per center; 0 stands for 'all'."""
    from wsi_ncmi.errors import ConfigError

    if value == "all":
        return 0
    try:
        number = int(value)
    except ValueError as err:
        raise ConfigError(f"--subset must be a positive integer or 'all', got {value!r}") from err
    if number < 1:
        raise ConfigError(f"--subset must be a positive integer or 'all', got {value!r}")
    return number


def build_parser() -> ArgumentParser:
    """The argument parser."""
    parser = new_parser(
        "wsi-synth-cohort",
        "Generate synthetic CAMELYON-like slides (pyramidal JPEG TIFF + ground truth).",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path("data_manifests/camelyon17.csv"),
        help="slide manifest CSV (default: data_manifests/camelyon17.csv)",
    )
    parser.add_argument(
        "--out_dir", type=Path | None, help="cohort folder (default: outputs/synth/<preset>)"
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
        type=str | None,
        help="slides per center, or 'all' (default: 20 for demo, all for bench, 1 for full)",
    )
    parser.add_argument("--seed", type=int, default=0, help="global seed (default: 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default: 1)")
    parser.add_argument(
        "--centers", type=list[int] | None, help="only these centers (default: all)"
    )
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-synth-cohort``; returns the exit code."""
    return run_cli("wsi-synth-cohort", lambda: _synth(argv))


def _synth(argv: Sequence[str] | None) -> int:
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth import generate_cohort

    args = parse(build_parser(), argv)
    subset = None if args.subset is None else _subset(args.subset)
    out = args.out_dir if args.out_dir is not None else Path("outputs") / "synth" / args.preset
    from wsi_ncmi.batch.preflight import check_writable_dir

    check_writable_dir(out, "--out_dir")  # before any work, as in every wsi-* command
    start = time.perf_counter()
    result = generate_cohort(
        read_manifest(args.manifest),
        out,
        preset=args.preset,
        seed=args.seed,
        subset=subset or None,
        use_preset_subset=subset is None,
        centers=args.centers,
        workers=args.workers,
        progress=args.progress,
    )
    seconds = time.perf_counter() - start
    print(
        f"{result.out_dir}: {len(result.generated)} slides generated, "
        f"{len(result.skipped)} already present, {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
