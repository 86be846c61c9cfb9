"""Extraction rounds: one ``Trainer.predict`` over the slides this job can claim.

Used by :func:`wsi_ncmi.features.run.run_extraction`: a round extracts the pending slides;
between rounds the run waits (:func:`wsi_ncmi.batch.locks.wait_for_locked`) for slides
that other jobs hold.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsi_ncmi.batch import ItemLock, ItemResult
from wsi_ncmi.batch.locks import lock_dir
from wsi_ncmi.features.encoders.registry import EncoderModule
from wsi_ncmi.features.read import SlideJob
from wsi_ncmi.quiet import drop_lightning_tips, lightning_loop

if TYPE_CHECKING:
    from wsi_ncmi.features.config import ExtractConfig


def slide_lock(config: ExtractConfig, job: SlideJob) -> ItemLock:
    """The (not yet acquired) lock of one slide of this run."""
    from wsi_ncmi.features.datamodule import lock_path

    return ItemLock(lock_path(lock_dir(config.out_dir), job))


@dataclass(frozen=True)
class RoundSetup:
    """What every round of one extraction run shares.

    Attributes:
        config: The run settings.
        encoder: The encoder.
        attrs_for: HDF5 attributes of a slide's features file.
        is_done: Whether a slide's complete output exists.
        batch_size: Patches per batch.
        workers: DataLoader workers.
        accelerator: Lightning accelerator (``cpu``, ``cuda``).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ...).
    """

    config: ExtractConfig
    encoder: EncoderModule
    attrs_for: Callable[[SlideJob], dict[str, Any]]
    is_done: Callable[[SlideJob], bool]
    batch_size: int
    workers: int
    accelerator: str
    precision: str


@dataclass
class RoundOutcome:
    """What one round did; filled in as it runs, so a round that raises still tells.

    Attributes:
        results: One result per slide the round reached (``ok``, ``failed``, ``locked``,
            ``skipped``).
        seconds: Wall time of the round.
        patches: Patches extracted into ``ok`` slides.
        world_size: Processes of the round (DDP ranks).
        rank: This process's rank.
    """

    results: list[ItemResult] = field(default_factory=list)
    seconds: float = 0.0
    patches: int = 0
    world_size: int = 1
    rank: int = 0


class ExtractionRound:
    """One ``Trainer.predict`` over ``jobs``; :attr:`outcome` holds what it did.

    Args:
        jobs: The pending slides.
        setup: What the run's rounds share.
    """

    def __init__(self, jobs: list[SlideJob], setup: RoundSetup) -> None:
        self.jobs = jobs
        self.setup = setup
        self.outcome = RoundOutcome()

    def run(self) -> RoundOutcome:
        """Extract the slides; :attr:`outcome` is complete also when this raises.

        Returns:
            :attr:`outcome`.

        Raises:
            WorkerFailedError: DataLoader workers died or stalled.
        """
        import lightning as L

        from wsi_ncmi.features.datamodule import ExtractDataModule
        from wsi_ncmi.features.encode import ExtractionModule, FeatureWriter
        from wsi_ncmi.features.loader import worker_failure

        setup, outcome = self.setup, self.outcome
        config, spec = setup.config, setup.encoder.spec
        writer = FeatureWriter(
            setup.attrs_for,
            spec.out_dim,
            config.dtype,
            config.max_bad_fraction,
            progress=config.progress,
            stop_on_failure=not config.skip_errors,
        )
        datamodule = ExtractDataModule(
            self.jobs,
            batch_size=setup.batch_size,
            workers=setup.workers,
            is_done=setup.is_done,
            lock_dir=lock_dir(config.out_dir) if config.lock else None,
            pin_memory=setup.accelerator == "cuda",
            strip_reads=config.strip_reads,
            loader_timeout_s=config.loader_timeout_s,
        )
        drop_lightning_tips()
        trainer = L.Trainer(
            accelerator=setup.accelerator,
            devices=config.devices if config.devices == "auto" else int(config.devices),
            num_nodes=config.num_nodes,
            precision=setup.precision,  # type: ignore[arg-type]
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
            with lightning_loop():
                # Batches are whole-slide regions, not sampler indices; empty shards are fine.
                warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
                warnings.filterwarnings("ignore", message=".*length of `DataLoader` across ranks.*")
                trainer.predict(
                    ExtractionModule(setup.encoder, compile_model=config.compile_model),
                    datamodule=datamodule,
                    return_predictions=False,
                )
        except BaseException as err:
            failure = worker_failure(err, config.loader_timeout_s)
            if failure is None or failure is err:
                raise
            raise failure from err
        finally:
            outcome.seconds = time.perf_counter() - started
            outcome.patches = sum(r.count for r in writer.results if r.status == "ok")
            outcome.world_size, outcome.rank = trainer.world_size, trainer.global_rank
            outcome.results = [*datamodule.pre_results, *writer.results]
        return outcome


__all__ = ["ExtractionRound", "RoundOutcome", "RoundSetup", "slide_lock"]
