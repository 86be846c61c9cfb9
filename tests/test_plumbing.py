"""Shared plumbing: lock names and folders, the one lock-wait loop, atomic synth outputs,
NaN features, the optimiser helper and the frozen training results."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _results import metrics_report

from wsi_ncmi.batch import BatchAbortedError as BatchAbortedFromBatch
from wsi_ncmi.batch import find_temp_files
from wsi_ncmi.batch.locks import (
    ItemLock,
    lock_dir,
    lock_file,
    sweep_legacy_locks,
    wait_for_locked,
)
from wsi_ncmi.errors import CacheSchemaError, ConfigError, NonFiniteError, WsiNcmiError
from wsi_ncmi.features.store import FeatureFileWriter
from wsi_ncmi.losses.decision import PriorRule
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.optim import check_choice, configure_optimization
from wsi_ncmi.synth import generate_cohort, get_preset
from wsi_ncmi.synth.generate import generate_slide, slide_paths
from wsi_ncmi.train.attention_summary import AttentionSummary, SlideTumourAttention
from wsi_ncmi.train.probe import ProbeResult
from wsi_ncmi.train.results import FoldResult

ROW = ManifestRow("patient_000_node_0", "patient_000", 0, "negative")


# -- locks -----------------------------------------------------------------------------
def test_lock_names_are_safe_short_and_distinct(tmp_path: Path) -> None:
    assert lock_dir(tmp_path) == tmp_path / "locks"
    assert lock_file(tmp_path, "slide_1.a-b") == tmp_path / "slide_1.a-b.lock"
    odd = [lock_file(tmp_path, key).name for key in ("a/b", "a:b", "a_b", "a b")]
    assert len(set(odd)) == 4  # replaced characters do not merge ids
    assert all("/" not in name and ":" not in name for name in odd)
    long = lock_file(tmp_path, "x" * 400).name
    assert len(long.encode()) <= 255 - 32


def _foreign_lock(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "token": "t"}))


def test_wait_sorts_items_into_done_ready_and_expired(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _foreign_lock(lock_file(tmp_path, "done"), os.getpid())
    _foreign_lock(lock_file(tmp_path, "dead"), dead.pid)
    _foreign_lock(lock_file(tmp_path, "held"), os.getpid())
    found = wait_for_locked(
        ["done", "dead", "held"],
        lambda key: ItemLock(lock_file(tmp_path, key)),
        is_done=lambda key: key == "done",
        poll_s=0.01,
        deadline=None,
    )
    assert (found.done, found.ready, found.waiting, found.expired) == (
        ["done"], ["dead"], ["held"], False
    )  # fmt: skip
    started = time.monotonic()
    late = wait_for_locked(
        ["held"],
        lambda key: ItemLock(lock_file(tmp_path, key)),
        is_done=None,
        poll_s=0.01,
        deadline=time.monotonic() + 0.1,
    )
    assert late.expired
    assert late.waiting == ["held"]
    assert not late.ready
    assert time.monotonic() - started < 5


def test_legacy_lock_folder_is_swept_of_stale_locks_only(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    legacy = tmp_path / ".locks"
    _foreign_lock(legacy / "a.lock", dead.pid)
    assert sweep_legacy_locks(tmp_path) == 1
    assert not legacy.exists()
    _foreign_lock(legacy / "b.lock", os.getpid())  # a live holder of an older version
    assert sweep_legacy_locks(tmp_path) == 0
    assert (legacy / "b.lock").is_file()


# -- atomic synth outputs --------------------------------------------------------------
def test_synth_slide_writer_that_raises_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsi_ncmi.synth.generate as generate

    def broken(path: Path, *args: object, **kwargs: object) -> list[tuple[int, int]]:
        Path(path).write_bytes(b"II*\x00 half a pyramid")
        raise OSError("disk on fire")

    monkeypatch.setattr(generate, "write_pyramid", broken)
    with pytest.raises(OSError, match="disk on fire"):
        generate_slide(ROW, get_preset("demo"), 0, tmp_path)
    assert not any(p.is_file() for p in slide_paths(tmp_path, ROW))
    assert not find_temp_files(tmp_path)


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
import wsi_ncmi.synth.generate as generate
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.synth import get_preset

def killed(path, *args, **kwargs):
    Path(path).write_bytes(b"II*\\x00 half a pyramid")
    os.kill(os.getpid(), signal.SIGKILL)

generate.write_pyramid = killed
row = ManifestRow("patient_000_node_0", "patient_000", 0, "negative")
generate.generate_slide(row, get_preset("demo"), 0, Path(sys.argv[1]))
"""


def test_killed_synth_writer_leaves_only_a_temp_file_that_the_next_run_removes(
    tmp_path: Path,
) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], check=False)
    assert proc.returncode == -9
    tif, mask, truth = slide_paths(tmp_path, ROW)
    assert not tif.exists()
    assert not mask.exists()
    assert not truth.exists()
    assert [p.name.split(".tmp-")[0] for p in find_temp_files(tmp_path)] == [f".{tif.name}"]
    rows = [ROW]
    generate_cohort(rows, tmp_path, preset="demo", workers=1, progress=False)
    assert not find_temp_files(tmp_path)
    assert tif.is_file()
    assert truth.is_file()


# -- errors ----------------------------------------------------------------------------
def test_nan_features_raise_non_finite_error(tmp_path: Path) -> None:
    coords = np.zeros((3, 2), np.int64)
    writer = FeatureFileWriter(tmp_path / "s.h5", coords, 4, "float16", {"slide_id": "s"})
    features = np.ones((3, 4), np.float32)
    features[1, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"non-finite features \(NaN/inf\) in rows 0:3"):
        writer.write_rows(0, features, np.ones(3, bool))
    overflow = np.full((3, 4), 1e6, np.float32)  # inf in float16
    with pytest.raises(CacheSchemaError), np.errstate(over="ignore"):  # caught as before
        writer.write_rows(0, overflow, np.ones(3, bool))
    writer.abort()
    assert not (tmp_path / "s.h5").exists()


def test_a_stopped_batch_raises_the_public_error_naming_the_slide(tmp_path: Path) -> None:
    """Library callers catch ``wsi_ncmi.BatchAbortedError`` (a ``WsiNcmiError``, exit 1)
    when a batch without ``skip_errors`` stops at a slide; it names the slide and why."""
    import wsi_ncmi
    from wsi_ncmi.batch import ItemResult, RunReport, run_batch
    from wsi_ncmi.cli.common import EXIT_FAILED, exit_code

    def job(item: str) -> ItemResult:
        if item == "s2":
            raise ConfigError("s2 has no um/px")
        return ItemResult(item_id=item, status="ok")

    with pytest.raises(wsi_ncmi.BatchAbortedError) as info:
        run_batch(
            ["s1", "s2", "s3"], job, item_ids=["s1", "s2", "s3"], report=RunReport("test"),
            lock_dir=tmp_path / "locks", skip_errors=False, progress=False,
        )  # fmt: skip
    assert info.type is BatchAbortedFromBatch
    assert isinstance(info.value, WsiNcmiError)
    assert "s2 failed" in str(info.value)
    assert "s2 has no um/px" in str(info.value)
    assert exit_code(info.value) == EXIT_FAILED


# -- optimiser helper and results ------------------------------------------------------
def test_one_optimiser_helper() -> None:
    """The settings reach the optimiser, and the schedule follows warm-up then cosine."""
    with pytest.raises(ConfigError, match="optimizer must be 'sgd' or 'adamw', got 'adam'"):
        check_choice("optimizer", "adam", ("sgd", "adamw"))
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = configure_optimization(params, optimizer="sgd", lr=0.1, weight_decay=0.01, momentum=0.5)
    assert isinstance(sgd, torch.optim.SGD)  # no schedule: the optimiser alone
    assert {k: sgd.param_groups[0][k] for k in ("lr", "weight_decay", "momentum")} == {
        "lr": 0.1, "weight_decay": 0.01, "momentum": 0.5,
    }  # fmt: skip
    cosine: Any = configure_optimization(
        params, optimizer="adamw", lr=0.1, weight_decay=0.0, scheduler="cosine",
        max_epochs=5, warmup_epochs=2,
    )  # fmt: skip
    opt, schedule = cosine["optimizer"], cosine["lr_scheduler"]
    assert isinstance(opt, torch.optim.AdamW)
    assert schedule["interval"] == "epoch"
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule["scheduler"].step()
    # Linear warm-up from 0.1 x lr over 2 epochs, then cosine to 0 over the other 3.
    half = 0.1 * (1 + math.cos(math.pi / 3)) / 2
    low = 0.1 * (1 + math.cos(2 * math.pi / 3)) / 2
    assert lrs == pytest.approx([0.01, 0.055, 0.1, half, low])
    unbounded = configure_optimization(
        params, optimizer="adam", lr=0.1, weight_decay=0.0, scheduler="cosine", max_epochs=-1
    )
    assert isinstance(unbounded, torch.optim.Adam)  # no end to anneal to: constant lr
    assert unbounded.param_groups[0]["lr"] == 0.1


def test_fold_summary_leaves_out_records_and_optionally_the_history() -> None:
    """The fold's ``metrics.json`` keeps its history; the run's leaves it out; neither
    carries the per-slide prediction records (they go to predictions.csv)."""
    records = [{"slide_id": "s1", "pred": 0}]
    attention = AttentionSummary(
        1, 0.6, 0.2, {"macro": 0.6}, {"s1": SlideTumourAttention("macro", 0.6, 0.2)}
    )
    fold = FoldResult(
        "fixed", [3], "best.ckpt", 0.5, 2, ["gone"], [], metrics_report(0.5),
        PriorRule(0.0, (-1.0,), 0.5, 0.5), {}, attention, ProbeResult(4, {"test": 0.4}),
        [{"epoch": 0.0}], records,
    )  # fmt: skip
    full = fold.to_json()
    assert list(full) == [
        "fold", "test_centers", "best_checkpoint", "best_score", "epochs_trained",
        "excluded", "no_tissue_excluded", "metrics", "decision_rule", "by_decision",
        "attention", "probe", "history",
    ]  # fmt: skip
    assert full["history"] == [{"epoch": 0.0}]
    assert full["probe"] == {"train_slides": 4, "macro_f1": {"test": 0.4}}
    assert full["decision_rule"] == {
        "scale": 0.0, "log_prior": [-1.0], "val_macro_f1": 0.5, "val_macro_f1_default": 0.5
    }  # fmt: skip
    summary = {
        "slides_with_ground_truth": 1, "mean_tumour_attention": 0.6,
        "mean_tumour_patch_fraction": 0.2, "tumour_attention_by_class": {"macro": 0.6},
    }  # fmt: skip
    assert full["attention"] == summary
    short = fold.to_json(history=False)
    assert list(short) == list(full)[:-1]
    own = fold.to_json(per_slide=True)  # the fold's own metrics.json: the per-slide table too
    per_slide = {"s1": {"label": "macro", "tumour_attention": 0.6, "tumour_patch_fraction": 0.2}}
    assert own["attention"] == {**summary, "per_slide": per_slide}
    assert fold.records == records  # still on the result, for predictions.csv


def test_lightning_tip_is_dropped_and_its_other_messages_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    import lightning as L

    from wsi_ncmi.quiet import RANK_ZERO_LOGGER, drop_lightning_tips

    log = logging.getLogger(RANK_ZERO_LOGGER)
    installed = list(log.filters)  # an earlier test in this worker may have built a Trainer
    for f in installed:
        log.removeFilter(f)
    try:
        caplog.set_level(logging.INFO, logger=RANK_ZERO_LOGGER)
        L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False)
        assert "💡 Tip" in caplog.text  # what Lightning says without the filter
        caplog.clear()
        drop_lightning_tips()
        drop_lightning_tips()  # idempotent: one filter
        L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False)
        assert "GPU available" in caplog.text  # the run's own facts still reach the user
        assert "Tip" not in caplog.text
        assert len(log.filters) == 1
    finally:
        for f in list(log.filters):
            log.removeFilter(f)
        for f in installed:
            log.addFilter(f)


def test_lightning_loop_drops_lightnings_own_warnings_and_nothing_else() -> None:
    import contextlib
    import warnings

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from wsi_ncmi.quiet import lightning_loop

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            warnings.warn("the run's own warning", UserWarning, stacklevel=1)
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(scoped: bool) -> list[str]:
        loader = DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)
        trainer = L.Trainer(
            max_epochs=1,
            logger=False,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = list(warnings.filters)
            with lightning_loop() if scoped else contextlib.nullcontext():
                trainer.fit(Tiny(), loader)
            assert warnings.filters == before  # scoped: the caller's filters are back
        return [str(w.message) for w in caught]

    messages = fit(scoped=True)
    assert not [m for m in messages if "LeafSpec" in m or "does not have many workers" in m]
    assert "the run's own warning" in messages  # every other warning still passes
    # Without the scope, the same fit shows Lightning's LeafSpec deprecation.
    assert any("LeafSpec" in m for m in fit(scoped=False))
