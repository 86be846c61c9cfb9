"""A generic, resumable, lock-aware batch runner over a process pool.

Each stage (tiling, extraction) supplies a picklable ``job(item) -> ItemResult`` that
writes its output atomically, and an ``is_done(item)`` that recognises a complete
output made with the same parameters. The runner adds the rest: sharding, per-item
locks for concurrent jobs, skipping finished items, error isolation
(``skip_errors``), a progress bar and the run report.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from wsi_ncmi.batch.locks import DEFAULT_STALE_AFTER_S, ItemLock, lock_file
from wsi_ncmi.batch.locks import wait_for_locked as wait_locked
from wsi_ncmi.batch.report import ItemResult, RunReport
from wsi_ncmi.errors import BatchAbortedError, WsiNcmiError

T = TypeVar("T")


@dataclass(frozen=True)
class _Task(Generic[T]):
    item: T
    item_id: str
    job: Callable[[T], ItemResult]
    is_done: Callable[[T], bool] | None
    lock_dir: Path | None
    stale_after_s: float


def _lock_of(task: _Task[T]) -> ItemLock:
    """The lock of a task that has a lock folder."""
    if task.lock_dir is None:
        raise ValueError(f"{task.item_id}: no lock folder")
    return ItemLock(lock_file(task.lock_dir, task.item_id), stale_after_s=task.stale_after_s)


def _execute(task: _Task[T]) -> ItemResult:
    """Run one task in the current process: lock, skip-if-done, job, error capture."""
    start = time.perf_counter()
    lock: ItemLock | None = None
    if task.lock_dir is not None:
        lock = _lock_of(task)
        if not lock.acquire():
            return ItemResult(task.item_id, "locked", reason="another job holds its lock")
    try:
        if task.is_done is not None and task.is_done(task.item):
            result = ItemResult(task.item_id, "skipped", reason="complete output exists")
        else:
            result = task.job(task.item)
            result.seconds = result.seconds or time.perf_counter() - start
        if lock is not None and lock.took_over is not None:
            result.extra["took_over_stale_lock"] = lock.took_over
        return result
    except WsiNcmiError as err:
        return ItemResult(
            task.item_id,
            "failed",
            reason=str(err),
            error_type=type(err).__name__,
            seconds=time.perf_counter() - start,
        )
    except Exception as err:  # an unexpected bug must not kill a 1,000-slide batch
        tb = traceback.format_exception_only(type(err), err)[-1].strip()
        return ItemResult(
            task.item_id,
            "failed",
            reason=f"unexpected error: {tb}",
            error_type=type(err).__name__,
            seconds=time.perf_counter() - start,
        )
    finally:
        if lock is not None:
            lock.release()


class ProgressBar(Protocol):
    """The part of a tqdm bar the runner uses."""

    def update(self, n: int = 1) -> object:
        """Advance by ``n`` items."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Show ``s`` after the bar."""

    def close(self) -> None:
        """Finish the bar."""


class _NoBar:
    """Stands in for a disabled tqdm bar without importing tqdm (~45 ms at start-up)."""

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def _progress_bar(total: int, desc: str, progress: bool) -> ProgressBar:
    """A tqdm bar when ``progress`` (tqdm itself disables it off a TTY), else a no-op."""
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="slide", disable=None)


def run_batch(
    items: Sequence[T],
    job: Callable[[T], ItemResult],
    *,
    item_ids: Sequence[str],
    report: RunReport,
    is_done: Callable[[T], bool] | None = None,
    lock_dir: str | Path | None = None,
    workers: int = 1,
    skip_errors: bool = True,
    wait_for_locked: bool = True,
    poll_s: float = 1.0,
    max_wait_s: float | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    progress: bool = True,
    desc: str = "slides",
    start_method: str = "fork",
) -> RunReport:
    """Run ``job`` over ``items`` and fill ``report``.

    Args:
        items: Work items (picklable when ``workers > 1``).
        job: Top-level function processing one item; writes its output atomically and
            returns an :class:`ItemResult`. Errors derived from ``WsiNcmiError`` become
            ``failed`` results with their message.
        item_ids: One unique id per item (slide id), used for locks and the report.
        report: Report to append to.
        is_done: Returns True when a complete output with the same parameters exists.
        lock_dir: Directory for per-item lock files (enables concurrent jobs).
        workers: Worker processes; 1 runs in this process.
        skip_errors: Record failures and go on (default), or stop at the first one
            with :class:`BatchAbortedError`.
        wait_for_locked: After the pass, wait for items that other jobs hold, taking
            over their locks if those jobs die, so that every item ends done.
        poll_s: Polling interval while waiting for locked items.
        max_wait_s: Stop waiting after this long and report the rest as ``locked``
            (``None``: wait until they are done or their holders die).
        stale_after_s: Age of a silent lock (other hosts) before it is taken over.
        progress: Show a progress bar (on a terminal).
        desc: Progress bar label.
        start_method: ``fork`` (fast, default on Linux) or ``spawn``.

    Returns:
        ``report``, with one result per item.
    """
    if len(items) != len(item_ids):
        raise ValueError("items and item_ids must have the same length")
    if len(set(item_ids)) != len(item_ids):
        raise ValueError("item ids must be unique")
    ldir = Path(lock_dir) if lock_dir is not None else None
    tasks = [
        _Task(item, iid, job, is_done, ldir, stale_after_s)
        for item, iid in zip(items, item_ids, strict=True)
    ]
    bar = _progress_bar(len(tasks), desc, progress)
    pending: list[_Task[T]] = tasks
    waiting: list[_Task[T]] = []
    deadline = None if max_wait_s is None else time.monotonic() + max_wait_s

    def record(result: ItemResult) -> None:
        report.add(result)
        bar.update(1)
        bar.set_postfix_str(f"{result.item_id}: {result.status}", refresh=False)
        if result.status == "failed" and not skip_errors:
            raise BatchAbortedError(
                f"{result.item_id} failed ({result.error_type}: {result.reason}); "
                "stopping because --skip_errors is off"
            )

    try:
        while pending or waiting:
            results = _iter_results(pending, workers, start_method)
            try:
                for result, task in results:
                    if result.status == "locked" and wait_for_locked:
                        waiting.append(task)
                    else:
                        record(result)
            finally:
                results.close()  # stops the pool (its workers) now, on any exit
            pending = []
            if waiting:
                found = wait_locked(
                    waiting, _lock_of, is_done=_task_done, poll_s=poll_s, deadline=deadline
                )
                for task in found.done:
                    record(ItemResult(task.item_id, "skipped", reason="done by another job"))
                if found.expired:
                    for task in found.waiting:
                        record(
                            ItemResult(
                                task.item_id,
                                "locked",
                                reason=f"another job still held its lock after {max_wait_s:g} s",
                            )
                        )
                    found.waiting = []
                pending, waiting = found.ready, found.waiting
        if ldir is not None:  # locks of holders killed after finishing their item
            for task in tasks:
                _lock_of(task).break_if_stale()
    except BaseException:
        # Ctrl-C or a stop: the pool's workers are gone now; their locks go with them.
        if ldir is not None:
            for task in tasks:
                _lock_of(task).break_if_stale()
        raise
    finally:
        bar.close()
        report.finished = time.time()
    return report


def _task_done(task: _Task[T]) -> bool:
    """Whether a task's complete output exists (never, without ``is_done``)."""
    return task.is_done is not None and task.is_done(task.item)


def _iter_results(
    tasks: list[_Task[T]], workers: int, start_method: str
) -> Generator[tuple[ItemResult, _Task[T]], None, None]:
    """Yield ``(result, task)`` as tasks finish, in-process or over a pool."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _execute(task), task
        return
    ctx = mp.get_context(start_method)
    # Ctrl-C reaches the whole process group: the workers ignore it, the parent stops
    # the pool and exits with a resume hint (wsi_ncmi.cli.common.run_cli).
    with ctx.Pool(min(workers, len(tasks)), initializer=_ignore_sigint) as pool:
        for index, result in pool.imap_unordered(_execute_indexed, list(enumerate(tasks))):
            yield result, tasks[index]


def _ignore_sigint() -> None:
    """Pool initializer: SIGINT is the parent's to handle."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _execute_indexed(arg: tuple[int, _Task[T]]) -> tuple[int, ItemResult]:
    index, task = arg
    return index, _execute(task)
