"""Build data_manifests/camelyon17.csv from the CAMELYON-17 label files in ../shared/data.

Usage (from the repository root):

    .venv/bin/python tools/make_manifest.py            # writes data_manifests/camelyon17.csv
    .venv/bin/python tools/make_manifest.py --check    # exit 1 if the committed file is stale

Inputs (see ../shared/data/SOURCES.md): ``camelyon17_stages_with_center.csv`` (labels,
pN stages and centers) and ``camelyon17_stage_labels.csv`` (the older 2016/17 labels, kept
as ``label_2016``). The shared folder defaults to ``<repo>/../shared``; override it with
``--shared``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO.parent / "shared"
DEFAULT_OUT = REPO / "data_manifests" / "camelyon17.csv"
CURRENT = "camelyon17_stages_with_center.csv"
OLD = "camelyon17_stage_labels.csv"
COLUMNS = ("slide_id", "patient_id", "center", "label", "pN_stage", "label_2016")

_PATIENT = re.compile(r"^(patient_\d{3})\.zip$")
_SLIDE = re.compile(r"^((patient_\d{3})_node_\d)\.tif$")


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return [row for row in rows[1:] if row]


def build_rows(shared: Path) -> list[dict[str, str]]:
    """Join the two source files into manifest rows (one per slide, source order)."""
    stages: dict[str, str] = {}
    rows: list[dict[str, str]] = []
    for name, stage, center in _read(shared / "data" / CURRENT):
        if match := _PATIENT.match(name):
            stages[match.group(1)] = stage
        elif match := _SLIDE.match(name):
            rows.append(
                {
                    "slide_id": match.group(1),
                    "patient_id": match.group(2),
                    "center": center,
                    "label": stage,
                }
            )
        else:
            raise SystemExit(f"{CURRENT}: unexpected row name {name!r}")
    old = {
        m.group(1): stage
        for name, stage in _read(shared / "data" / OLD)
        if (m := _SLIDE.match(name))
    }
    for row in rows:
        row["pN_stage"] = stages[row["patient_id"]]
        row["label_2016"] = old[row["slide_id"]]
    return rows


def render(rows: list[dict[str, str]]) -> str:
    """The manifest CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help="shared folder holding data/ (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="manifest to write (default: %(default)s)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if --out differs from what would be built",
    )
    args = parser.parse_args(argv)
    if not (args.shared / "data" / CURRENT).exists():
        print(
            f"error: {args.shared / 'data' / CURRENT} not found; pass --shared DIR", file=sys.stderr
        )
        return 2
    rows = build_rows(args.shared)
    text = render(rows)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'STALE, rerun tools/make_manifest.py'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")

    from wsi_ncmi.manifest import read_manifest  # validate what was written

    checked = read_manifest(args.out)
    counts = {
        lab: sum(r.label == lab for r in checked) for lab in ("negative", "itc", "micro", "macro")
    }
    print(f"wrote {args.out}: {len(checked)} slides, {counts}")
    for row in rows:
        if row["label"] != row["label_2016"]:
            print(f"  differs from {OLD}: {row['slide_id']}: {row['label_2016']} -> {row['label']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
