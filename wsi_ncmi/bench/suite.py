"""A benchmark's stages: named splits, tuning on validation, then every seed.

A configuration may name several split schemes (``sweep.splits``: e.g. leave-one-hospital-
out and the fixed split train 0–2 / test 3–4); each runs as its own sub-benchmark in
``<out_dir>/<split name>/``, with its own report.

Losses with a ``grid`` are tuned on validation before they are compared:

1. **tuning**: every grid combination (a *variant*, labelled e.g. ``focal_lr0.001_gamma2``)
   trains on the tuning seeds and every fold of the split;
2. **selection**: per (loss, aggregator, fold), the variant with the best validation
   score (``sweep.tuning.metric``, mean over the tuning seeds; ties go to the first in
   grid order) is chosen. Each fold chooses from its own validation slides only: with
   leave-one-hospital-out, a choice pooled over folds would use the held-out hospital's
   slides (they validate the other folds), so test slides would enter the choice;
3. **final**: the chosen variant trains on every seed. Its tuning-seed cells are the same
   cells as in step 1 (same settings, same split), so they are reused, not retrained.

Every loss gets the same budget when the grids have the same size. The report then
shows each loss under its own label, with the chosen settings in a "Tuning" table.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.config import BenchConfig, LossEntry, set_dotted
from wsi_ncmi.bench.sweep import SweepOutcome, collect_finished_elsewhere, run_sweep

log = logging.getLogger(__name__)

#: Seconds between checks for tuning cells that other jobs (``--shard``) still train.
CLAIM_POLL_SECONDS = 15.0


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return f"{value:g}"
    return "".join(ch if ch.isalnum() or ch in "._+-" else "-" for ch in str(value))


def expand_grid(entry: LossEntry) -> list[LossEntry]:
    """The variants of a loss entry: one per combination of its ``grid`` values.

    Args:
        entry: A loss entry (labels filled in by validation).

    Returns:
        ``[entry]`` without a grid; else one entry per combination, in grid order (the
        last key varies fastest), labelled ``<label>_<key><value>...`` with ``<key>``
        the last part of the dotted key.
    """
    if not entry.grid:
        return [entry]
    keys = list(entry.grid)
    variants = []
    for values in itertools.product(*(entry.grid[k] for k in keys)):
        kwargs = dict(entry.kwargs)
        train = copy.deepcopy(entry.train)
        parts = [entry.label]
        for key, value in zip(keys, values, strict=True):
            head, _, rest = key.partition(".")
            if head == "kwargs":
                kwargs[rest] = value
            else:
                set_dotted(train, key, value)
            parts.append(f"{key.rsplit('.', 1)[-1]}{_short(value)}")
        variants.append(LossEntry(entry.name, kwargs, "_".join(parts), train, grid={}))
    return variants


def split_configs(config: BenchConfig) -> dict[str, BenchConfig]:
    """One configuration per named split (``{"": config}`` without ``sweep.splits``).

    Each runs in ``<out_dir>/<split name>/``.
    """
    sweep = config.sweep
    if not sweep.splits:
        return {"": config}
    return {
        name: dataclasses.replace(
            config,
            name=name,
            output_root=str(config.out_dir),
            sweep=dataclasses.replace(sweep, split=split, splits={}),
        )
        for name, split in sweep.splits.items()
    }


def tuning_config(config: BenchConfig) -> BenchConfig | None:
    """The tuning stage: every variant on the tuning seeds (``None`` without grids)."""
    sweep = config.sweep
    if not any(e.grid for e in sweep.losses):
        return None
    variants = [v for e in sweep.losses for v in expand_grid(e)]
    seeds = [s for s in sweep.seeds if s in sweep.tuning.seeds]  # sweep order: same cells
    models = [m for m in sweep.models if m.label in tuned_models(config)]
    return dataclasses.replace(
        config, sweep=dataclasses.replace(sweep, losses=variants, seeds=seeds, models=models)
    )


def tuned_models(config: BenchConfig) -> list[str]:
    """Labels of the aggregators the grids train on (``sweep.tuning.models``, else all)."""
    labels = [m.label for m in config.sweep.models]
    chosen = config.sweep.tuning.models
    return labels if chosen is None else [label for label in labels if label in chosen]


def validation_scores(
    results: Sequence[CellResult], metric: str
) -> dict[tuple[str, str, int], tuple[float, int]]:
    """Mean validation ``metric`` per (loss label, model label, fold index), with the count."""
    values: dict[tuple[str, str, int], list[float]] = {}
    for r in results:
        value = r.val.get(metric)
        if value is not None and math.isfinite(float(value)):
            key = (r.loss, r.model, r.fold_index)
            values.setdefault(key, []).append(float(value))
    return {k: (sum(v) / len(v), len(v)) for k, v in values.items()}


@dataclass(frozen=True)
class Choice:
    """The variant chosen for one (loss, aggregator, fold) on that fold's validation.

    Attributes:
        loss: The loss label (family).
        model: The aggregator label.
        fold_index: The fold.
        fold: The fold's name.
        variant: The chosen variant entry.
        scores: ``{variant label: (mean validation score, cells)}`` of every variant.
        tuned_on: The aggregator whose validation scores made the choice (``model``
            itself unless it is not in ``sweep.tuning.models``).
    """

    loss: str
    model: str
    fold_index: int
    fold: str
    variant: LossEntry
    scores: dict[str, tuple[float, int]]
    tuned_on: str = ""


def select_variants(
    config: BenchConfig,
    results: Sequence[CellResult],
    folds: Sequence[tuple[int, str]] | None = None,
) -> list[Choice]:
    """Choose each loss's variant per aggregator and fold by the validation score.

    A variant without a finished cell cannot be chosen; a loss none of whose variants
    finished keeps its first variant (its cells then fail again, visibly, in the final
    stage). An aggregator outside ``sweep.tuning.models`` takes, per loss and fold, the
    choice made on the first tuned aggregator.

    Args:
        config: The split's configuration.
        results: The tuning cells' results.
        folds: ``(index, name)`` of every planned fold (default: those with results), so
            that a fold whose tuning cells all failed still gets its final cells.
    """
    scores = validation_scores(results, config.sweep.tuning.metric)
    if folds is None:
        folds = sorted({(r.fold_index, r.fold) for r in results})
    tuned = tuned_models(config)
    choices = []
    for model in config.sweep.models:
        source = model.label if model.label in tuned else tuned[0]
        for fold_index, fold in folds:
            for entry in config.sweep.losses:
                variants = expand_grid(entry)
                table = {
                    v.label: scores[(v.label, source, fold_index)]
                    for v in variants
                    if (v.label, source, fold_index) in scores
                }
                best = max(
                    (v for v in variants if v.label in table),
                    key=lambda v: table[v.label][0],
                    default=variants[0],
                )
                choices.append(
                    Choice(entry.label, model.label, fold_index, fold, best, table, source)
                )
    return choices


@dataclass
class SuiteOutcome:
    """One split's run: the outcome in the configuration's own loss labels.

    Attributes:
        config: The split's configuration (loss labels as written).
        sweep: Cells and results of the final stage; each result's ``loss`` is the
            loss label and ``variant`` the chosen variant's label.
        choices: The tuning choices (empty without grids).
        tuning: The tuning stage's own outcome (``None`` without grids).
    """

    config: BenchConfig
    sweep: SweepOutcome
    choices: list[Choice] = field(default_factory=list)
    tuning: SweepOutcome | None = None


def _relabel(outcome: SweepOutcome, family: Mapping[str, str]) -> None:
    """Give each result its loss family's label, and its own as ``variant``."""
    outcome.results = [
        dataclasses.replace(r, loss=family.get(r.loss, r.loss), variant=r.loss)
        for r in outcome.results
    ]


def _run_tuning(config: BenchConfig, *, force: bool, shard: str | None) -> SweepOutcome:
    """Run the tuning stage; with ``--shard``, wait for cells other jobs still train."""
    while True:
        outcome = run_sweep(config, force=force, shard=shard)
        if not outcome.claimed:
            return outcome
        log.info("%d tuning cells held by other jobs; waiting", len(outcome.claimed))
        time.sleep(CLAIM_POLL_SECONDS)


def run_suite(
    config: BenchConfig, *, force: bool = False, shard: str | None = None
) -> SuiteOutcome:
    """Tune (if any loss has a grid), then train every seed; one split.

    Args:
        config: One split's configuration (see :func:`split_configs`).
        force: Recompute finished cells made with other settings.
        shard: ``"i/N"`` (see :func:`wsi_ncmi.bench.sweep.run_sweep`).

    Returns:
        The outcome, in the configuration's loss labels.
    """
    tune = tuning_config(config)
    if tune is None:
        return SuiteOutcome(config, run_sweep(config, force=force, shard=shard))
    tuned = _run_tuning(tune, force=force, shard=shard)
    folds = sorted({(c.fold_index, c.fold_name) for c in tuned.cells})
    choices = select_variants(config, tuned.results, folds)
    final = SweepOutcome(cells=[])
    stages = sorted({(c.model, c.fold_index) for c in choices})
    models = {m.label: m for m in config.sweep.models}
    for model, fold_index in stages:
        chosen = {
            c.loss: c.variant for c in choices if (c.model, c.fold_index) == (model, fold_index)
        }
        stage = dataclasses.replace(
            config,
            sweep=dataclasses.replace(
                config.sweep,
                losses=[chosen[e.label] for e in config.sweep.losses],
                models=[models[model]],
                split=dataclasses.replace(config.sweep.split, folds=[fold_index]),
            ),
        )
        part = run_sweep(stage, force=force, shard=shard)
        final.cells += part.cells
        final.results += part.results
        final.ran += part.ran
        final.skipped += part.skipped
        final.failed |= part.failed
        final.claimed += part.claimed
        final.shared = final.shared or part.shared
        final.seconds += part.seconds
    # Cells another job held in an earlier stage may have finished since: read them
    # again, so the job that finishes the last cell sees the sweep complete.
    collect_finished_elsewhere(config, final)
    family = {c.variant.label: c.loss for c in choices}
    _relabel(final, family)
    return SuiteOutcome(config, final, choices, tuned)


def tuning_table(config: BenchConfig, choices: Sequence[Choice]) -> list[str]:
    """Markdown: every variant's mean validation score, the chosen one in bold."""
    if not choices:
        return []
    metric = config.sweep.tuning.metric
    lines = [
        f"## Tuning on validation (`{metric}`, seeds {config.sweep.tuning.seeds})",
        "",
        "",
        "Each fold chooses on its own validation slides (the held-out hospital never "
        "enters a choice).",
        "",
        "| aggregator | fold | loss | variant | validation score | cells | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    borrowed = sorted({c.model for c in choices if c.tuned_on and c.tuned_on != c.model})
    for c in choices:
        if c.model in borrowed:
            continue
        for label, (score, n) in c.scores.items():
            mark = "**yes**" if label == c.variant.label else ""
            lines.append(
                f"| {c.model} | {c.fold} | {c.loss} | `{label}` | {score:.3f} | {n} | {mark} |"
            )
    if borrowed:
        source = next(c.tuned_on for c in choices if c.model in borrowed)
        lines += [
            "",
            f"Not tuned on their own (`sweep.tuning.models`): {', '.join(borrowed)}. Each takes "
            f"{source}'s choice for the same loss and fold.",
        ]
    return lines
