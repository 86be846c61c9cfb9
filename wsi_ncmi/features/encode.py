"""Extraction on Lightning: ``Trainer.predict`` with a data module and a writer callback.

The same code runs on the CPU, one GPU, several GPUs (DDP) and several nodes: the data
module gives each rank whole slides (balanced by patch count) and the writer callback
of each rank writes its slides, each atomically. Autocast, device placement and the
distributed setup are the Trainer's job.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from tqdm import tqdm

from wsi_ncmi.batch import BatchAbortedError, ItemResult, atomic_output
from wsi_ncmi.errors import WsiNcmiError
from wsi_ncmi.features.datamodule import ExtractDataModule
from wsi_ncmi.features.encoders.registry import EncoderModule
from wsi_ncmi.features.read import PatchBatch, SlideJob
from wsi_ncmi.features.store import FeatureFileWriter
from wsi_ncmi.vml_warmup import warm_vector_math


class FeatureRows(TypedDict):
    """What :meth:`ExtractionModule.predict_step` gives the writer for one batch."""

    features: torch.Tensor  #: ``(B, D)`` float32, on the CPU.
    valid: torch.Tensor  #: ``(B,)`` bool: the patch was read (and decoded).
    job: int  #: Index of the slide's job.
    start: int  #: First row of the batch in the slide's coords.
    error: str  #: The slide's error, if it could not be read.


class ExtractionModule(L.LightningModule):
    """Runs a frozen encoder over uint8 patch batches.

    Args:
        encoder: The encoder (preprocessing included; normalisation runs on the device).
        compile_model: Wrap the encoder with ``torch.compile``.
    """

    def __init__(self, encoder: EncoderModule, compile_model: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder"])
        self.encoder = encoder
        self.compile_model = compile_model

    def setup(self, stage: str) -> None:
        """Warm up oneMKL's vector math (:mod:`wsi_ncmi.vml_warmup`) before the first batch."""
        warm_vector_math()

    def configure_model(self) -> None:
        """Compile the encoder once it is on its device (if asked)."""
        if self.compile_model and not isinstance(self.encoder, torch._dynamo.OptimizedModule):
            self.encoder = torch.compile(self.encoder)  # type: ignore[assignment]

    def predict_step(self, batch: PatchBatch, batch_idx: int) -> FeatureRows:
        """Features ``(B, D)`` float32 on the CPU, plus the batch's bookkeeping.

        A batch of JPEG tiles (``--gpu_decode``) is decoded and assembled on the device
        first (:func:`~wsi_ncmi.features.gpu_decode.assemble_on_device`).
        """
        images, valid = batch["images"], batch["valid"].cpu()
        if "jpegs" in batch:
            from wsi_ncmi.features.gpu_decode import TileBatch, assemble_on_device

            tiles = TileBatch(batch["jpegs"], batch["placements"], int(batch["read_size"]))
            images, decoded = assemble_on_device(
                tiles, len(valid), int(batch["patch_size"]), self.device
            )
            valid = valid & decoded
        features = self.encoder(images)
        return {
            "features": features.float().cpu(),
            "valid": valid,
            "job": int(batch["job"]),
            "start": int(batch["start"]),
            "error": batch["error"],
        }


@dataclass
class _OpenSlide:
    job: SlideJob
    stack: contextlib.ExitStack
    writer: FeatureFileWriter
    started: float
    rows_seen: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class _SlideFailedError(WsiNcmiError):
    """Internal: aborts one slide's atomic output."""


class FeatureWriter(BasePredictionWriter):
    """Writes each rank's slides, batch by batch, each into its own atomic file.

    Args:
        attrs_for: Attributes of a job's features file.
        out_dim: Feature dimension.
        dtype: Stored dtype (``float16``/``float32``).
        max_bad_fraction: A slide with a larger fraction of undecodable tiles fails.
        progress: Show a progress bar in patches/s.
        stop_on_failure: Raise :class:`~wsi_ncmi.batch.BatchAbortedError` as soon as a
            slide fails (the Trainer stops; unfinished temp files are removed).
    """

    def __init__(
        self,
        attrs_for: Callable[[SlideJob], Mapping[str, Any]],
        out_dim: int,
        dtype: str,
        max_bad_fraction: float,
        progress: bool = True,
        stop_on_failure: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        self.stop_on_failure = stop_on_failure
        self.attrs_for = attrs_for
        self.out_dim = out_dim
        self.dtype = dtype
        self.max_bad_fraction = max_bad_fraction
        self.progress = progress
        self.results: list[ItemResult] = []
        self._open: dict[int, _OpenSlide] = {}
        self._failed: set[int] = set()
        self._mark = time.perf_counter()
        self._bar: tqdm[Any] | None = None

    def _datamodule(self, trainer: L.Trainer) -> ExtractDataModule:
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, ExtractDataModule):
            raise TypeError("FeatureWriter needs the ExtractDataModule")
        return dm

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock and the patches/s bar."""
        self._mark = time.perf_counter()
        total = sum(len(j) for j in self._datamodule(trainer).jobs)
        self._bar = tqdm(
            total=total, unit="patch", desc=f"extract[rank {trainer.global_rank}]",
            disable=not self.progress or None, dynamic_ncols=True,
        )  # fmt: skip

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Append one batch's rows to its slide's file; finish the slide when full."""
        dm = self._datamodule(trainer)
        index = int(prediction["job"])
        if index in self._failed:  # its file could not even be created: drop its rows
            return
        state = self._open.get(index)
        if state is None:
            try:
                state = self._begin(dm.jobs[index], index)
            except WsiNcmiError as err:  # e.g. a full disk while creating the file
                self._fail_unopened(dm, index, err)
                return
        features: np.ndarray = prediction["features"].numpy()
        valid: np.ndarray = prediction["valid"].numpy().astype(bool)
        if prediction["error"] and not state.error:
            state.error = str(prediction["error"])
        try:
            state.writer.write_rows(int(prediction["start"]), features, valid)
        except WsiNcmiError as err:  # overflow in float16, bad rows: the slide fails
            state.error = state.error or f"{type(err).__name__}: {err}"
        state.rows_seen += len(features)
        if self._bar is not None:
            self._bar.update(len(features))
            self._bar.set_postfix_str(state.job.slide_id, refresh=False)
        if state.rows_seen >= len(state.job):
            self._finish(index, dm)

    def _fail_unopened(self, dm: ExtractDataModule, index: int, err: WsiNcmiError) -> None:
        job = dm.jobs[index]
        self._failed.add(index)
        self.results.append(
            ItemResult(job.slide_id, "failed", reason=str(err), error_type=type(err).__name__)
        )
        dm.release(job.slide_id)
        if self.stop_on_failure:
            raise BatchAbortedError(
                f"{job.slide_id} failed ({type(err).__name__}: {err}); stopping because "
                "--skip_errors is off (finished slides are kept)"
            )

    def _begin(self, job: SlideJob, index: int) -> _OpenSlide:
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_output(job.output))
        try:
            writer = FeatureFileWriter(
                tmp, job.coords, self.out_dim, self.dtype, self.attrs_for(job)
            )
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)  # removes the temp file
            raise
        # On failure, abort (empty, then close) rather than close: a full disk leaves HDF5
        # unable to flush, and the temp file's space must be freed before it is removed.
        stack.push(lambda exc_type, exc, tb: writer.abort() if exc_type else writer.close())
        state = _OpenSlide(job, stack, writer, started=self._mark)
        self._open[index] = state
        return state

    def _finish(self, index: int, dm: ExtractDataModule) -> None:
        state = self._open.pop(index)
        job, n = state.job, len(state.job)
        n_bad = state.writer.n_invalid
        error = state.error
        if not error and n_bad > self.max_bad_fraction * n:
            error = (
                f"CorruptTileError: {n_bad} of {n} tiles failed to decode "
                f"(more than --max_bad_fraction {self.max_bad_fraction}); re-export the slide"
            )
        try:
            if error:
                raise _SlideFailedError(error)
            state.writer.finish()
            state.stack.close()  # atomic rename
        except WsiNcmiError as err:
            state.stack.__exit__(type(err), err, err.__traceback__)  # removes the temp file
            etype, _, reason = str(err).partition(": ")
            failed = isinstance(err, _SlideFailedError)
            self.results.append(
                ItemResult(
                    job.slide_id,
                    "failed",
                    reason=reason if failed else str(err),
                    error_type=etype if failed else type(err).__name__,
                    count=n,
                    seconds=time.perf_counter() - state.started,
                )
            )
        else:
            seconds = time.perf_counter() - state.started
            self.results.append(
                ItemResult(
                    job.slide_id,
                    "ok",
                    count=n,
                    seconds=seconds,
                    output=str(job.output),
                    extra={"bad_tiles": n_bad, "patches_per_s": n / max(seconds, 1e-9)},
                )
            )
        finally:
            dm.release(job.slide_id)
            self._mark = time.perf_counter()
        last = self.results[-1]
        if last.status == "failed" and self.stop_on_failure:
            raise BatchAbortedError(
                f"{last.item_id} failed ({last.error_type}: {last.reason}); stopping because "
                "--skip_errors is off (finished slides are kept)"
            )

    def _abort_all(self, reason: str) -> None:
        for index in list(self._open):
            state = self._open.pop(index)
            err = _SlideFailedError(reason)
            state.stack.__exit__(type(err), err, None)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Remove the temp files of unfinished slides; release locks."""
        self._abort_all(f"run interrupted: {type(exception).__name__}")
        self._close_bar()
        with contextlib.suppress(TypeError):
            self._datamodule(trainer).teardown("predict")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Fail slides that never received all rows (should not happen)."""
        dm = self._datamodule(trainer)
        for index in list(self._open):
            state = self._open[index]
            self.results.append(
                ItemResult(state.job.slide_id, "failed", reason="incomplete: rows missing")
            )
            dm.release(state.job.slide_id)
        self._abort_all("incomplete")
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
