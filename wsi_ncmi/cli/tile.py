"""``wsi-tile``: tissue segmentation and patch coordinates at an exact µm/px, in batch.

Exit codes: 0 every slide ok, skipped or no_tissue; 1 at least one slide failed;
2 bad arguments or configuration. Heavy imports happen inside :func:`main`; torch and
lightning are never imported on this path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EPILOG = """\
outputs (under --out):
  coords/<slide_id>.h5          patch coordinates, schema wsi-ncmi/coords v1 (level-0 x, y)
  thumbnails/<slide_id>.png     mask contour (green), kept grid (orange), artifacts (blue)
  geojson/<slide_id>.geojson    tissue polygons in level-0 px (QuPath: File > Import objects)
  reports/wsi-tile_*.json       run report (statuses, reasons, patches and seconds per slide)

resume: a slide is skipped when coords/<slide_id>.h5 exists, is complete and carries the
parameter hash of this run. With any changed parameter the slide is tiled again and its
files are replaced (atomically); the run report lists the replaced hash.

exit codes: 0 all ok/skipped/no_tissue, 1 some slide failed, 2 bad arguments.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every option documents its unit)."""
    p = argparse.ArgumentParser(
        prog="wsi-tile",
        description="Segment tissue and write patch coordinates at an exact physical "
        "resolution (µm/px) for many slides, resumably and in parallel.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "slides",
        nargs="*",
        metavar="SLIDES",
        help="slide files, folders (searched recursively) or glob patterns (quote them)",
    )
    p.add_argument("--manifest", metavar="CSV", help="manifest CSV with a slide_id column")
    p.add_argument(
        "--slides-dir",
        metavar="DIR",
        help="root folder of the manifest's slides (default: the CSV's folder)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g = p.add_argument_group("patch grid")
    g.add_argument(
        "--target-mpp",
        type=float,
        default=0.5,
        metavar="UM_PER_PX",
        help="patch resolution in µm/px (default: 0.5, about 20x)",
    )
    g.add_argument(
        "--patch-size",
        type=int,
        default=256,
        metavar="PX",
        help="patch side in pixels at --target-mpp (default: 256)",
    )
    g.add_argument(
        "--overlap",
        type=int,
        default=0,
        metavar="PX",
        help="overlap of neighbouring patches in pixels at --target-mpp (default: 0)",
    )
    g.add_argument(
        "--min-tissue",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="keep patches with at least this fraction (0-1) of their area in the mask "
        "(default: 0.5; lower it for small biopsy fragments)",
    )
    s = p.add_argument_group("tissue mask")
    s.add_argument(
        "--mask-mpp",
        type=float,
        default=8.0,
        metavar="UM_PER_PX",
        help="resolution of the tissue mask in µm/px (default: 8; never reads level 0 "
        "unless the slide has no coarser level)",
    )
    s.add_argument(
        "--min-tissue-area",
        type=float,
        default=10_000.0,
        metavar="UM2",
        help="drop tissue pieces smaller than this area in µm² (default: 10000)",
    )
    s.add_argument(
        "--min-hole-area",
        type=float,
        default=50_000.0,
        metavar="UM2",
        help="fill holes smaller than this area in µm², keep larger ones (default: 50000)",
    )
    s.add_argument("--fill-holes", action="store_true", help="fill every hole in the tissue")
    s.add_argument(
        "--saturation-threshold",
        type=int,
        default=None,
        metavar="0-255",
        help="fixed HSV saturation threshold (0-255) instead of Otsu",
    )
    s.add_argument(
        "--min-saturation",
        type=int,
        default=20,
        metavar="0-255",
        help="lowest saturation threshold Otsu may choose, 0-255 (default: 20)",
    )
    s.add_argument(
        "--keep-pen",
        action="store_true",
        help="do not reject green/blue pen marks",
    )
    s.add_argument(
        "--keep-black",
        action="store_true",
        help="do not reject black artifacts (HSV value < 45 of 255)",
    )
    s.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="user masks <slide_id>.geojson (polygons in level-0 px) or <slide_id>.png "
        "(non-zero = tissue, slide aspect ratio); they replace segmentation",
    )
    r = p.add_argument_group("slides and resolution")
    r.add_argument(
        "--backend",
        choices=("auto", "openslide", "tiffslide"),
        default="auto",
        help="slide reader (default: auto = OpenSlide, then tiffslide)",
    )
    r.add_argument(
        "--mpp",
        type=float,
        default=None,
        metavar="UM_PER_PX",
        help="level-0 µm/px for every slide, overriding metadata",
    )
    r.add_argument(
        "--mpp-csv",
        metavar="CSV",
        help="per-slide level-0 µm/px, CSV with columns slide,mpp (name, stem or path)",
    )
    b = p.add_argument_group("batch")
    b.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: number of available cores)",
    )
    b.add_argument(
        "--shard",
        metavar="I/N",
        help="process shard I of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/8); slides are "
        "assigned by a hash of their id",
    )
    b.add_argument(
        "--skip-errors",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record a failing slide and go on (default: on); --no-skip-errors stops",
    )
    b.add_argument(
        "--stale-lock-after",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="take over another host's slide lock after this many seconds without "
        "heartbeat (default: 600; same-host locks of dead processes are taken at once)",
    )
    b.add_argument("--report", metavar="JSON", help="run report path (default: under --out)")
    b.add_argument(
        "--thumb-size",
        type=int,
        default=1024,
        metavar="PX",
        help="longest side of the overlay thumbnail in pixels (default: 1024)",
    )
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-tile``; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.slides and not args.manifest:
        parser.error("give SLIDES or --manifest CSV")

    from wsi_ncmi.batch import BatchAbortedError
    from wsi_ncmi.errors import WsiNcmiError
    from wsi_ncmi.tiling.grid import GridParams
    from wsi_ncmi.tiling.job import TilingConfig
    from wsi_ncmi.tiling.run import discover_slides, make_tasks, manifest_tasks, run_tiling
    from wsi_ncmi.tiling.tissue import TissueParams

    try:
        if args.workers is not None and args.workers < 1:
            raise_config("--workers", "an integer ≥ 1", args.workers)
        if args.thumb_size < 16:
            raise_config("--thumb-size", "an integer ≥ 16 px", args.thumb_size)
        grid = GridParams(args.target_mpp, args.patch_size, args.overlap, args.min_tissue)
        tissue = TissueParams(
            mask_mpp=args.mask_mpp,
            min_saturation=args.min_saturation,
            saturation_threshold=args.saturation_threshold,
            min_tissue_area_um2=args.min_tissue_area,
            min_hole_area_um2=args.min_hole_area,
            fill_holes=args.fill_holes,
            reject_pen=not args.keep_pen,
            reject_black=not args.keep_black,
        )
        mpp_table = None
        if args.mpp_csv:
            from wsi_ncmi.slide.mpp import load_mpp_csv

            mpp_table = load_mpp_csv(args.mpp_csv)
        if args.mpp is not None:
            from wsi_ncmi.slide.mpp import is_plausible_mpp

            if not is_plausible_mpp(args.mpp):
                raise_config("--mpp", "a level-0 µm/px in [0.05, 50]", args.mpp)
        config = TilingConfig(
            out_dir=args.out,
            grid=grid,
            tissue=tissue,
            backend=args.backend,
            mpp_override=args.mpp,
            mpp_table=mpp_table,
            mask_dir=args.mask_dir,
            thumb_size_px=args.thumb_size,
        )
        paths = discover_slides(args.slides) if args.slides else []
        named = manifest_tasks(args.manifest, args.slides_dir) if args.manifest else []
        # Slide ids: the manifest's slide_id, else the name of the path as given (a
        # symbolic link's own name). SLIDES and --manifest naming one file: tiled once.
        tasks = make_tasks(paths, named)
        if not tasks:
            raise_config("SLIDES", "at least one slide file", args.slides)
    except WsiNcmiError as err:
        print(f"wsi-tile: error: {err}", file=sys.stderr)
        return 2

    try:
        report = run_tiling(
            tasks,
            config,
            workers=args.workers,
            shard=args.shard,
            skip_errors=args.skip_errors,
            progress=not args.no_progress,
            stale_lock_after_s=args.stale_lock_after,
            report_path=args.report,
        )
    except BatchAbortedError as err:
        print(f"wsi-tile: {err}", file=sys.stderr)
        return 1
    except WsiNcmiError as err:  # e.g. a bad --shard
        print(f"wsi-tile: error: {err}", file=sys.stderr)
        return 2
    print(report.summary(unit="patches"))
    print(f"report: {report.params['report_path']}")
    return report.exit_code


def raise_config(name: str, allowed: str, got: object) -> None:
    """Raise a :class:`ConfigError` naming the option, what it allows and the value."""
    from wsi_ncmi.errors import ConfigError

    raise ConfigError(f"{name} must be {allowed}, got {got!r}")


if __name__ == "__main__":
    raise SystemExit(main())
