"""Extraction rounds: one ``Trainer.predict`` over pending slides, and the lock waits.

Used by :func:`wsi_ncmi.features.run.run_extraction`: a round extracts the slides this job
can claim; between rounds it waits for slides that other jobs hold.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

from wsi_ncmi.batch import ItemLock, ItemResult, RunReport
from wsi_ncmi.features.dataset import SlideJob
from wsi_ncmi.features.encoders.registry import EncoderModule

if TYPE_CHECKING:
    from wsi_ncmi.features.run import ExtractConfig


def _lock_of(config: ExtractConfig, job: SlideJob) -> ItemLock:
    from wsi_ncmi.features.datamodule import lock_path

    return ItemLock(lock_path(str(config.out_dir / "locks"), job))


def wait_for_locked(
    waiting: list[SlideJob],
    config: ExtractConfig,
    is_done: Any,
    report: RunReport,
    deadline: float | None,
) -> tuple[list[SlideJob], list[SlideJob]]:
    """Poll slides held by other jobs until some can be taken or all are done.

    Returns ``(ready, still_waiting)``: ``ready`` slides have no live lock any more
    (released without a complete output, or their holder died: the stale lock is
    removed) and go to the next round; finished ones are reported ``skipped``. At the
    deadline the rest are reported ``locked`` and ``([], [])`` is returned.
    """
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            for job in waiting:
                report.add(
                    ItemResult(
                        job.slide_id,
                        "locked",
                        reason=f"another job still held its lock after --max_wait_s "
                        f"{config.max_wait_s:g} s",
                    )
                )
            return [], []
        time.sleep(config.poll_s)
        ready: list[SlideJob] = []
        still: list[SlideJob] = []
        for job in waiting:
            if is_done(job):
                report.add(
                    ItemResult(
                        job.slide_id, "skipped", reason="done by another job",
                        output=str(job.output),
                    )
                )  # fmt: skip
                continue
            lock = _lock_of(config, job)
            lock.break_if_stale()  # holder died: its lock goes, the slide is ours to do
            (still if lock.path.exists() else ready).append(job)
        if ready or not still:
            return ready, still
        waiting = still


def predict_round(
    jobs: list[SlideJob],
    config: ExtractConfig,
    encoder: EncoderModule,
    attrs_for: Any,
    is_done: Any,
    runtime: dict[str, Any],
    batch_size: int,
    workers: int,
    accelerator: str,
    precision: str,
    results: list[ItemResult],
) -> tuple[int, int]:
    """One ``Trainer.predict`` over ``jobs``; returns (world size, rank).

    The slides' results are appended to ``results``, also when the round raises.
    """
    import lightning as L

    from wsi_ncmi.features.datamodule import ExtractDataModule
    from wsi_ncmi.features.engine import ExtractionModule, FeatureWriter
    from wsi_ncmi.features.loading import worker_failure

    spec = encoder.spec
    writer = FeatureWriter(
        attrs_for,
        spec.out_dim,
        config.dtype,
        config.max_bad_fraction,
        progress=config.progress,
        stop_on_failure=not config.skip_errors,
    )
    datamodule = ExtractDataModule(
        jobs,
        batch_size=batch_size,
        workers=workers,
        is_done=is_done,
        lock_dir=str(config.out_dir / "locks") if config.lock else None,
        pin_memory=accelerator == "cuda",
        strip_reads=config.strip_reads,
        loader_timeout_s=config.loader_timeout_s,
    )
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=config.devices if config.devices == "auto" else int(config.devices),
        num_nodes=config.num_nodes,
        precision=precision,  # type: ignore[arg-type]
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        inference_mode=True,
        callbacks=[writer],
    )
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Batches are whole-slide regions, not sampler indices; empty shards are fine.
            warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
            warnings.filterwarnings("ignore", message=".*length of `DataLoader` across ranks.*")
            trainer.predict(
                ExtractionModule(encoder, compile_model=config.compile_model),
                datamodule=datamodule,
                return_predictions=False,
            )
    except BaseException as err:
        failure = worker_failure(err, config.loader_timeout_s)
        if failure is None or failure is err:
            raise
        raise failure from err
    finally:
        runtime["seconds"] += time.perf_counter() - started
        runtime["patches_extracted"] += sum(r.count for r in writer.results if r.status == "ok")
        runtime["world_size"] = trainer.world_size
        runtime["rounds"] += 1
        results.extend([*datamodule.pre_results, *writer.results])
    return trainer.world_size, trainer.global_rank


__all__ = ["predict_round", "wait_for_locked"]
