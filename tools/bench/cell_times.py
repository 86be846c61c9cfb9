"""Where a `wsi-bench` sweep spent its time: seconds per cell by aggregator, split and stage.

Reads every finished cell's ``result.json`` under a bench folder (``<output_root>/<name>``,
with or without named splits) and prints, per aggregator, the number of cells, the
median and total seconds per cell (each cell's own wall time, measured inside its job
process) and the median epochs trained; then the cells finished per hour of wall clock
between the first and the last finish time of each aggregator.

    python tools/bench/cell_times.py outputs/bench_c17/bench/synthetic_full
    python tools/bench/cell_times.py outputs/bench_c17/bench/synthetic_full --since 2026-12-01T05:34
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from wsi_ncmi.bench.cell_result import CellResult


@dataclass(frozen=True)
class FinishedCell:
    """A finished cell's result and the folder its split lies in.

    Attributes:
        split: Name of the folder above ``cells/`` (the split, or the bench itself).
        result: The cell's ``result.json``.
    """

    split: str
    result: CellResult


def read_cells(bench: Path) -> list[FinishedCell]:
    """Every finished cell's result under ``bench`` (named splits included)."""
    return [
        FinishedCell(path.parents[2].name, CellResult.from_json(json.loads(path.read_text())))
        for path in sorted(bench.glob("**/cells/*/result.json"))
    ]


def _finished(record: FinishedCell) -> datetime:
    return datetime.strptime(record.result.finished_at, "%Y-%m-%dT%H:%M:%S%z")


def summarise(records: list[FinishedCell]) -> list[str]:
    """One line per aggregator (and a total line)."""
    lines = [
        f"{'aggregator':<10} {'cells':>6} {'median s':>9} {'total h':>8} {'epochs':>7} "
        f"{'first finish':>26} {'last finish':>26}"
    ]
    groups: dict[str, list[FinishedCell]] = {}
    for record in records:
        groups.setdefault(record.result.model, []).append(record)
    for model, cells in [*sorted(groups.items(), key=lambda item: item[0]), ("all", records)]:
        seconds = [c.result.seconds for c in cells]
        epochs = [c.result.epochs_trained for c in cells]
        times = sorted(_finished(c) for c in cells)
        lines.append(
            f"{model:<10} {len(cells):>6} {statistics.median(seconds):>9.1f} "
            f"{sum(seconds) / 3600:>8.2f} {statistics.median(epochs):>7.1f} "
            f"{times[0].isoformat():>26} {times[-1].isoformat():>26}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("bench", type=Path, help="a bench folder, <output_root>/<name>")
    parser.add_argument(
        "--since",
        help="only cells finished at or after this ISO time (e.g. one run of a resumed sweep)",
    )
    args = parser.parse_args(argv)
    records = read_cells(args.bench)
    if args.since:
        start = datetime.fromisoformat(args.since)
        if start.tzinfo is None:
            start = start.astimezone()
        records = [r for r in records if _finished(r) >= start]
    if not records:
        print(f"no finished cells under {str(args.bench)!r}", file=sys.stderr)
        return 1
    splits = sorted({r.split for r in records})
    print(f"{len(records)} cells under {args.bench} (splits: {', '.join(splits)})")
    print("\n".join(summarise(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
