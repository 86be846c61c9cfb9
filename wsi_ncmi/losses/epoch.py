"""The epoch-end Q-step for any training loop (Lightning's callback uses it too).

NCMI alternates two steps: the network is trained with the centroids fixed, then the
centroids are recomputed with the network fixed. :func:`epoch_end` is the second step for
a plain PyTorch loop; it switches the model and the loss to eval mode for the pass and
back afterwards, so nothing depends on remembering ``model.eval()``::

    for epoch in range(epochs):
        for x, y in train_loader:
            out = loss(model(x), y)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        report = epoch_end(loss, model, train_loader, epoch=epoch)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from wsi_ncmi.losses.base import ClassificationLoss
from wsi_ncmi.losses.centroids import CentroidReport
from wsi_ncmi.losses.distributed import accumulate_class_statistics

ForwardFn = Callable[[nn.Module, Any], Tensor]


def _call(model: nn.Module, inputs: Any) -> Tensor:
    output = model(inputs)
    if not isinstance(output, Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}, not a Tensor; pass "
            "forward=lambda model, x: ... that returns what the loss takes"
        )
    return output


def update_centroids(
    loss: ClassificationLoss, outputs_and_targets: Iterable[tuple[Tensor, Tensor]], epoch: int
) -> CentroidReport | None:
    """Run the loss's epoch-end update from ``(outputs, targets)`` over the training set.

    Args:
        loss: Any registered loss.
        outputs_and_targets: What the loss takes (``(B, C)`` logits or ``(B, m)``
            features) and ``(B,)`` labels, for every training batch of this process,
            computed in eval mode. Consumed only if the loss needs a pass.
        epoch: Epoch that just ended (``-1`` for a pass before training).

    Returns:
        The centroid report (collapse check included), or ``None`` for losses that keep no
        centroids.

    Raises:
        ValueError: If the loss needs a pass and no batch was given.
    """
    state = loss.centroid_state
    if state is None:
        return None
    if not loss.needs_epoch_pass:
        return state.check(epoch) if state.mode == "ema" else None
    with torch.no_grad():
        sums, counts, predicted = accumulate_class_statistics(
            loss, outputs_and_targets, state.num_classes
        )
    return loss.q_step(sums, counts, epoch, predicted)


def epoch_end(
    loss: ClassificationLoss,
    model: nn.Module,
    batches: Iterable[tuple[Any, Tensor]],
    *,
    epoch: int,
    forward: ForwardFn | None = None,
) -> CentroidReport | None:
    """The epoch-end Q-step of a plain PyTorch loop, with eval mode handled.

    The model and the loss are put in eval mode for the pass (no dropout, no running
    state moves) and restored to their previous modes afterwards, even on error.

    Args:
        loss: Any registered loss (losses without centroids return ``None`` at once).
        model: The network; ``forward(model, x)`` must give what the loss takes.
        batches: ``(x, y)`` pairs over the training set, e.g. the training DataLoader.
        epoch: Epoch that just ended.
        forward: ``(model, x) -> outputs``; default ``model(x)``.

    Returns:
        The centroid report, or ``None`` when the loss keeps no centroids.
    """
    if loss.centroid_state is None:
        return None
    run = forward or _call
    modes = (model.training, loss.training)
    model.eval()
    loss.eval()
    try:
        with torch.no_grad():
            return update_centroids(loss, ((run(model, x), y) for x, y in batches), epoch)
    finally:
        model.train(modes[0])
        loss.train(modes[1])
