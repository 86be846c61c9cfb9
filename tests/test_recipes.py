"""The shipped training recipes take each loss's setting from the committed tuning record.

``configs/recipes.yaml`` is written by ``tools/bench/recipes.py`` from the tuning cells of
the ``bench`` twin's sweep (``configs/bench/synthetic_full.yaml``): for every loss, its grid
variant with the best mean validation score. Each shipped recipe
(``configs/camelyon17/*.yaml``, ``configs/synthetic/*.yaml``) must use its own loss's
chosen setting and the schedule every loss was tuned with, and say so in its header.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "configs" / "recipes.yaml"
RECIPES = sorted([*(REPO / "configs" / "camelyon17").glob("*.yaml"),
                  *(REPO / "configs" / "synthetic").glob("*.yaml")])  # fmt: skip


def _record() -> dict[str, Any]:
    return yaml.safe_load(RECORD.read_text())


def _resolved(path: Path) -> dict[str, Any]:
    """What ``wsi-train --config <path> --print_config`` resolves (defaults included)."""
    from wsi_ncmi.cli.train import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", str(path), "--print_config"]) == 0
    return yaml.safe_load(out.getvalue())


def _get(config: dict[str, Any], dotted: str) -> Any:
    """``optim.lr`` → ``config["optim"]["lr"]``; ``kwargs.x`` is the loss's ``kwargs.x``."""
    keys = dotted.split(".")
    node: Any = config["loss"] if keys[0] == "kwargs" else config
    for key in keys:
        node = node[key]
    return node


def test_the_record_chose_each_losss_best_validation_variant() -> None:
    record = _record()
    assert record["bench_config"] == "configs/bench/synthetic_full.yaml"
    assert record["losses"], "no loss in the record"
    for label, recipe in record["losses"].items():
        scores = {variant: mean for variant, (mean, cells) in recipe["validation"].items()}
        assert all(cells > 0 for _, cells in recipe["validation"].values()), label
        assert len(scores) == 4, f"{label}: the whole 2 x 2 grid is scored"
        assert scores[recipe["chosen"]] == max(scores.values()), label
        # The chosen label spells its settings (e.g. ce_lr0.001_weight_decay0.01).
        lr = recipe["settings"]["optim.lr"]
        assert f"lr{lr:g}" in recipe["chosen"], label


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_shipped_recipe_uses_its_own_losss_record(path: Path) -> None:
    record = _record()
    assert "configs/recipes.yaml" in path.read_text().split("\nout_dir:")[0], (
        f"{path.name}: the header must name configs/recipes.yaml"
    )
    config = _resolved(path)
    loss = config["loss"]["name"]
    matches = [r for r in record["losses"].values() if r["name"] == loss]
    assert len(matches) == 1, f"{path.name}: no single record for loss {loss!r}"
    for key, value in matches[0]["settings"].items():
        assert _get(config, key) == pytest.approx(value), f"{path.name}: {key}"
    for key, value in record["schedule"].items():
        assert _get(config, key) == value, f"{path.name}: {key}"
