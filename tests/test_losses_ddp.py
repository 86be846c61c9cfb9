"""DDP: the all-reduced centroid statistics equal the single-process ones (gloo, 2 CPUs)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wsi_ncmi.losses import CentroidSchedule, NCMILoss
from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.distributed import accumulate_class_statistics

C = 5
LITERAL = CentroidSchedule(mode="alternating", warmup_epochs=0, warmup_steps=0, damping=1.0)


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
        loss = NCMILoss(C, schedule=LITERAL)
        sums, counts, predicted = accumulate_class_statistics(loss, batches, C)
        loss.q_step(sums, counts, epoch=-1, predicted_counts=predicted)
        centers = _feature_centers(rank, world_size)
        if rank == 0:
            torch.save(
                {
                    "sums": sums,
                    "counts": counts,
                    "predicted": predicted,
                    "q": loss.state.centroids,
                    "centers": centers,
                },
                out_path,
            )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_result(tmp_path_factory):
    """Rank 0's results of one 2-process gloo run (spawned once for the module)."""
    out_path = str(tmp_path_factory.mktemp("ddp") / "rank0.pt")
    # fork, not spawn: the ranks start in a moment instead of importing torch anew; each
    # sets one thread first, as DataLoader workers forked from a torch process do.
    mp.start_processes(
        _worker, args=(2, _free_port(), out_path), nprocs=2, join=True, start_method="fork"
    )
    return torch.load(out_path)


def test_two_process_reduction_equals_single_process(ddp_result):
    got = ddp_result
    logits, labels = _data()
    loss = NCMILoss(C, schedule=LITERAL)
    sums, counts, predicted = accumulate_class_statistics(loss, [(logits, labels)], C)
    torch.testing.assert_close(got["sums"], sums)
    torch.testing.assert_close(got["counts"], counts)
    torch.testing.assert_close(got["predicted"], predicted)
    torch.testing.assert_close(got["q"], LF.class_centroids(LF.sigmax(logits), labels, C).float())


def _feature_centers(rank: int, world_size: int) -> list[torch.Tensor]:
    """One NCMI-MIL training step per rank on different features; every rank's centre."""
    from wsi_ncmi.losses import NCMIMILLoss

    loss = NCMIMILLoss(C, feature_dim=8)
    g = torch.Generator().manual_seed(rank)
    features = (torch.randn(6, 8, generator=g) + 3.0 * rank).requires_grad_(True)
    loss(features, torch.arange(6) % C).loss.backward()
    centers = [torch.zeros(8) for _ in range(world_size)]
    dist.all_gather(centers, loss.feature_center)
    return centers


def test_feature_centre_stays_equal_across_processes(ddp_result):
    """NCMI-MIL's EMA centre folds in the mean over processes, so ranks never diverge."""
    centers = ddp_result["centers"]
    torch.testing.assert_close(centers[0], centers[1])
    means = [
        torch.randn(6, 8, generator=torch.Generator().manual_seed(r)) + 3.0 * r for r in (0, 1)
    ]
    expected = (1 - 0.9999) * (means[0].mean(0) + means[1].mean(0)) / 2
    torch.testing.assert_close(centers[0], expected)
