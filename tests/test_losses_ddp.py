"""DDP: the all-reduced centroid statistics equal the single-process ones (gloo, 2 CPUs)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wsi_ncmi.losses import NCMILoss
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.distributed import accumulate_class_statistics

C = 5


def _data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, C, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (40,), generator=g)
    return logits, labels


def _worker(rank: int, world_size: int, port: int, out_path: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        logits, labels = _data()
        shard = slice(rank, None, world_size)  # what DistributedSampler hands this rank
        batches = [(logits[shard][i : i + 7], labels[shard][i : i + 7]) for i in range(0, 20, 7)]
        loss = NCMILoss(C, centroids="alternating", warmup_epochs=0, warmup_steps=0, damping=1.0)
        sums, counts, predicted = accumulate_class_statistics(loss, batches, C)
        loss.q_step(sums, counts, epoch=-1, predicted_counts=predicted)
        if rank == 0:
            torch.save(
                {"sums": sums, "counts": counts, "predicted": predicted, "q": loss.state.centroids},
                out_path,
            )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_reduction_equals_single_process(tmp_path):
    out_path = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(2, _free_port(), out_path), nprocs=2, join=True)
    got = torch.load(out_path)
    logits, labels = _data()
    loss = NCMILoss(C, centroids="alternating", warmup_epochs=0, warmup_steps=0, damping=1.0)
    sums, counts, predicted = accumulate_class_statistics(loss, [(logits, labels)], C)
    torch.testing.assert_close(got["sums"], sums)
    torch.testing.assert_close(got["counts"], counts)
    torch.testing.assert_close(got["predicted"], predicted)
    torch.testing.assert_close(got["q"], LF.class_centroids(LF.sigmax(logits), labels, C).float())
