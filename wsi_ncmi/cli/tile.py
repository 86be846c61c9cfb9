"""``wsi-tile``: tissue segmentation and patch coordinates at an exact µm/px, in batch.

Options: the fields of :class:`~wsi_ncmi.tiling.job.TilingConfig` and the keyword
arguments of :func:`~wsi_ncmi.tiling.run.run_tiling`, from ``--config FILE.yaml`` and
flags (``configs/tile/example.yaml``). Exit codes: :data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`.
Heavy imports happen inside :func:`main`; torch and lightning are never imported on this path.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wsi_ncmi.cli.common import new_parser, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

EPILOG = """\
outputs (under --out_dir):
  coords/<slide_id>.h5          patch coordinates, schema wsi-ncmi/coords v1 (level-0 x, y)
  thumbnails/<slide_id>.png     mask contour (green), kept grid (orange), artifacts (blue)
  geojson/<slide_id>.geojson    tissue polygons in level-0 px (QuPath: File > Import objects)
  reports/wsi-tile_*.json       run report (statuses, reasons, patches and seconds per slide)

resume: a slide is skipped when coords/<slide_id>.h5 exists, is complete and carries the
parameter hash of this run. With any changed parameter the slide is tiled again and its
files are replaced (atomically); the run report lists the replaced hash.

example config: configs/tile/example.yaml (wsi-tile --print_config writes one).
"""


def build_parser() -> ArgumentParser:
    """The jsonargparse parser: :class:`~wsi_ncmi.tiling.job.TilingConfig` and the batch.

    The tiling options are the fields of ``TilingConfig`` (``--grid.*`` are
    :class:`~wsi_ncmi.tiling.grid.GridParams`, ``--tissue.*`` are
    :class:`~wsi_ncmi.tiling.tissue.TissueParams`); the batch options are the keyword
    arguments of :func:`~wsi_ncmi.tiling.run.run_tiling`.
    """
    from wsi_ncmi.tiling.job import TilingConfig
    from wsi_ncmi.tiling.run import run_tiling

    p = new_parser(
        "wsi-tile",
        "Segment tissue and write patch coordinates at an exact physical resolution "
        "(µm/px) for many slides, resumably and in parallel.",
        epilog=EPILOG,
    )
    p.add_argument(
        "slides",
        nargs="*",
        default=argparse.SUPPRESS,  # absent on the command line: keep the --config value
        metavar="SLIDES",
        help="slide files, folders (searched recursively) or glob patterns (quote them)",
    )
    p.add_argument("--manifest", type=str | None, help="manifest CSV with a slide_id column")
    p.add_argument(
        "--slide_dir",
        type=str | None,
        help="root folder of the manifest's slides (default: the CSV's folder)",
    )
    p.add_argument(
        "--mpp_csv",
        type=str | None,
        help="per-slide level-0 µm/px, CSV with columns slide,mpp (name, stem or path)",
    )
    p.add_class_arguments(TilingConfig, skip={"mpp_table"}, fail_untyped=True, sub_configs=True)
    p.add_function_arguments(run_tiling, skip={"tasks", "config"}, fail_untyped=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-tile``; return the exit code."""
    return run_cli("wsi-tile", lambda: _tile(argv))


def _tile(argv: Sequence[str] | None) -> int:
    from wsi_ncmi.cli.common import build_from
    from wsi_ncmi.tiling.job import TilingConfig
    from wsi_ncmi.tiling.run import discover_slides, make_tasks, manifest_tasks, run_tiling

    args = parse(build_parser(), argv)
    mpp_table = None
    if args.mpp_csv:
        from wsi_ncmi.slide.mpp import load_mpp_csv

        mpp_table = load_mpp_csv(args.mpp_csv)
    config = build_from(TilingConfig, args, mpp_table=mpp_table)
    slides = getattr(args, "slides", None) or []
    if not slides and not args.manifest:
        raise_config("SLIDES", "slide paths, or --manifest CSV", slides)
    paths = discover_slides(slides) if slides else []
    named = manifest_tasks(args.manifest, args.slide_dir) if args.manifest else []
    # Slide ids: the manifest's slide_id, else the name of the path as given (a
    # symbolic link's own name). SLIDES and --manifest naming one file: tiled once.
    tasks = make_tasks(paths, named)
    if not tasks:
        raise_config("SLIDES", "at least one slide file", slides)
    report = build_from(run_tiling, args, tasks, config)
    print(report.summary(unit="patches"))
    print(f"report: {report.params['report_path']}")
    return report.exit_code


def raise_config(name: str, allowed: str, got: object) -> None:
    """Raise a :class:`ConfigError` naming the option, what it allows and the value."""
    from wsi_ncmi.errors import ConfigError

    raise ConfigError(f"{name} must be {allowed}, got {got!r}")


if __name__ == "__main__":
    raise SystemExit(main())
