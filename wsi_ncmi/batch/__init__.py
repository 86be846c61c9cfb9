"""Batch-job plumbing shared by the pipeline stages.

Atomic outputs, per-item locks for concurrent jobs, sharding, run reports and a
resumable process-pool runner.
"""

from wsi_ncmi.batch.atomic import (
    atomic_output,
    find_temp_files,
    pid_alive,
    remove_stale_temp_files,
    write_bytes_atomic,
    write_text_atomic,
)
from wsi_ncmi.batch.locks import ItemLock
from wsi_ncmi.batch.report import STATUSES, ItemResult, RunReport
from wsi_ncmi.batch.runner import run_batch
from wsi_ncmi.batch.shard import parse_shard, select_shard, shard_of
from wsi_ncmi.errors import BatchAbortedError

__all__ = [
    "STATUSES",
    "BatchAbortedError",
    "ItemLock",
    "ItemResult",
    "RunReport",
    "atomic_output",
    "find_temp_files",
    "parse_shard",
    "pid_alive",
    "remove_stale_temp_files",
    "run_batch",
    "select_shard",
    "shard_of",
    "write_bytes_atomic",
    "write_text_atomic",
]
