"""Run reports for batch jobs: per-item status, reasons, counts and timings."""

from __future__ import annotations

import json
import os
import platform
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsi_ncmi.batch.atomic import remove_stale_temp_files, write_text_atomic
from wsi_ncmi.jsontypes import JSONObject

Status = Literal["ok", "skipped", "no_tissue", "failed", "locked"]
STATUSES: tuple[str, ...] = ("ok", "skipped", "no_tissue", "failed", "locked")


def unique_report_path(out_dir: str | Path, stage: str) -> Path:
    """``<out>/reports/<stage>_<time>_<host>_<pid>_<token>.json``, unique per run.

    ``<time>`` has milliseconds (``20261126-233145.123``), so names sort in start order;
    the random token keeps two runs of one process within one millisecond apart.
    """
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    name = f"{stage}_{stamp}_{platform.node()}_{os.getpid()}_{secrets.token_hex(3)}.json"
    return Path(out_dir) / "reports" / name


@dataclass
class ItemResult:
    """Outcome of one work item (one slide).

    Attributes:
        item_id: The slide id.
        status: ``ok``; ``skipped`` (complete output already there); ``no_tissue``;
            ``failed`` (see ``error_type``/``reason``); ``locked`` (another job holds it).
        reason: Human-readable detail for non-ok statuses.
        error_type: Exception class name for ``failed``.
        count: Items produced (patches, features).
        seconds: Wall time spent on the item.
        output: Path of the output file, if any.
        extra: Stage-specific figures (bad tiles, patches/s, ...).
    """

    item_id: str
    status: Status
    reason: str = ""
    error_type: str = ""
    count: int = 0
    seconds: float = 0.0
    output: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunReport:
    """All results of one batch run, with a one-screen summary and a JSON form."""

    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    results: list[ItemResult] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def add(self, result: ItemResult) -> None:
        """Record one item's result."""
        self.results.append(result)

    @property
    def counts(self) -> dict[str, int]:
        """Number of items per status (every status listed, zeros included)."""
        c: Counter[str] = Counter(r.status for r in self.results)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def failed(self) -> list[ItemResult]:
        """The failed items."""
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 if nothing failed, 1 otherwise (no_tissue is a finding, not a failure)."""
        return 1 if self.failed else 0

    def to_dict(self) -> JSONObject:
        """JSON-ready form."""
        return {
            "stage": self.stage,
            "host": platform.node(),
            "started": self.started,
            "finished": self.finished or time.time(),
            "params": self.params,
            "counts": self.counts,
            "total_count": sum(r.count for r in self.results if r.status == "ok"),
            "results": [asdict(r) for r in self.results],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write the report atomically as JSON.

        The report's folder is first cleared of temp files whose writer is gone: a run
        killed while writing its own report leaves one there, and no stage's start-up
        sweep (which covers its output folders) looks in ``reports/``.
        """
        self.finished = self.finished or time.time()
        folder = Path(path).parent
        if folder.is_dir():
            remove_stale_temp_files(folder)
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")

    def summary(self, unit: str = "patches") -> str:
        """One-screen text summary: counts, totals and every non-ok item with its reason."""
        counts = self.counts
        elapsed = (self.finished or time.time()) - self.started
        ok = [r for r in self.results if r.status == "ok"]
        total = sum(r.count for r in ok)
        lines = [
            f"{self.stage}: {len(self.results)} slides in {elapsed:.1f} s — "
            + ", ".join(f"{k} {v}" for k, v in counts.items() if v or k in ("ok", "failed")),
        ]
        if ok:
            per = [r.count for r in ok]
            secs = [r.seconds for r in ok]
            lines.append(
                f"  {unit}: {total} total, {min(per)}–{max(per)} per slide; "
                f"seconds per slide: {sum(secs) / len(secs):.2f} mean, {max(secs):.2f} max"
            )
        for r in self.results:
            if r.status in ("ok", "skipped") and r.reason.startswith("redone"):
                lines.append(f"  {r.status:<9} {r.item_id}: {r.reason}")
            elif r.status in ("failed", "no_tissue", "locked"):
                why = f"{r.error_type}: {r.reason}" if r.error_type else r.reason
                lines.append(f"  {r.status:<9} {r.item_id}: {why}")
        return "\n".join(lines)
