"""``wsi-extract``: frozen-encoder features for every tiled slide.

Options: the fields of :class:`~wsi_ncmi.features.config.ExtractConfig`, from ``--config
FILE.yaml`` and flags (``configs/extract/example.yaml``). Exit codes: 0 all slides
ok/skipped/no tissue; 1 some slides failed (the report lists them); 2 bad arguments or
configuration (µm/px mismatch, unknown encoder); 3 encoder weights unavailable
(gated/offline); 130 interrupted (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.cli.common import new_parser, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

EPILOG = """\
outputs (under --out_dir): features/<encoder>/<slide_id>.h5 and a run report.
example config: configs/extract/example.yaml (wsi-extract --print_config writes one).
"""


class _ListEncoders(argparse.Action):
    """``--list_encoders``: print the registered encoders and exit (like ``--help``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: str | None = None) -> None:
        print(_list_encoders())
        parser.exit()


def build_parser() -> ArgumentParser:
    """The jsonargparse parser of :class:`~wsi_ncmi.features.config.ExtractConfig`.

    Every option is a field of ``ExtractConfig`` (help from its docstring), except
    ``--coords_dir``, whose default (``<out_dir>/coords``) depends on ``--out_dir``.
    Defaults suit a 16-core, one-GPU host and still run on 2 cores; ``--skip_errors``
    is on, as in every batch command.
    """
    from wsi_ncmi.features.config import ExtractConfig

    p = new_parser(
        "wsi-extract",
        "Extract frozen-encoder patch features into <out_dir>/features/<encoder>/.",
        epilog=EPILOG,
    )
    p.add_argument(
        "--list_encoders", action=_ListEncoders, help="print the registered encoders and exit"
    )
    p.add_argument(
        "--coords_dir",
        type=Path | None,
        help="directory of <slide_id>.h5 coords files (wsi-tile output; default: <out_dir>/coords)",
    )
    p.add_class_arguments(ExtractConfig, skip={"coords_dir"}, fail_untyped=True)
    p.set_defaults(skip_errors=True)
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
    return run_cli("wsi-extract", lambda: _extract(argv))


def _extract(argv: Sequence[str] | None) -> int:
    from wsi_ncmi.cli.common import build_from
    from wsi_ncmi.features.config import ExtractConfig
    from wsi_ncmi.features.run import run_extraction

    args = parse(build_parser(), argv)
    config = build_from(
        ExtractConfig,
        args,
        coords_dir=Path(args.coords_dir or Path(args.out_dir) / "coords"),
        out_dir=Path(args.out_dir),
        redo=tuple(getattr(args, "redo", None) or ()),
    )
    report = run_extraction(config)
    print(report.summary())
    runtime = report.params.get("runtime", {})
    if runtime.get("patches_extracted"):  # a rerun that skips every slide has no rate
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
