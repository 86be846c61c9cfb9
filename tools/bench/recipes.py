#!/usr/bin/env python3
"""Write the tuning record that the shipped training recipes take their settings from.

    .venv/bin/python tools/bench/recipes.py outputs/bench_c17/bench/synthetic_full/loho \\
        --config configs/bench/synthetic_full.yaml --out configs/recipes.yaml

It reads the tuning cells of a finished ``wsi-bench`` split (``<split>/cells/*/result.json``)
and, for every loss of the sweep, the mean validation score (``sweep.tuning.metric``) of
each grid variant over the tuning seeds, every fold and the tuned aggregators: the sweep's
own grid and its own selection metric, pooled over folds because a shipped recipe is for
data the benchmark never saw (inside the benchmark each fold still chooses on its own
validation slides). The best variant of each loss is its recipe; ties go to the first in
grid order, as in the sweep. The training schedule every loss shared (the sweep's
``train`` section) is recorded with it. ``tests/test_recipes.py`` checks every shipped
recipe (``configs/camelyon17/*.yaml``, ``configs/synthetic/*.yaml``) against the record.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.parser import load_config
from wsi_ncmi.bench.suite import expand_grid, split_configs, tuned_models
from wsi_ncmi.train.config import OptimConfig


def tuning_results(split_dir: Path) -> list[CellResult]:
    """The finished cells' results of one split folder."""
    return [
        CellResult.from_json(json.loads(path.read_text()))
        for path in sorted((split_dir / "cells").glob("*/result.json"))
    ]


def choose_recipes(config: BenchConfig, results: list[CellResult]) -> dict[str, Any]:
    """Per loss: every variant's pooled validation score and the chosen one's settings.

    Args:
        config: The split's bench configuration.
        results: Its finished cells' results.

    Returns:
        ``{loss label: {"name", "chosen", "settings", "validation": {variant: [mean,
        cells]}}}``.
    """
    sweep = config.sweep
    metric = sweep.tuning.metric
    models = set(tuned_models(config))
    seeds = set(sweep.tuning.seeds)
    out: dict[str, Any] = {}
    for entry in sweep.losses:
        variants = expand_grid(entry)
        scores: dict[str, tuple[float, int]] = {}
        for variant in variants:
            values = [
                float(value)
                for r in results
                if r.loss == variant.label
                and r.model in models
                and r.seed in seeds
                and (value := r.val.get(metric)) is not None
                and math.isfinite(float(value))
            ]
            if values:
                scores[variant.label] = (sum(values) / len(values), len(values))
        if not scores:
            continue
        best = max(scores.values(), key=lambda s: s[0])[0]
        combos = itertools.product(*(entry.grid[k] for k in entry.grid))
        chosen, combo = next(
            (v, c)
            for v, c in zip(variants, combos, strict=True)
            if v.label in scores and scores[v.label][0] == best
        )
        out[entry.label] = {
            "name": entry.name,
            "chosen": chosen.label,
            "settings": dict(zip(entry.grid, combo, strict=True)),
            "validation": {k: [round(v[0], 6), v[1]] for k, v in scores.items()},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Write the record; 0 on success, 2 when the split has no tuning results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split_dir", type=Path, help="a finished split folder of wsi-bench")
    parser.add_argument("--config", required=True, help="the bench config that made it")
    parser.add_argument("--split", default="loho", help="the split name in sweep.splits")
    parser.add_argument("--out", type=Path, default=Path("configs/recipes.yaml"))
    args = parser.parse_args(argv)
    base = load_config(args.config)
    configs = split_configs(base)
    config = configs.get(args.split) or configs.get("")
    if config is None:
        print(f"no split {args.split!r} in {args.config}", file=sys.stderr)
        return 2
    recipes = choose_recipes(config, tuning_results(args.split_dir))
    if not recipes:
        print(f"no finished tuning cells under {args.split_dir}", file=sys.stderr)
        return 2
    train = config.train
    optim = {**asdict(OptimConfig()), **(train.get("optim") or {})}
    record = {
        "bench": base.name,
        "bench_config": args.config,
        "split": args.split,
        "metric": config.sweep.tuning.metric,
        "tuning_seeds": list(config.sweep.tuning.seeds),
        "tuned_on": tuned_models(config),
        "schedule": {
            "data.batch_size": (train.get("data") or {}).get("batch_size"),
            "trainer.max_steps": (train.get("trainer") or {}).get("max_steps"),
            "trainer.patience_steps": (train.get("trainer") or {}).get("patience_steps"),
            "trainer.monitor": (train.get("trainer") or {}).get("monitor"),
            "optim.optimizer": optim["optimizer"],
            "optim.scheduler": optim["scheduler"],
        },
        "losses": recipes,
    }
    header = (
        "# The tuning record of the shipped training recipes (configs/camelyon17/*.yaml,\n"
        "# configs/synthetic/*.yaml): each loss's grid variant with the best mean validation\n"
        "# score on the `bench` twin, from the sweep's own grid and metric. Written by\n"
        f"#   python tools/bench/recipes.py {args.split_dir} --config {args.config} "
        f"--split {args.split} --out {args.out}\n"
        "# Do not edit by hand; tests/test_recipes.py checks the recipes against it.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(record, sort_keys=False, allow_unicode=True))
    tmp.replace(args.out)
    for label, recipe in recipes.items():
        print(f"{label}: {recipe['chosen']}  {recipe['settings']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
