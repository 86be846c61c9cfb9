"""The extraction dataset reuses its batch buffers only when no earlier batch still uses them."""

from __future__ import annotations

from pathlib import Path

import torch
from _features import make_cohort

from wsi_ncmi.batch import RunReport
from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.dataset import PatchBatchDataset, SlideJob
from wsi_ncmi.features.encoders.registry import build_encoder
from wsi_ncmi.features.jobs import load_jobs


def _jobs(root: Path) -> list[SlideJob]:
    coords_dir, _ = make_cohort(root, n_slides=1, width=448, height=320)
    config = ExtractConfig(coords_dir=coords_dir, out_dir=root / "out", encoder="stain-stats")
    return load_jobs(config, build_encoder("stain-stats").spec, RunReport("extract", params={}))


def test_a_batch_in_use_is_never_overwritten_and_a_free_buffer_is_reused(tmp_path: Path) -> None:
    jobs = _jobs(tmp_path)
    pooled = PatchBatchDataset(jobs, 4)
    assert len(pooled) >= 4

    def fresh(i: int) -> torch.Tensor:  # a new dataset per batch: nothing to reuse
        return PatchBatchDataset(jobs, 4)[i]["images"]

    first = pooled[0]["images"]
    expected = fresh(0)
    assert torch.equal(first, expected)
    view, as_numpy = first.permute(0, 3, 1, 2), first.numpy()  # what a consumer may keep
    del first
    for i in range(1, len(pooled)):
        batch = pooled[i]["images"]
        assert torch.equal(batch, fresh(i))
        del batch
    assert torch.equal(view.permute(0, 2, 3, 1), expected)  # untouched while a view lives
    assert torch.equal(torch.from_numpy(as_numpy), expected)
    del view, as_numpy
    second = pooled[1]["images"]
    address = second.data_ptr()
    del second
    third = pooled[2]["images"]  # same shape: the buffer of batch 1 again
    assert third.data_ptr() == address
    assert torch.equal(third, fresh(2))
