"""Run one cell of the sweep and write its result, atomically and last.

Cell folder ``<bench>/cells/<cell_id>/``::

    run/            wsi-train's fold outputs (checkpoints, logs, curves.png, heatmaps/, ...)
    predictions.csv test predictions of the fold (slide, hospital, true, predicted, probs)
    result.json     the completion marker: identity, config hash, the validation metrics
                    of the selected epoch and the test metrics per hospital

``result.json`` is written after everything else with an atomic rename, so a cell with a
``result.json`` is complete and is never recomputed; a cell killed before it resumes
training from ``run/checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wsi_ncmi.bench.cell_result import CellResult, EpochValidation
from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.plan import CELL_SCHEMA, Cell, cell_hash, train_config_for

RESULT_NAME = "result.json"
PREDICTIONS_NAME = "predictions.csv"
#: Validation values kept from the selected epoch (logged as ``val/<key>``).
VAL_KEYS = (
    "macro_f1",
    "macro_f1_calibrated",
    "prior_scale",
    "accuracy",
    "balanced_accuracy",
    "loss",
    "cmi",
    "gamma",
    "ncmi",
)


def cell_dir(config: BenchConfig, cell: Cell) -> Path:
    """``<bench>/cells/<cell_id>``."""
    return config.out_dir / "cells" / cell.cell_id


def read_result(config: BenchConfig, cell: Cell) -> CellResult | None:
    """The cell's ``result.json``, or ``None`` if the cell has not finished.

    A file of another schema, or one that does not parse as a cell result, reads as
    ``None`` too (the cell is then trained again).
    """
    path = cell_dir(config, cell) / RESULT_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != CELL_SCHEMA:
        return None
    try:
        return CellResult.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def expected_hash(config: BenchConfig, cell: Cell) -> str:
    """The config hash a finished result of this cell must carry."""
    return cell_hash(train_config_for(config, cell, cell_dir(config, cell) / "run"), cell)


def _best_epoch(best_checkpoint: str | None, history: list[dict[str, float]]) -> int | None:
    if best_checkpoint:
        match = re.search(r"epoch=(\d+)", Path(best_checkpoint).name)
        if match:
            return int(match.group(1))
    return int(history[-1]["epoch"]) if history else None


def quiet_lightning() -> None:
    """Silence Lightning's info banners (the bench prints its own progress); warnings still pass.

    Lightning sets its loggers to INFO when it is first imported, so it is imported here
    first: set before that import, the levels would be undone by it.
    """
    import lightning.pytorch  # noqa: F401

    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)


def run_cell(config: BenchConfig, cell: Cell) -> CellResult:
    """Train, select on validation, test, and write the cell's result.

    The checkpoint is selected by ``train.trainer.monitor`` (validation macro-F1 by
    default): test slides never influence any choice.

    Args:
        config: The bench configuration.
        cell: The cell.

    Returns:
        The result (also in ``result.json``).
    """
    from wsi_ncmi.train.fit import run_fold
    from wsi_ncmi.train.report import write_json, write_predictions

    quiet_lightning()
    started = time.perf_counter()
    directory = cell_dir(config, cell)
    train_config = train_config_for(config, cell, directory / "run")
    digest = cell_hash(train_config, cell)
    fold = run_fold(train_config, cell.fold_index, Path(cell.splits_file), directory / "run")
    write_predictions(fold.records, directory / PREDICTIONS_NAME)
    history = fold.history
    best_epoch = _best_epoch(fold.best_checkpoint, history)
    selected = next((h for h in history if int(h["epoch"]) == best_epoch), {})
    result = CellResult(
        schema=CELL_SCHEMA,
        cell_id=cell.cell_id,
        loss=cell.loss.label,
        loss_name=cell.loss.name,
        model=cell.model.label,
        model_name=cell.model.name,
        seed=cell.seed,
        fold=cell.fold_name,
        fold_index=cell.fold_index,
        test_centers=list(cell.test_centers),
        config_hash=digest,
        monitor=train_config.trainer.monitor,
        best_score=fold.best_score,
        best_epoch=best_epoch,
        epochs_trained=fold.epochs_trained,
        val={key: selected[f"val/{key}"] for key in VAL_KEYS if f"val/{key}" in selected},
        history=[
            EpochValidation(
                int(h["epoch"]), {key: h[f"val/{key}"] for key in VAL_KEYS if f"val/{key}" in h}
            )
            for h in history
        ],
        test=fold.metrics,
        decision_rule=fold.decision_rule,
        test_by_decision=fold.by_decision,
        attention=fold.attention,
        probe=fold.probe,
        excluded=fold.excluded,
        seconds=time.perf_counter() - started,
        host=platform.node(),
        pid=os.getpid(),
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_json(result.to_json(), directory / RESULT_NAME)
    return result


@dataclass(frozen=True)
class CellOutcome:
    """What one :func:`run_cell_job` call came to.

    Attributes:
        cell_id: The cell.
        status: ``trained`` (this job trained it), ``finished_elsewhere`` (another job
            finished it while this one waited for it), ``claimed`` (another live job holds
            it now) or ``failed``.
        result: The cell's result (``trained``, ``finished_elsewhere``).
        error: ``"<ErrorType>: <message>"`` (``failed``).
    """

    cell_id: str
    status: Literal["trained", "finished_elsewhere", "claimed", "failed"]
    result: CellResult | None = None
    error: str | None = None


def cell_lock_path(config: BenchConfig, cell: Cell) -> Path:
    """``<bench>/locks/<cell_id>.lock``: held while the cell trains."""
    from wsi_ncmi.batch.locks import lock_dir, lock_file

    return lock_file(lock_dir(config.out_dir), cell.cell_id)


def run_cell_job(args: tuple[BenchConfig, Cell, int | None]) -> CellOutcome:
    """Process-pool entry: train one cell unless another job holds or finished it.

    The cell is claimed with the stages' lock protocol (:class:`wsi_ncmi.batch.ItemLock`)
    before it trains, so several ``wsi-bench`` jobs (SLURM array tasks, ``--shard i/N``)
    can share one sweep: a cell held by a live job is left to it, and a cell another job
    finished meanwhile is not trained again.
    """
    config, cell, threads = args
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from wsi_ncmi.batch.locks import take_lock
    from wsi_ncmi.errors import WsiNcmiError

    lock = take_lock(cell_lock_path(config, cell))
    if lock is None:
        return CellOutcome(cell.cell_id, "claimed")
    try:
        finished = read_result(config, cell)
        if finished is not None and finished.config_hash == expected_hash(config, cell):
            return CellOutcome(cell.cell_id, "finished_elsewhere", result=finished)
        return CellOutcome(cell.cell_id, "trained", result=run_cell(config, cell))
    except (WsiNcmiError, RuntimeError, ValueError, OSError) as err:
        return CellOutcome(cell.cell_id, "failed", error=f"{type(err).__name__}: {err}")
    finally:
        lock.release()
