"""The extraction data module: this rank's slides, each locked as the loader reaches it.

Used by :mod:`wsi_ncmi.features.encode` (re-exported there): whole slides per rank,
balanced by patch count; finished slides dropped at setup; each remaining slide claimed
(locked, re-checked) just before its first batch (:class:`~wsi_ncmi.features.loader.
ClaimingSampler`); one DataLoader with a shared-memory probe and a stall timeout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from wsi_ncmi.batch import ItemLock, ItemResult
from wsi_ncmi.batch.locks import lock_file
from wsi_ncmi.features.loader import (
    DEFAULT_LOADER_TIMEOUT_S,
    ClaimingSampler,
    probe_shared_memory,
)
from wsi_ncmi.features.read import PatchBatch, PatchBatchDataset, SlideJob


def assign_to_rank(jobs: list[SlideJob], rank: int, world_size: int) -> list[SlideJob]:
    """Whole slides for ``rank``: greedy balance by patch count, deterministic order."""
    if world_size <= 1:
        return list(jobs)
    load = [0] * world_size
    owner: dict[int, int] = {}
    for index in sorted(range(len(jobs)), key=lambda i: (-len(jobs[i]), jobs[i].slide_id)):
        target = min(range(world_size), key=lambda r: (load[r], r))
        owner[index] = target
        load[target] += max(1, len(jobs[index]))
    return [job for i, job in enumerate(jobs) if owner[i] == rank]


def lock_path(lock_dir: str | Path, job: SlideJob) -> Path:
    """The lock of one slide and encoder, ``<lock_dir>/<encoder dir>.<slide_id>.lock``.

    Named by :func:`~wsi_ncmi.batch.locks.lock_file` (hash-shortened when too long).
    """
    return lock_file(lock_dir, f"{job.output.parent.name}.{job.slide_id}")


class ExtractDataModule(L.LightningDataModule):
    """Selects this rank's pending slides, locks each as it is reached, streams its patches.

    Args:
        jobs: Every slide of the run (all ranks).
        batch_size: Patches per batch.
        workers: DataLoader worker processes (0: read in the main process).
        is_done: Whether a job's complete output already exists (resume).
        lock_dir: Per-slide lock files, for concurrent jobs; ``None`` disables.
        pin_memory: Page-locked host batches (set on GPU).
        prefetch_factor: Batches each worker keeps ready.
        strip_reads: Read horizontal neighbour patches with one call.
        loader_timeout_s: Seconds without a batch from the workers before the run stops
            with :class:`~wsi_ncmi.errors.WorkerFailedError` (workers > 0 only).
    """

    def __init__(
        self,
        jobs: list[SlideJob],
        *,
        batch_size: int,
        workers: int,
        is_done: Callable[[SlideJob], bool],
        lock_dir: str | Path | None = None,
        pin_memory: bool = False,
        prefetch_factor: int = 4,
        strip_reads: bool = True,
        loader_timeout_s: float = DEFAULT_LOADER_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.all_jobs = jobs
        self.batch_size = batch_size
        self.workers = workers
        self.is_done = is_done
        self.lock_dir = lock_dir
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.strip_reads = strip_reads
        self.loader_timeout_s = loader_timeout_s
        self.jobs: list[SlideJob] = []
        self.pre_results: list[ItemResult] = []
        self.locks: dict[str, ItemLock] = {}

    def setup(self, stage: str) -> None:
        """Pick this rank's slides and drop finished ones; locks are taken later.

        Each slide's lock is taken when the loader reaches it (:meth:`claim`), so
        concurrent jobs share the slides of one folder.
        """
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self.trainer.world_size if self.trainer is not None else 1
        self.jobs, self.pre_results = [], []
        for job in assign_to_rank(self.all_jobs, rank, world):
            if len(job) == 0:
                continue  # no-tissue slides are written by the runner
            if self.is_done(job):
                lock = self._lock_for(job)
                if lock is not None and lock.path.exists() and lock.acquire():
                    lock.release()  # a killed run finished the file but left its lock
                self.pre_results.append(ItemResult(job.slide_id, "skipped", output=str(job.output)))
                continue
            self.jobs.append(job)

    def claim(self, index: int) -> bool:
        """Lock slide ``index`` of :attr:`jobs` just before its first batch is read.

        Returns False (and records ``locked`` or ``skipped``) when another job holds it
        or finished it meanwhile.
        """
        job = self.jobs[index]
        lock = self._lock_for(job)
        if lock is not None:
            if not lock.acquire():
                self.pre_results.append(
                    ItemResult(job.slide_id, "locked", reason="another job holds its lock")
                )
                return False
            self.locks[job.slide_id] = lock
        if self.is_done(job):  # finished by another job since setup
            self.release(job.slide_id)
            self.pre_results.append(
                ItemResult(
                    job.slide_id, "skipped", reason="done by another job", output=str(job.output)
                )
            )
            return False
        return True

    def _lock_for(self, job: SlideJob) -> ItemLock | None:
        if self.lock_dir is None:
            return None
        return ItemLock(lock_path(self.lock_dir, job))

    def release(self, slide_id: str) -> None:
        """Release the lock of ``slide_id`` (if held)."""
        lock = self.locks.pop(slide_id, None)
        if lock is not None:
            lock.release()

    def teardown(self, stage: str) -> None:
        """Release every remaining lock."""
        for slide_id in list(self.locks):
            self.release(slide_id)

    def predict_dataloader(self) -> DataLoader[PatchBatch]:
        """One DataLoader over every pending slide of this rank, slides claimed in turn."""
        workers = self.workers
        dataset = PatchBatchDataset(self.jobs, self.batch_size, strip_reads=self.strip_reads)
        side = max((j.patch_size_px for j in self.jobs), default=1)
        batch_bytes = self.batch_size * side * side * 3
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=ClaimingSampler(dataset.plan, self.claim),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            timeout=self.loader_timeout_s if workers > 0 else 0,
            worker_init_fn=functools.partial(probe_shared_memory, batch_bytes)
            if workers > 0
            else None,
        )


__all__ = ["ExtractDataModule", "assign_to_rank", "lock_path"]
