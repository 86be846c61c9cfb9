"""The ``wsi-extract`` batch: coords files in, one features file per slide out.

Resumable (a slide whose complete output has the same extraction hash is skipped),
shardable (``--shard i/N``), lock-aware (concurrent jobs share a cohort), atomic (a
killed run leaves only temp files, removed on the next run) and reported (per-slide
patches, seconds, patches/s and the total).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsi_ncmi.batch import (
    BatchAbortedError,
    ItemResult,
    RunReport,
    remove_stale_temp_files,
)
from wsi_ncmi.batch.locks import wait_for_locked
from wsi_ncmi.batch.report import unique_report_path
from wsi_ncmi.errors import ConfigError, WorkerFailedError
from wsi_ncmi.features.config import PRECISIONS, SPEC_PRECISION, ExtractConfig
from wsi_ncmi.features.encoders.registry import EncoderModule, EncoderSpec
from wsi_ncmi.features.plan import (
    check_mpp,
    extraction_hash,
    job_attrs,
    load_jobs,
    with_gpu_decode,
    write_empty,
)
from wsi_ncmi.features.predict_rounds import ExtractionRound, RoundSetup, slide_lock
from wsi_ncmi.features.read import SlideJob
from wsi_ncmi.features.store import feature_path
from wsi_ncmi.jsontypes import JSONObject


def _check_room(out_dir: Path, jobs: list[SlideJob], out_dim: int, dtype: str) -> None:
    """Refuse an already full disk before any slide is computed (issue 24)."""
    import numpy as np

    from wsi_ncmi.batch.preflight import check_free_space

    sizes = [len(job) for job in jobs if len(job)]
    if sizes:
        # Features, coords (2 x int64) and the valid flag per row, as the writer counts.
        data = min(sizes) * (out_dim * np.dtype(dtype).itemsize + 16 + 1)
        needed = data + data // 100 + 16 * 1024
        check_free_space(out_dir, needed, "the smallest slide's features")


def resolve_runtime(config: ExtractConfig, spec: EncoderSpec) -> tuple[str, str, int, int]:
    """``(accelerator, lightning precision, batch size, workers)`` for this host."""
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA device is available")
    accelerator = "cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu"
    if config.precision != "auto":
        precision = PRECISIONS[config.precision]
    else:
        precision = SPEC_PRECISION[spec.precision] if accelerator == "cuda" else "32-true"
    batch_size = config.batch_size or (256 if accelerator == "cuda" else 64)
    workers = config.workers
    if workers is None:
        workers = min(12, max(1, (os.cpu_count() or 2) - 2))
    return accelerator, precision, batch_size, workers


def weights_hash_cache(config: ExtractConfig) -> Path:
    """The memo of ``--weights`` SHA-256 digests: ``<out>/features/weights-sha256.json``."""
    return config.out_dir / "features" / "weights-sha256.json"


def _close_round(current: ExtractionRound, runtime: dict[str, Any]) -> list[ItemResult]:
    """Add a finished (or failed) round to the run's ``runtime`` totals; its results."""
    outcome = current.outcome
    runtime["seconds"] += outcome.seconds
    runtime["patches_extracted"] += outcome.patches
    runtime["world_size"] = outcome.world_size
    runtime["rounds"] += 1
    return outcome.results


def _wait(
    waiting: list[SlideJob],
    config: ExtractConfig,
    is_done: Callable[[SlideJob], bool],
    report: RunReport,
    deadline: float | None,
) -> tuple[list[SlideJob], list[SlideJob]]:
    """Wait for slides other jobs hold; report those done or given up; ``(ready, still)``."""
    found = wait_for_locked(
        waiting,
        functools.partial(slide_lock, config),
        is_done=is_done,
        poll_s=config.poll_s,
        deadline=deadline,
    )
    for job in found.done:
        report.add(
            ItemResult(
                job.slide_id, "skipped", reason="done by another job", output=str(job.output)
            )
        )
    if not found.expired:
        return found.ready, found.waiting
    for job in found.waiting:
        report.add(
            ItemResult(
                job.slide_id,
                "locked",
                reason=f"another job still held its lock after --max_wait_s "
                f"{config.max_wait_s:g} s",
            )
        )
    return [], []


def run_extraction(config: ExtractConfig, encoder: EncoderModule | None = None) -> RunReport:
    """Extract features for every slide of ``config.coords_dir`` (this shard, this rank).

    Slides that another live job holds are waited for after this run's own slides
    (``wait_locked``, up to ``max_wait_s``): each ends ``skipped`` when the other job
    finished it, or is extracted here when its holder died (its lock is taken over).
    Under DDP (several ranks) locked slides are reported as ``locked`` without waiting.

    Args:
        config: Run settings.
        encoder: A pre-built encoder (benchmarks, tests); default builds
            ``config.encoder`` from the registry.

    Returns:
        The run report (also written to ``<out>/features/<encoder>/report*.json``).

    Raises:
        ConfigError: Bad settings, µm/px mismatch, or an output folder that cannot be
            written (checked before any work).
        WorkerFailedError: DataLoader workers died or stalled (e.g. a full /dev/shm);
            the run stops cleanly after writing its report.
        WeightsUnavailableError: The encoder's weights cannot be loaded.
        BatchAbortedError: A slide failed and ``skip_errors`` is off.
    """
    from wsi_ncmi.batch.preflight import check_writable_dir, check_writable_dirs
    from wsi_ncmi.features.encoders.registry import build_encoder
    from wsi_ncmi.features.resume import CacheJudge

    config.check_environment()
    # Before any work: every folder this run writes to must take files.
    out_dir = feature_path(config.out_dir, config.encoder, "x").parent
    check_writable_dirs([config.out_dir, out_dir, config.out_dir / "reports"])
    if encoder is None:
        encoder = build_encoder(
            config.encoder,
            weights=config.weights,
            random_init=config.random_init,
            weights_hash_cache=weights_hash_cache(config),
        )
    spec = encoder.spec
    accelerator, precision, batch_size, workers = resolve_runtime(config, spec)
    report = RunReport("extract", params={**config.to_dict(), "encoder_spec": spec.to_dict()})
    jobs = load_jobs(config, spec, report)
    if config.gpu_decode:
        jobs = with_gpu_decode(jobs, accelerator)
    if spec.name != config.encoder:
        out_dir = check_writable_dir(feature_path(config.out_dir, spec.name, "x").parent)
    remove_stale_temp_files(out_dir.parent)  # every encoder's folder and the weights memo

    def attrs_for(job: SlideJob) -> JSONObject:
        return job_attrs(job, spec, config, precision)

    judge = CacheJudge(frozenset(config.redo), config.force, started=report.started)

    def problem(job: SlideJob) -> str:
        return judge.problem(
            job.slide_id,
            job.output,
            extraction_hash=extraction_hash(spec, config.dtype, job.coords_hash, job.reader),
            coords=job.coords,
            coords_sha256=job.coords_sha256,
            slide_fingerprint=str(job.slide_identity.get("slide_fingerprint", "")),
        )

    def is_done(job: SlideJob) -> bool:
        return not problem(job)

    # Why each existing file is redone (reported as "redone: …" with the slide's result).
    redo_reasons = {j.slide_id: why for j in jobs if j.output.exists() and (why := problem(j))}
    to_write = [j for j in jobs if not j.output.exists() or j.slide_id in redo_reasons]
    _check_room(out_dir, to_write, spec.out_dim, config.dtype)  # an already full disk

    for job in (j for j in jobs if len(j) == 0):
        if not is_done(job):
            write_empty(job, attrs_for(job), spec.out_dim, config.dtype)
        report.add(
            ItemResult(job.slide_id, "no_tissue", reason="no patches", output=str(job.output))
        )

    runtime: dict[str, Any] = {
        "accelerator": accelerator,
        "precision": precision,
        "batch_size": batch_size,
        "workers": workers,
        "world_size": 1,
        "seconds": 0.0,
        "patches_extracted": 0,
        "rounds": 0,
    }
    setup = RoundSetup(
        config, encoder, attrs_for, is_done, batch_size, workers, accelerator, precision
    )
    deadline = None if config.max_wait_s is None else time.monotonic() + config.max_wait_s
    pending = [j for j in jobs if len(j) > 0]
    waiting: list[SlideJob] = []
    rank = 0
    current: ExtractionRound | None = None  # the open round: reported even if it raises
    try:
        while pending or waiting:
            if pending:
                current = ExtractionRound(pending, setup)
                outcome = current.run()
                rank = outcome.rank
                wait_here = config.wait_locked and config.lock and outcome.world_size == 1
                by_id = {j.slide_id: j for j in pending}
                results, current, pending = _close_round(current, runtime), None, []
                for result in results:
                    if result.status == "ok" and result.item_id in redo_reasons:
                        result.reason = f"redone: {redo_reasons[result.item_id]}"
                    if result.status == "locked" and wait_here:
                        waiting.append(by_id[result.item_id])
                    else:
                        report.add(result)
            if waiting:
                pending, waiting = _wait(waiting, config, is_done, report, deadline)
    except WorkerFailedError as err:  # a clean stop: this round's open slides fail
        open_results = current.outcome.results if current is not None else []
        seen = {r.item_id for r in [*report.results, *open_results]}
        open_results.extend(
            ItemResult(j.slide_id, "failed", reason=str(err), error_type=type(err).__name__)
            for j in pending
            if j.slide_id not in seen
        )
        raise
    finally:
        if current is not None:
            for result in _close_round(current, runtime):
                report.add(result)
        runtime["patches_per_s"] = runtime["patches_extracted"] / max(runtime["seconds"], 1e-9)
        report.params["runtime"] = runtime
        suffix = f"-rank{rank}" if runtime["world_size"] > 1 else ""
        # One report per run under <out>/reports (never overwritten), and the latest
        # run's copy beside the features.
        unique = unique_report_path(config.out_dir, "wsi-extract")
        report.params["report_path"] = str(unique.with_name(f"{unique.stem}{suffix}.json"))
        report.write_json(report.params["report_path"])
        report.write_json(out_dir / f"report{suffix}.json")
    if report.failed and not config.skip_errors:
        first = report.failed[0]
        raise BatchAbortedError(
            f"{first.item_id} failed ({first.error_type}: {first.reason}); "
            "stopping because --skip_errors is off (finished slides are kept)"
        )
    return report


__all__ = [
    "ExtractConfig",
    "check_mpp",
    "extraction_hash",
    "load_jobs",
    "run_extraction",
    "weights_hash_cache",
]
