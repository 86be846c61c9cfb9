"""Bad inputs: each one gets its specific status or error, a message naming the file and
the fix, and the batch goes on with the good inputs.

:data:`SLIDE_CASES` go through one ``wsi-tile`` batch (and the readable ones through one
``wsi-extract`` batch); the cache, manifest and config cases through their stage. Each
check returns :class:`Outcome` rows; the tests assert the same expectations one by one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faults import slides as bad
from faults.common import Tally


@dataclass(frozen=True)
class SlideCase:
    """A bad slide, the status ``wsi-tile`` must give it and what its reason must say."""

    name: str
    file: str
    build: Callable[[Path], Path]
    status: str
    error_type: str
    fragments: tuple[str, ...]


SLIDE_CASES: tuple[SlideCase, ...] = (
    SlideCase("truncated TIFF", "trunc.tif", bad.truncated_slide, "failed", "SlideOpenError",
              ("trunc.tif", "truncated", "re-copy or re-export")),
    SlideCase("zero-byte file", "empty.svs", bad.zero_byte_slide, "failed", "SlideOpenError",
              ("empty.svs", "0-byte", "re-copy")),
    SlideCase("text file named .svs", "notes.svs", bad.text_named_svs, "failed",
              "UnsupportedFormatError", ("notes.svs", "not a whole-slide image", "re-export")),
    SlideCase("no µm/px", "nompp.tif", bad.no_mpp_slide, "failed", "MissingMppError",
              ("nompp.tif", "--mpp_override VALUE", "--mpp_csv")),
    SlideCase("blank slide (no tissue)", "blank.tif", bad.blank_slide, "no_tissue", "",
              ("no tissue found",)),
    SlideCase("slide of one tile", "one.tif", bad.one_tile_slide, "ok", "", ()),
    SlideCase("unicode and spaces in the name", "node 3 ñ 標本.tif", bad.good_slide, "ok", "",
              ()),
    SlideCase("TIFF with an unreadable tile", "badtile.tif", bad.unreadable_tile_slide, "ok",
              "", ()),
)  # fmt: skip


@dataclass
class Outcome:
    """What one bad input produced, and whether that is what was expected."""

    name: str
    expected: str
    got: str
    message: str
    ok: bool


def slide_folder(root: Path) -> Path:
    """Every :data:`SLIDE_CASES` file plus one good slide ``good.tif`` under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    bad.good_slide(root / "good.tif")
    for case in SLIDE_CASES:
        case.build(root / case.file)
    return root


def check_tiling(report: dict[str, dict[str, object]]) -> list[Outcome]:
    """Compare a ``wsi-tile`` report's results (by slide id) with :data:`SLIDE_CASES`."""
    rows = []
    for case in SLIDE_CASES:
        got = report.get(Path(case.file).stem, {})
        reason = str(got.get("reason", ""))
        status = f"{got.get('status')} {got.get('error_type') or ''}".strip()
        want = f"{case.status} {case.error_type}".strip()
        ok = status == want and all(f in reason for f in case.fragments)
        if case.status == "ok":
            ok = ok and int(got.get("count", 0)) >= 1  # type: ignore[call-overload]
        rows.append(Outcome(case.name, want, status, reason, ok))
    good = report.get("good", {})
    rows.append(
        Outcome("batch goes on (good slide)", "ok", str(good.get("status")), "", good.get(
            "status") == "ok")
    )  # fmt: skip
    return rows


def run_bad_inputs(work: Path) -> tuple[Tally, list[Outcome]]:
    """Run every bad input through its stage; one fault injected per input."""
    import json

    from faults.common import run_cli
    from faults.kill import TILE

    tally = Tally("bad inputs", command="wsi-tile / wsi-extract / wsi-train on each bad input")
    folder = slide_folder(work / "bad_slides")
    out = work / "bad_out"
    done = run_cli(TILE, [str(folder), "--out_dir", str(out), "--workers", "1", "--progress=false"])
    record = json.loads(next((out / "reports").glob("*.json")).read_text())
    report = {r["item_id"]: r for r in record["results"]}
    outcomes = check_tiling(report)
    if done.returncode != 1:
        outcomes.append(Outcome("wsi-tile exit code", "1", str(done.returncode), "", False))
    outcomes += run_cache_inputs(work, out / "coords")
    outcomes += run_training_inputs(work)
    tally.injected = len(outcomes)
    tally.recovered = sum(o.ok for o in outcomes)
    for o in outcomes:
        if not o.ok:
            tally.fail(f"{o.name}: expected {o.expected}, got {o.got}: {o.message[:200]}")
    shutil.rmtree(out, ignore_errors=True)
    return tally, outcomes


def run_cache_inputs(work: Path, coords: Path) -> list[Outcome]:
    """Coords/features HDF5 cases through ``wsi-extract --skip_errors`` and ``load_bag``."""
    from faults.caches import cache_outcomes

    return cache_outcomes(work, coords)


def run_training_inputs(work: Path) -> list[Outcome]:
    """Manifest, splits, NaN features and config cases through ``wsi-train``."""
    from faults.training import training_outcomes

    return training_outcomes(work)
