"""``run_bench``: features for missing slides (tile → extract), then the sweep and reports.

With ``data.synth`` the slides are first generated (a synthetic cohort, resumable). When
``data.slide_dir`` is set (and ``prepare.enabled``), slides of the manifest without a
features file are tiled into ``<features_root>/coords/`` (overlays in ``thumbnails/``)
and extracted into ``<features_root>/features/<encoder>/``. Both stages are the library
batch functions behind ``wsi-tile`` and ``wsi-extract``: resumable, atomic, lock-aware.
Without ``slide_dir`` the features must already exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ncmi.bench.config import BENCH_EXTRACT_DEFAULTS, BenchConfig
from wsi_ncmi.errors import ConfigError, MissingFeaturesError

if TYPE_CHECKING:
    from wsi_ncmi.bench.summaries import BenchReports
    from wsi_ncmi.bench.sweep import SweepOutcome
    from wsi_ncmi.features.config import ExtractConfig

log = logging.getLogger(__name__)


@dataclass
class BenchOutcome:
    """What :func:`run_bench` did.

    Attributes:
        sweep: The sweep outcome (the final stage's, in the config's loss labels).
        reports: What :func:`wsi_ncmi.bench.report.write_reports` returned (``None``
            where this job left the reports to another).
        seconds: Wall time per stage (``synth``, ``tile``, ``extract``, ``sweep``,
            ``report``).
        prepared: Slides that were tiled/extracted by this run.
        parts: With ``sweep.splits``: one outcome per split name (then ``sweep`` and
            ``reports`` are those of the first split).
    """

    sweep: SweepOutcome
    reports: BenchReports | None
    seconds: dict[str, float] = field(default_factory=dict)
    prepared: list[str] = field(default_factory=list)
    parts: dict[str, BenchOutcome] = field(default_factory=dict)


def generate_slides(config: BenchConfig, seconds: dict[str, float]) -> None:
    """Generate the synthetic cohort of ``data.synth`` into ``data.slide_dir`` (resumable)."""
    from wsi_ncmi.bench.sweep import available_cores
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth import generate_cohort

    synth, data = config.data.synth, config.data
    if synth is None or data.slide_dir is None:
        return
    started = time.perf_counter()
    generate_cohort(
        read_manifest(synth.manifest),
        Path(data.slide_dir),
        preset=synth.preset,
        seed=synth.seed,
        subset=synth.subset,
        use_preset_subset=False,
        workers=synth.workers or available_cores(),
        progress=config.progress,
    )
    seconds["synth"] = time.perf_counter() - started


def missing_features(config: BenchConfig) -> list[str]:
    """Slide ids of the manifest without a features file."""
    from wsi_ncmi.features.store import feature_path
    from wsi_ncmi.manifest import read_manifest

    data = config.data
    return [
        row.slide_id
        for row in read_manifest(data.manifest)
        if not feature_path(data.features_root, data.encoder, row.slide_id).is_file()
    ]


def prepare_features(config: BenchConfig, seconds: dict[str, float]) -> list[str]:
    """Tile and extract the slides that have no features yet.

    Args:
        config: The configuration (``data.slide_dir`` must be set).
        seconds: Filled with the ``tile`` and ``extract`` wall times.

    Returns:
        The slide ids that were missing before this call.

    Raises:
        ConfigError: Bad tiling or extraction settings.
    """
    from wsi_ncmi.features.run import run_extraction
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.tiling import TilingConfig, make_tasks, manifest_slides, run_tiling

    data, prep = config.data, config.prepare
    missing = set(missing_features(config))
    if not missing or data.slide_dir is None:
        return []
    rows = read_manifest(data.manifest)
    paths = manifest_slides(data.manifest, data.slide_dir)
    todo = [p for row, p in zip(rows, paths, strict=True) if row.slide_id in missing]
    from wsi_ncmi.features.encoders.registry import get_spec

    try:  # before tiling: the extraction builds it (imported features may name others)
        get_spec(data.encoder)
    except ConfigError as err:
        raise ConfigError(
            f"data.encoder: {err}; {len(todo)} slides lack features and would be extracted"
        ) from err
    root = Path(data.features_root)
    started = time.perf_counter()
    report = run_tiling(
        make_tasks(todo),
        TilingConfig(out_dir=str(root), grid=prep.grid),
        workers=prep.tile_workers,
        progress=config.progress,
    )
    seconds["tile"] = time.perf_counter() - started
    log.info("tiling: %s", report.counts)
    from wsi_ncmi.bench.cells import quiet_lightning

    quiet_lightning()
    started = time.perf_counter()
    run_extraction(extract_config(config))
    seconds["extract"] = time.perf_counter() - started
    return sorted(missing)


def extract_config(config: BenchConfig) -> ExtractConfig:
    """``wsi-extract``'s configuration for the benchmark's missing slides.

    Raises:
        ConfigError: A bad ``prepare.extract`` value.
    """
    from wsi_ncmi.features.config import ExtractConfig

    root = Path(config.data.features_root)
    values = BENCH_EXTRACT_DEFAULTS | dict(config.prepare.extract)
    for key in ("weights", "slide_dir"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    try:
        return ExtractConfig(
            coords_dir=root / "coords",
            out_dir=root,
            encoder=config.data.encoder,
            progress=config.progress,
            **values,
        )
    except TypeError as err:
        raise ConfigError(f"prepare.extract: {err}") from err


def run_bench(
    config: BenchConfig,
    *,
    force: bool = False,
    shard: str | None = None,
    began: float | None = None,
) -> BenchOutcome:
    """Prepare features if slides are given, run the sweep, write the reports.

    Args:
        config: The configuration, checked again here (and its default labels filled),
            so that one built in Python gets :func:`~wsi_ncmi.bench.parser.load_config`'s
            checks too.
        force: Recompute finished cells made with other settings.
        shard: ``"i/N"`` when ``N`` jobs share the sweep (cells are claimed by lock
            files; this job starts with shard ``i``). Reports are written only by a job
            that finds every cell finished; the others leave ``reports`` ``None``.
        began: When the job started (``time.time()``; default: now). Reports another
            job writes after it are not written again.

    Returns:
        The outcome (reports are under ``config.out_dir``).

    Raises:
        ConfigError: Bad configuration.
        MissingFeaturesError: Slides still without features (and ``train.data.missing``
            is not ``exclude``).
    """
    from wsi_ncmi.bench.parser import validate

    validate(config)  # before any work
    seconds: dict[str, float] = {}
    prepared: list[str] = []
    began = time.time() if began is None else began  # compared with files' mtimes
    if config.data.slide_dir is not None and config.prepare.enabled:
        generate_slides(config, seconds)
        prepared = prepare_features(config, seconds)
    still = missing_features(config)
    if still and (config.train.get("data") or {}).get("missing", "error") != "exclude":
        raise MissingFeaturesError(
            f"{len(still)} slides of {config.data.manifest!r} have no "
            f"{config.data.encoder!r} features under {config.data.features_root!r} "
            f"(e.g. {still[:3]}); give data.slide_dir to tile and extract them, or set "
            "train.data.missing: exclude"
        )
    from wsi_ncmi.bench.suite import split_configs
    from wsi_ncmi.bench.sweep import shared_pools

    with shared_pools():  # one set of job processes for every stage of every split
        parts = {
            name: _run_split(part, force=force, shard=shard, began=began)
            for name, part in split_configs(config).items()
        }
    first = next(iter(parts.values()))
    for part in parts.values():
        for key, value in part.seconds.items():
            seconds[key] = seconds.get(key, 0.0) + value
    if list(parts) == [""]:
        return BenchOutcome(first.sweep, first.reports, seconds, prepared)
    return BenchOutcome(first.sweep, first.reports, seconds, prepared, parts)


def _run_split(
    config: BenchConfig, *, force: bool, shard: str | None, began: float
) -> BenchOutcome:
    """Tune, sweep and report one split (see :mod:`wsi_ncmi.bench.suite`).

    ``began`` is the job's start (``time.time()``): reports another job wrote after it
    are not written again.
    """
    from wsi_ncmi.bench.report import write_reports
    from wsi_ncmi.bench.suite import run_suite

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    suite = run_suite(config, force=force, shard=shard)
    sweep = suite.sweep
    seconds["sweep"] = time.perf_counter() - started

    def write(cfg: BenchConfig, outcome: SweepOutcome) -> BenchReports:
        return write_reports(cfg, outcome, choices=suite.choices)

    reports: BenchReports | None = None
    # A job alone on its sweep owns the report (failed cells are reported as missing).
    # Jobs that shared it (shards, or several plain jobs meeting through the cell locks):
    # the one that finds every cell done writes it, so no report misses a cell another
    # job was still training. Either way the report lock and its dates make it written
    # once: a job that believed itself alone can meet another that finished with it.
    alone = shard is None and not sweep.shared
    if alone or sweep.complete:
        started = time.perf_counter()
        reports = write_reports_once(config, sweep, write, since=began)
        seconds["report"] = time.perf_counter() - started
    return BenchOutcome(sweep, reports, seconds)


def write_reports_once(
    config: BenchConfig,
    sweep: SweepOutcome,
    write: Callable[[BenchConfig, SweepOutcome], BenchReports],
    *,
    since: float,
) -> BenchReports | None:
    """Write the reports of a sweep once: ``None`` if another job writes or wrote them.

    Jobs of one sweep that finish together can all find every cell done. The first to
    take ``<bench>/locks/report.lock`` writes the reports; a job that takes it later finds
    ``summary.json`` newer than every cell's ``result.json`` and than its own start
    (``since``, a ``time.time()``), so written by another job during this run, and leaves
    it. A rerun of a finished sweep still writes them (its reports predate ``since``).
    """
    from wsi_ncmi.batch.locks import ItemLock, lock_dir, lock_file
    from wsi_ncmi.bench.cells import RESULT_NAME

    lock = ItemLock(lock_file(lock_dir(config.out_dir), "report"))
    if not lock.acquire():
        log.info("another job is writing the reports of %s", config.name)
        return None
    try:
        summary = config.out_dir / "summary.json"
        results = list((config.out_dir / "cells").glob(f"*/{RESULT_NAME}"))
        newest = max((r.stat().st_mtime for r in results), default=0.0)
        if summary.is_file() and summary.stat().st_mtime >= max(newest, since):
            log.info("the reports of %s are up to date (written by another job)", config.name)
            return None
        return write(config, sweep)
    finally:
        lock.release()
