"""``wsi-import-features``: register TRIDENT or CLAM features for training, no re-extraction.

Exit codes (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`): 0 registered; 2 bad arguments
or a folder without such files (or mixed feature widths); 1 a file that is not of the
named format.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ncmi.cli.common import new_parser, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    """The argument parser."""
    p = new_parser(
        "wsi-import-features",
        "Register feature files written by TRIDENT or CLAM so that wsi-train and "
        "wsi-bench read them in place (small sidecar files with links; nothing is copied "
        "except CLAM .pt tensors).",
    )
    p.add_argument("src", type=Path, help="folder of the .h5 feature files (.pt for clam-pt)")
    p.add_argument(
        "--format",
        required=True,
        choices=("trident", "clam", "clam-pt"),
        help="the tool's layout: TRIDENT features_<enc>/*.h5, CLAM h5_files/*.h5, or "
        "CLAM pt_files/*.pt with --coords_dir",
    )
    p.add_argument("--out_dir", required=True, type=Path, help="features root read by wsi-train")
    p.add_argument("--encoder", required=True, help="name of the encoder that made them")
    p.add_argument("--manifest", type=Path | None, help="register only the manifest's slides")
    p.add_argument("--coords_dir", type=Path | None, help="clam-pt: CLAM's patches/ folder")
    p.add_argument(
        "--mpp", type=float | None, help="µm/px of the patches (CLAM does not record it)"
    )
    p.add_argument("--patch_size_px", type=int | None, help="patch side in pixels, if not recorded")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-import-features``; returns the exit code."""
    return run_cli(
        "wsi-import-features", lambda: _import(argv), resume_hint="rerun the same command"
    )


def _import(argv: Sequence[str] | None) -> int:
    from wsi_ncmi.batch.preflight import check_writable_dir
    from wsi_ncmi.features.foreign import register_foreign_features

    args = parse(build_parser(), argv)
    check_writable_dir(args.out_dir, "--out_dir")  # before any work
    slide_ids = None
    if args.manifest is not None:
        from wsi_ncmi.manifest import read_manifest

        slide_ids = [row.slide_id for row in read_manifest(args.manifest)]
    written = register_foreign_features(
        args.src,
        args.format,
        args.out_dir,
        args.encoder,
        slide_ids=slide_ids,
        coords_dir=args.coords_dir,
        mpp=args.mpp,
        patch_size_px=args.patch_size_px,
    )
    folder = written[0].parent if written else args.out_dir
    print(f"registered {len(written)} slides in {folder}; train with --data.features_root "
          f"{args.out_dir} --data.encoder {args.encoder}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
