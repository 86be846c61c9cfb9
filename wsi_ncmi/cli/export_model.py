"""``wsi-export-model CKPT --out_dir BUNDLE``: a trusted ``wsi-train`` checkpoint as a bundle.

A Lightning checkpoint is a pickle: loading it runs whatever code it holds. This command
loads one (only do so for checkpoints your own ``wsi-train`` wrote) together with its run
folder's ``config.json`` and ``splits.json`` and writes the model bundle that
``wsi-predict`` and ``wsi_ncmi.load_model`` read without unpickling anything
(:func:`wsi_ncmi.train.export.export_checkpoint`). ``wsi-train`` already writes the
bundle of its selected checkpoint as ``<run>/<fold>/model/``; this is for other
checkpoints (``last.ckpt``) and runs made before bundles existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from wsi_ncmi.cli.common import new_parser, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    """The parser: ``CKPT`` and ``--out_dir``."""
    p = new_parser(
        "wsi-export-model",
        "Convert a trusted wsi-train checkpoint (<run>/<fold>/checkpoints/*.ckpt) into a "
        "model bundle that loads without unpickling.",
        config_file=False,
    )
    p.add_argument("ckpt", metavar="CKPT", help="checkpoint inside its wsi-train run folder")
    p.add_argument("--out_dir", type=str, required=True, help="bundle folder to write")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-export-model``; return the exit code."""
    return run_cli("wsi-export-model", lambda: _export(argv))


def _export(argv: Sequence[str] | None) -> int:
    from wsi_ncmi.train.export import export_checkpoint

    args = parse(build_parser(), argv)
    out = export_checkpoint(args.ckpt, args.out_dir)
    print(f"model bundle: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
