"""``wsi-predict``: a trained model bundle on new slides, from slide files to a report.

``wsi-predict --models BUNDLE [BUNDLE ...] SLIDES... --out_dir DIR`` tiles the slides
with the bundle's grid, extracts features with its encoder, predicts every slide (several
bundles: the mean of their probabilities) and writes ``predictions.csv``, QuPath
GeoJSON, heatmaps and ``report.html`` (:func:`wsi_ncmi.predict.run.run_prediction`).
Exit codes (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`): 0 every slide predicted (QC
flags included); 1 a slide failed to tile or extract; 2 a bad bundle (a checkpoint, an
edited or truncated bundle), bundles that disagree, or features of another encoder,
µm/px or patch size; 130 interrupted (rerun the same command to resume).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ncmi.cli.common import new_parser, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

EPILOG = """\
examples:
  wsi-predict --models runs/final/all/model --out_dir predictions/ slides/
  wsi-predict --models runs/loho/loho_center0/model runs/loho/loho_center1/model \\
      --features_root outputs/camelyon17 --out_dir predictions/
outputs (under --out_dir): predictions.csv, patients.csv (with --manifest), qupath/*.geojson,
heatmaps/*.png, report.html, timings.json; tiles (coords/, thumbnails/) and features
(features/<encoder>/) are cached there: a rerun skips finished slides.
a checkpoint (.ckpt) is never loaded: convert a trusted one with wsi-export-model.
--models takes every word up to the next option: give SLIDES before it or after another
option (--models M --out_dir DIR slides/).
"""


def build_parser() -> ArgumentParser:
    """The jsonargparse parser of :class:`~wsi_ncmi.predict.config.PredictConfig`."""
    from wsi_ncmi.predict.config import PredictConfig

    p = new_parser(
        "wsi-predict",
        "Apply a trained model bundle (wsi-train's <fold>/model/) to new slides: tile, "
        "extract, predict, and write a report.",
        epilog=EPILOG,
    )
    p.add_argument(
        "slides",
        nargs="*",
        default=argparse.SUPPRESS,
        metavar="SLIDES",
        help="slide files or folders (with --features_root: optional slide ids to keep)",
    )
    p.add_class_arguments(PredictConfig, skip={"slides"}, fail_untyped=True)
    return p


def check_models_once(argv: Sequence[str]) -> None:
    """Refuse ``--models`` given more than once (the last would silently win).

    Raises:
        ConfigError: ``--models A --models B`` instead of ``--models A B``.
    """
    from wsi_ncmi.errors import ConfigError

    given = [t for t in argv if t == "--models" or t.startswith("--models=")]
    if len(given) > 1:
        raise ConfigError(
            f"--models is given {len(given)} times: name every bundle after one --models "
            "(--models A B for an ensemble)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-predict``; return the exit code."""
    return run_cli("wsi-predict", lambda: _predict(argv))


def _predict(argv: Sequence[str] | None) -> int:
    import sys

    from wsi_ncmi.cli.common import build_from
    from wsi_ncmi.errors import ConfigError
    from wsi_ncmi.predict.config import PredictConfig
    from wsi_ncmi.predict.run import run_prediction

    argv = sys.argv[1:] if argv is None else argv
    check_models_once(argv)
    args = parse(build_parser(), argv)
    if not args.models or not all(args.models):
        raise ConfigError("--models BUNDLE [BUNDLE ...] is required (several: an ensemble)")
    slides = tuple(getattr(args, "slides", None) or ())
    from wsi_ncmi.tiling.run import SLIDE_SUFFIXES

    files = [m for m in args.models if Path(m).suffix.lower() in SLIDE_SUFFIXES]
    if files or (not slides and args.features_root is None and len(args.models) > 1):
        raise ConfigError(
            f"--models took {list(args.models)}"
            + (f", and {files[0]!r} is a slide, not a model bundle" if files else "")
            + ": --models takes every word up to the next option, so name the slides "
            "first (wsi-predict SLIDES... --models BUNDLE...)"
        )
    if not slides and args.features_root is None:
        raise ConfigError("SLIDES must name slide files or folders (or pass --features_root)")
    config = build_from(PredictConfig, args, models=tuple(args.models), slides=slides)
    result = run_prediction(config)
    if "pending" in result.outputs:
        print(
            f"shard {config.shard} done; slides of other shards still lack features: "
            f"{result.outputs['pending']}. The last shard to finish writes the report"
        )
        return result.exit_code
    flagged = [r for r in result.slides if r.qc]
    print(f"{len(result.slides)} slides, {len(flagged)} with QC flags")
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    for name, path in result.outputs.items():
        print(f"{name}: {path}")
    return result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
