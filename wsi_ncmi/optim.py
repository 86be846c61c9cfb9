"""One optimiser and learning-rate schedule builder for every LightningModule.

The slide trainer (:class:`~wsi_ncmi.train.module.MILClassifier`) and the image trainer
(:class:`~wsi_ncmi.images.module.LossClassifier`) offer different menus; both validate
their choice with :func:`check_choice` and build it with :func:`configure_optimization`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

import torch

from wsi_ncmi.errors import ConfigError

if TYPE_CHECKING:
    from lightning.pytorch.utilities.types import OptimizerLRScheduler

OptimizerName = Literal["adamw", "adam", "sgd"]
SchedulerName = Literal["none", "cosine", "step"]


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """Refuse a value outside a menu, naming the parameter, the menu and the value.

    Raises:
        ConfigError: ``"<name> must be 'a', 'b' or 'c', got 'x'"``.
    """
    if value in allowed:
        return
    quoted = [repr(a) for a in allowed]
    menu = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    raise ConfigError(f"{name} must be {menu}, got {value!r}")


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerName,
    *,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """``SGD`` (with momentum), ``Adam`` or ``AdamW`` over ``params``.

    Raises:
        ConfigError: Unknown optimiser name.
    """
    check_choice("optimizer", optimizer, ("adamw", "adam", "sgd"))
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(
    opt: torch.optim.Optimizer,
    scheduler: SchedulerName,
    max_epochs: int | None,
    *,
    warmup_epochs: int = 0,
    step_epochs: int = 10,
    step_gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch schedule, or ``None`` (constant learning rate).

    ``"cosine"`` anneals to 0 over ``max_epochs`` after ``warmup_epochs`` of linear
    warm-up (from 0.1 × lr) and needs a finite ``max_epochs`` (else ``None``); ``"step"``
    multiplies by ``step_gamma`` every ``step_epochs``.

    Raises:
        ConfigError: Unknown schedule name.
    """
    check_choice("scheduler", scheduler, ("none", "cosine", "step"))
    if scheduler == "none" or (scheduler == "cosine" and max_epochs in (None, -1)):
        return None
    if scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_epochs, step_gamma)
    epochs = int(max_epochs or 1)
    warmup = min(warmup_epochs, epochs - 1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs - warmup))
    if warmup <= 0:
        return cosine
    return torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.1, 1.0, warmup), cosine], milestones=[warmup]
    )


def configure_optimization(
    params: Iterable[torch.nn.Parameter],
    *,
    optimizer: OptimizerName,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    scheduler: SchedulerName = "none",
    max_epochs: int | None = None,
    warmup_epochs: int = 0,
    step_epochs: int = 10,
    step_gamma: float = 0.1,
) -> OptimizerLRScheduler:
    """What ``LightningModule.configure_optimizers`` returns: optimiser (+ epoch schedule).

    Args:
        params: Parameters to optimise (in the module's order).
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"``.
        lr: Learning rate.
        weight_decay: Weight decay.
        momentum: SGD momentum.
        scheduler: See :func:`build_scheduler`.
        max_epochs: ``trainer.max_epochs`` (``None``/``-1``: unbounded).
        warmup_epochs: Linear warm-up of the cosine schedule.
        step_epochs: Period of the step schedule.
        step_gamma: Factor of the step schedule.

    Returns:
        The optimiser alone, or ``{"optimizer", "lr_scheduler": {"scheduler",
        "interval": "epoch"}}``.
    """
    opt = build_optimizer(params, optimizer, lr=lr, weight_decay=weight_decay, momentum=momentum)
    schedule = build_scheduler(
        opt,
        scheduler,
        max_epochs,
        warmup_epochs=warmup_epochs,
        step_epochs=step_epochs,
        step_gamma=step_gamma,
    )
    if schedule is None:
        return opt
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "epoch"}}


__all__ = [
    "OptimizerName",
    "SchedulerName",
    "build_optimizer",
    "build_scheduler",
    "check_choice",
    "configure_optimization",
]
