#!/usr/bin/env python
"""Check a local CAMELYON-17 download for completeness and integrity.

Usage:
    python tools/camelyon17/verify.py ROOT [--manifest data_manifests/camelyon17.csv]
        [--md5 checksums.md5] [--open] [--json report.json]

ROOT must hold ``center_K/patient_XXX_node_Y.tif`` (the official layout). For each
slide of the manifest the tool reports ``ok``, ``missing``, ``empty``, ``bad_md5`` or
``unreadable`` (with ``--open``, every file is opened through the slide layer, which
also detects truncated TIFFs). ``--md5`` takes the official ``checksums.md5`` (lines
``<md5>  <relative path>``); entries are matched by file name. Exit code 0 only when
every slide is ``ok``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def md5_of(path: Path, chunk: int = 1 << 22) -> str:
    """Hex MD5 of a file, read in 4 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_md5_file(path: Path) -> dict[str, str]:
    """Map file name -> md5 from a ``md5sum``-style file."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            out[Path(parts[1].lstrip("*")).name] = parts[0].lower()
    return out


def verify(
    root: Path, manifest: Path, md5: Path | None = None, open_slides: bool = False
) -> list[dict[str, str]]:
    """Return one status row per manifest slide (see module docstring)."""
    sums = load_md5_file(md5) if md5 else {}
    rows = []
    with manifest.open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            sid, center = rec["slide_id"], rec["center"]
            path = root / f"center_{center}" / f"{sid}.tif"
            status, detail = "ok", ""
            if not path.is_file():
                status, detail = "missing", f"expected {path}"
            elif path.stat().st_size == 0:
                status, detail = "empty", "0-byte file"
            elif sums and path.name in sums and md5_of(path) != sums[path.name]:
                status, detail = "bad_md5", "checksum differs from the official list"
            elif open_slides:
                from wsi_ncmi.errors import WsiNcmiError
                from wsi_ncmi.slide import open_slide

                try:
                    with open_slide(path) as slide:
                        _ = slide.mpp
                except WsiNcmiError as err:
                    status, detail = "unreadable", f"{type(err).__name__}: {err}"
            rows.append({"slide_id": sid, "center": center, "status": status, "detail": detail})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder holding center_0 ... center_4")
    parser.add_argument("--manifest", type=Path, default=REPO / "data_manifests" / "camelyon17.csv")
    parser.add_argument("--md5", type=Path, help="official checksums.md5 (optional)")
    parser.add_argument("--open", action="store_true", help="also open every slide")
    parser.add_argument("--json", type=Path, help="write the per-slide report here")
    args = parser.parse_args(argv)
    rows = verify(args.root, args.manifest, args.md5, args.open)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['status']:<10} {row['slide_id']}: {row['detail']}")
    print(f"{len(rows)} slides: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0 if counts.get("ok", 0) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
