"""The extraction DataLoader's order and health: claim slides in turn, catch dead workers.

Slides are claimed as they are reached, and workers that die or stall become a clear
error.

Claiming: :class:`ClaimingSampler` yields the batches of a rank's slides in order, and
asks ``claim(slide index)`` just before the first batch of each slide. The data module
takes the slide's lock there (in the main process), so a job holds only the slides it
is working on, plus the few batches the DataLoader prefetches, and several unsharded
jobs on one folder share its slides instead of the first one locking them all.

Health: a DataLoader worker hands each batch to the main process through shared memory
(``/dev/shm``). When that cannot grow (a full or small ``/dev/shm``, a container's
64 MB default, a file-size limit), the worker's hand-over fails in a background thread
and the main process waits forever; a worker killed by the kernel (out of memory) is
reported by PyTorch with a bare ``RuntimeError``. :func:`probe_shared_memory` checks
at worker start that one batch fits; the loader's ``timeout`` turns a stall into an
error; :func:`worker_failure` turns both into a :class:`~wsi_ncmi.errors.WorkerFailedError`
whose message names ``/dev/shm`` and the fixes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from wsi_ncmi.errors import WorkerFailedError

#: Default seconds without a batch from any worker before the run is stopped.
DEFAULT_LOADER_TIMEOUT_S = 600.0

SHM_FIX = (
    "This usually means that /dev/shm (the shared memory DataLoader workers hand batches "
    "through) is full or too small (a container's default is 64 MB: docker run "
    "--shm-size=8g, or a Kubernetes emptyDir with medium: Memory), that a file-size limit "
    "applies (ulimit -f), or that a worker was killed for lack of memory. Fix one of "
    "those, or rerun with --workers 0 (reads in the main process, no shared memory); "
    "finished slides are kept and skipped"
)


class ClaimingSampler(Sampler[int]):
    """Batch indices in plan order, claiming each slide just before its first batch.

    Args:
        plan: ``(slide index, start, stop)`` of every batch (see
            :func:`~wsi_ncmi.features.read.plan_batches`).
        claim: Called with a slide index before its first batch; False skips the slide
            (another job holds it, or it is already done).
    """

    def __init__(self, plan: Sequence[tuple[int, int, int]], claim: Callable[[int], bool]) -> None:
        self.plan = list(plan)
        self.claim = claim

    def __len__(self) -> int:
        return len(self.plan)  # an upper bound: skipped slides yield fewer

    def __iter__(self) -> Iterator[int]:
        current, claimed = -1, False
        for index, (slide, _, _) in enumerate(self.plan):
            if slide != current:
                current, claimed = slide, self.claim(slide)
            if claimed:
                yield index


def probe_shared_memory(nbytes: int, worker_id: int) -> None:
    """``worker_init_fn``: check that one batch of ``nbytes`` fits in shared memory.

    Raises:
        WorkerFailedError: The allocation failed (full ``/dev/shm`` or a size limit).
    """
    try:
        probe = torch.empty(max(1, nbytes), dtype=torch.uint8).share_memory_()
    except RuntimeError as err:
        raise WorkerFailedError(
            f"DataLoader worker {worker_id} cannot place one batch ({nbytes:,} bytes) in "
            f"shared memory: {err}. {SHM_FIX}"
        ) from err
    del probe


def worker_failure(err: BaseException, timeout_s: float) -> WorkerFailedError | None:
    """The :class:`WorkerFailedError` for a DataLoader failure, or None for other errors."""
    text = str(err)
    if isinstance(err, WorkerFailedError):  # from probe_shared_memory, maybe re-raised
        lines = [ln for ln in text.splitlines() if ln.startswith("wsi_ncmi.errors.")]
        lines += [ln for ln in text.splitlines() if ln.startswith("WorkerFailedError: ")]
        if not lines:
            return err
        return WorkerFailedError(lines[-1].split("WorkerFailedError: ", 1)[-1])
    if not isinstance(err, RuntimeError):
        return None
    if "DataLoader timed out" in text:
        return WorkerFailedError(
            f"no batch arrived from the DataLoader workers for {timeout_s:g} s "
            f"(--loader_timeout_s); they stalled. {SHM_FIX}"
        )
    if "DataLoader worker" in text and ("exited unexpectedly" in text or "killed" in text):
        return WorkerFailedError(f"a DataLoader worker died ({text.strip()}). {SHM_FIX}")
    return None


__all__ = [
    "DEFAULT_LOADER_TIMEOUT_S",
    "SHM_FIX",
    "ClaimingSampler",
    "probe_shared_memory",
    "worker_failure",
]
