"""The training budget in optimiser steps: the same number of updates whatever the batch size."""

from __future__ import annotations

from typing import Any

import pytest

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.train.config import TrainerConfig, epoch_budget


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs", "patience"),
    [(40, 100, 25), (10, 400, 100), (3, 1334, 334), (4000, 1, 1), (6000, 1, 1)],
)
def test_a_step_budget_becomes_the_whole_epochs_that_cover_it(
    steps_per_epoch: int, epochs: int, patience: int
) -> None:
    trainer = TrainerConfig(max_epochs=7, patience=2, max_steps=4000, patience_steps=1000)
    assert epoch_budget(trainer, steps_per_epoch) == (epochs, patience)
    # At least the budget, and less than one epoch more.
    assert steps_per_epoch * (epochs - 1) < 4000 <= steps_per_epoch * epochs


def test_without_step_budgets_the_epoch_settings_rule() -> None:
    assert epoch_budget(TrainerConfig(max_epochs=7, patience=2), 40) == (7, 2)
    assert epoch_budget(TrainerConfig(max_epochs=7, patience=2, patience_steps=0), 40) == (7, 0)


@pytest.mark.parametrize(("key", "value"), [("max_steps", 0), ("patience_steps", -1)])
def test_bad_step_budgets_are_config_errors(key: str, value: int) -> None:
    fields: dict[str, Any] = {key: value}
    with pytest.raises(ConfigError, match=f"trainer.{key} must be"):
        TrainerConfig(**fields)
