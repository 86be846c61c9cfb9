"""Per-class statistics of a Q-step pass, summed over processes (no Lightning needed)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from wsi_ncmi.losses import functional as LF
from wsi_ncmi.losses.base import ClassificationLoss


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum a tensor over all processes (identity without an initialised process group).

    Args:
        tensor: Any tensor; not modified.

    Returns:
        The summed tensor (a copy).
    """
    out = tensor.clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


@torch.no_grad()
def accumulate_class_statistics(
    loss: ClassificationLoss, batches: Iterable[tuple[Tensor, Tensor]], num_classes: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class sums of ``loss.probabilities``, counts and predicted counts, all-reduced.

    Args:
        loss: The loss that defines the output map ``P`` and the prediction rule.
        batches: ``(outputs, targets)`` pairs of this process's shard.
        num_classes: ``C``.

    Returns:
        ``(sums (C, K), counts (C,), predicted_counts (C,))`` summed over all processes.
        Under ``DistributedSampler`` the few padding duplicates are counted too.
    """
    totals: list[Tensor] | None = None
    for outputs, targets in batches:
        p = loss.probabilities(outputs)
        batch_sums, batch_counts = LF.class_sums(p, targets, num_classes)
        batch_pred = torch.bincount(loss.predict(outputs), minlength=num_classes).to(p.dtype)
        stats = [batch_sums, batch_counts, batch_pred]
        totals = stats if totals is None else [t + s for t, s in zip(totals, stats, strict=True)]
    if totals is None:
        raise ValueError("accumulate_class_statistics got no batches")
    sums, counts, predicted = totals
    return all_reduce_sum(sums), all_reduce_sum(counts), all_reduce_sum(predicted)
