"""Run the sweep: plan the cells, skip finished ones, train the rest, write the reports.

Cells run in this process (``jobs = 1``) or in a pool of ``jobs`` spawned processes, each
with ``torch_threads`` threads (default: cores / jobs). A progress bar counts cells and
estimates the time left from the cells finished by this run. A cell that fails is
reported with its error and the sweep goes on; the summary then says which cells are
missing, and the exit code is 1.

Several jobs can share one sweep (``wsi-bench --shard i/N``, e.g. a SLURM array): every
cell is claimed through a lock file before it trains (:func:`wsi_ncmi.bench.cells.run_cell_job`),
job ``i`` starts with the cells of its shard and then helps with the others' leftovers,
and only a job that sees every cell finished writes the reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from tqdm import tqdm

from wsi_ncmi.batch.shard import parse_shard, shard_of
from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.cells import (
    CellOutcome,
    cell_dir,
    expected_hash,
    read_result,
    run_cell_job,
)
from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.plan import Cell, plan_cells, write_splits
from wsi_ncmi.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class SweepOutcome:
    """What a sweep run did.

    Attributes:
        cells: Every planned cell.
        results: Results of the finished cells (this run and earlier ones).
        ran: Cell ids trained by this run.
        skipped: Cell ids already finished before this run (or by another job meanwhile).
        failed: ``{cell_id: error}`` of the cells that failed in this run.
        claimed: Cell ids left to other jobs that held them (and not finished yet).
        shared: Whether another live job held any cell during this run.
        seconds: Wall time of the training part.
    """

    cells: list[Cell]
    results: list[CellResult] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    claimed: list[str] = field(default_factory=list)
    shared: bool = False
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Whether every planned cell has a result."""
        return len({r.cell_id for r in self.results}) == len(self.cells)


#: Pools kept alive by :func:`shared_pools`, by number of jobs (``None``: not shared).
_SHARED: dict[int, ProcessPoolExecutor] | None = None


@contextlib.contextmanager
def shared_pools() -> Iterator[None]:
    """Let every :func:`run_sweep` inside this block reuse one pool of job processes.

    A benchmark runs many sweeps (the tuning stage, then one per aggregator and fold, per
    split); each spawned job process spends seconds importing torch and Lightning, so
    :func:`wsi_ncmi.bench.pipeline.run_bench` starts the pool once. The pools are shut
    down when the block ends.
    """
    global _SHARED
    if _SHARED is not None:  # nested: the outer block owns the pools
        yield
        return
    _SHARED = {}
    try:
        yield
    finally:
        pools, _SHARED = _SHARED, None
        for pool in pools.values():
            pool.shutdown(cancel_futures=True)


def _job_pool(jobs: int) -> tuple[ProcessPoolExecutor, bool]:
    """A pool of ``jobs`` spawned processes, and whether this sweep owns it."""
    if _SHARED is None:
        return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")), True
    if jobs not in _SHARED:
        _SHARED[jobs] = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    return _SHARED[jobs], False


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool at once (Ctrl-C or an error) and forget it if it was shared."""
    if _SHARED is not None:
        for jobs in [j for j, p in _SHARED.items() if p is pool]:
            del _SHARED[jobs]
    pool.shutdown(wait=False, cancel_futures=True)


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def save_resolved_config(config: BenchConfig) -> None:
    """Write ``<bench>/bench_config.yaml`` (resolved config + package version)."""
    import yaml

    from wsi_ncmi._version import __version__
    from wsi_ncmi.batch import write_text_atomic

    text = yaml.safe_dump(
        {"version": __version__, "config": dataclasses.asdict(config)}, sort_keys=False
    )
    write_text_atomic(config.out_dir / "bench_config.yaml", text)


def partition_cells(
    config: BenchConfig, cells: list[Cell], *, force: bool = False
) -> tuple[list[CellResult], list[Cell]]:
    """Split the plan into finished results and cells still to run.

    Args:
        config: The configuration.
        cells: The plan.
        force: Recompute finished cells made with another configuration (their folders
            are deleted) instead of refusing.

    Returns:
        ``(finished results, cells to run)``.

    Raises:
        ConfigError: Finished cells with another config hash, without ``force``.
    """
    done: list[CellResult] = []
    todo: list[Cell] = []
    stale: list[str] = []
    for cell in cells:
        result = read_result(config, cell)
        if result is None:
            todo.append(cell)
        elif result.config_hash == expected_hash(config, cell):
            done.append(result)
        elif force:
            shutil.rmtree(cell_dir(config, cell))
            todo.append(cell)
        else:
            stale.append(cell.cell_id)
    if stale:
        raise ConfigError(
            f"{len(stale)} finished cells of {str(config.out_dir)!r} were made with other "
            f"settings (e.g. {stale[0]!r}); use another bench name, or --force to recompute them"
        )
    return done, todo


def _check_train_sections(config: BenchConfig, cells: list[Cell]) -> None:
    """Fail before any training if the ``train`` overrides have a bad type or value.

    The sections check their values when :func:`~wsi_ncmi.bench.plan.train_config_for`
    builds them.
    """
    from wsi_ncmi.bench.plan import train_config_for

    seen = set()
    for cell in cells:  # one per (aggregator, loss): each may have its own overrides
        if (cell.model.label, cell.loss.label) not in seen:
            seen.add((cell.model.label, cell.loss.label))
            train_config_for(config, cell, config.out_dir / "_check")


def shard_order(cells: list[Cell], shard: str | None) -> list[Cell]:
    """This job's cells first (those whose id hashes to shard ``i``), then the others'.

    Raises:
        ConfigError: A malformed ``i/N``.
    """
    index, count = parse_shard(shard)
    if count == 1:
        return list(cells)
    mine = [c for c in cells if shard_of(c.cell_id, count) == index]
    return mine + [c for c in cells if shard_of(c.cell_id, count) != index]


def run_sweep(
    config: BenchConfig, *, force: bool = False, shard: str | None = None
) -> SweepOutcome:
    """Train every unfinished cell of the sweep (results are written per cell).

    Args:
        config: The validated configuration.
        force: See :func:`partition_cells`.
        shard: ``"i/N"``: start with shard ``i`` of ``N`` (see :func:`shard_order`).

    Returns:
        The outcome; the reports are written by :func:`wsi_ncmi.bench.report.write_reports`.

    Raises:
        ConfigError: Bad split or stale finished cells.
    """
    config.out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(config)
    cells = plan_cells(config, write_splits(config))
    _check_train_sections(config, cells)
    done, todo = partition_cells(config, cells, force=force)
    todo = shard_order(todo, shard)
    outcome = SweepOutcome(cells, results=list(done), skipped=[r.cell_id for r in done])
    if outcome.skipped:
        log.info("%d of %d cells already finished", len(done), len(cells))
    jobs = min(config.jobs, max(1, len(todo)))
    threads = config.torch_threads or max(1, available_cores() // jobs)
    bar = tqdm(
        total=len(cells),
        initial=len(done),
        desc=f"wsi-bench {config.name}",
        unit="cell",
        disable=not config.progress or None,
        smoothing=0.0,
    )
    started = time.perf_counter()

    def record(done: CellOutcome) -> None:
        cell_id = done.cell_id
        if done.result is not None:
            outcome.results.append(done.result)
            (outcome.ran if done.status == "trained" else outcome.skipped).append(cell_id)
        elif done.status == "claimed":
            outcome.claimed.append(cell_id)
            outcome.shared = True
        else:
            outcome.failed[cell_id] = str(done.error)
            log.error("cell %s failed: %s", cell_id, done.error)
        bar.update(1)
        bar.set_postfix_str(cell_id, refresh=True)

    try:
        if jobs == 1:
            if config.torch_threads is not None:
                import torch

                torch.set_num_threads(config.torch_threads)
            for cell in todo:
                bar.set_postfix_str(f"training {cell.cell_id}", refresh=True)
                record(run_cell_job((config, cell, None)))
        elif todo:
            pool, owned = _job_pool(jobs)
            futures = []
            try:
                futures = [pool.submit(run_cell_job, (config, c, threads)) for c in todo]
                for future in as_completed(futures):
                    record(future.result())
            except BaseException:
                # Ctrl-C (or any error here): start no further cell. The cells running now
                # stop with the interrupt (same process group) or finish; both are safe,
                # and a rerun resumes.
                for future in futures:
                    future.cancel()  # those not yet handed to a worker
                _drop_pool(pool)
                raise
            if owned:
                pool.shutdown()
    finally:
        bar.close()
        outcome.seconds = time.perf_counter() - started
    collect_finished_elsewhere(config, outcome)
    return outcome


def collect_finished_elsewhere(config: BenchConfig, outcome: SweepOutcome) -> None:
    """Take the results of cells other jobs held and have finished since.

    Jobs sharing a sweep that finish their last cells together would otherwise each see
    the other's cell as held, and neither would write the reports: checked after this
    job's own last write, the job that finishes last sees every result.
    """
    by_id = {c.cell_id: c for c in outcome.cells}
    still = []
    for cell_id in outcome.claimed:
        cell = by_id[cell_id]
        result = read_result(config, cell)
        if result is not None and result.config_hash == expected_hash(config, cell):
            outcome.results.append(result)
            outcome.skipped.append(cell_id)
        else:
            still.append(cell_id)
    outcome.claimed = still
