"""Batching of feature bags: the epoch-seeded sampler and the padded collate function.

The sampler's order is a function of ``(seed, epoch)`` only, so a resumed run sees the
same bags as an uninterrupted one; :func:`collate_bags` pads a step's bags to the longest
one with a ``(B, N_max)`` mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Sampler


class BagItem(TypedDict):
    """One slide of a :class:`~wsi_ncmi.train.data.BagDataset`."""

    features: Tensor  #: ``(n, D)`` patch features.
    target: Tensor  #: ``()`` int64 class index.
    index: Tensor  #: ``()`` int64 position in the dataset.


def collate_bags(items: Sequence[BagItem]) -> dict[str, Tensor]:
    """Stack bags of different lengths into one padded batch.

    Args:
        items: :meth:`BagDataset.__getitem__` outputs, ``features`` ``(n_b, D)`` each.

    Returns:
        ``{"features": (B, N_max, D), "mask": (B, N_max) bool, "target", "index": (B,)}``;
        bag ``b`` fills rows ``[0, n_b)``, padding rows are zeros with ``mask`` ``False``
        (one bag: no padding, all-``True`` mask, exactly the unbatched step).

    Raises:
        ValueError: If ``items`` is empty or the feature dimensions differ.
    """
    if not items:
        raise ValueError("collate_bags got no bags")
    bags = [item["features"] for item in items]
    dims = {int(bag.shape[-1]) for bag in bags}
    if len(dims) != 1:
        raise ValueError(f"bags of one batch must share the feature dimension, got {sorted(dims)}")
    lengths = torch.tensor([int(bag.shape[0]) for bag in bags])
    features = pad_sequence(bags, batch_first=True)  # zeros after each bag's rows
    mask = torch.arange(features.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    return {
        "features": features,
        "mask": mask,
        "target": torch.stack([torch.as_tensor(item["target"]) for item in items]),
        "index": torch.stack([torch.as_tensor(item["index"]) for item in items]),
    }


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)``: a permutation, or a class-balanced draw, seeded per epoch.

    Lightning calls :meth:`set_epoch` before every training epoch.

    Args:
        labels: Class index of each item.
        seed: Base seed.
        balanced: Draw ``len(labels)`` items with replacement, each class equally likely.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, balanced: bool = False) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.seed = seed
        self.balanced = balanced
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order is produced next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        n = len(self.labels)
        if self.balanced:
            counts = np.bincount(self.labels)
            weights = 1.0 / counts[self.labels]
            order = rng.choice(n, n, replace=True, p=weights / weights.sum())
        else:
            order = rng.permutation(n)
        for index in order:
            yield int(index), self.epoch
