"""Loading ``wsi-bench``'s configuration: plain data in layers, typed and checked once.

Layers, each over the one before: the defaults of :class:`BenchConfig`, the YAML files
(mappings merge key by key; any other value, a list included, replaces), the ``quick:``
section of dotted overrides (``--quick``), then the overrides in order. An override
(:func:`parse_override`: ``KEY=VALUE``, a dotted key and a YAML value) sets its key as a
whole, so a section given as a mapping starts from its defaults; ``KEY+=VALUE`` appends to
a list. The result is typed once (:func:`~wsi_ncmi.bench.config.build`) and checked
(:func:`validate`); every problem is a :class:`~wsi_ncmi.errors.ConfigError` that names
its key, and its file when a file holds it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from wsi_ncmi.bench.config import (
    BENCH_OWNED_DATA,
    BENCH_OWNED_EXTRACT,
    LABEL,
    TRAIN_SECTIONS,
    BenchConfig,
    build,
    known,
    set_dotted,
)
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.train.config import require


def load_config(
    path: str | Path | Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    *,
    quick: bool = False,
) -> BenchConfig:
    """Defaults, then the YAML file(s), then their ``quick`` section, then dotted overrides.

    Args:
        path: A YAML file, several (later ones win), or ``None`` for the defaults.
        overrides: ``{"dotted.key": value}`` or ``(key, value)`` pairs, applied in order.
        quick: Apply the ``quick`` section (``wsi-bench --quick``).

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Unreadable file, unknown key, wrong type or invalid value.
    """
    paths = [path] if isinstance(path, str | Path) else list(path or [])
    data = dataclasses.asdict(BenchConfig())
    for file in paths:
        layer = _read(file)
        try:
            build(BenchConfig, layer)  # the file alone, so that its problems name it
        except ConfigError as err:
            raise ConfigError(f"{file}: {err}") from err
        data = merge(data, layer)
    if quick and not data["quick"]:
        named = ", ".join(repr(str(p)) for p in paths) or "the config"
        raise ConfigError(f"--quick: {named} has no 'quick' section of overrides")
    items = overrides.items() if isinstance(overrides, Mapping) else overrides or []
    for key, value in [*(data["quick"].items() if quick else []), *items]:
        set_dotted(data, str(key), copy.deepcopy(value))
    config = build(BenchConfig, data)
    validate(config)
    return config


def merge(base: Any, layer: Any) -> Any:
    """``layer`` over ``base``: mappings merge key by key, any other value replaces."""
    if not (isinstance(base, dict) and isinstance(layer, dict)):
        return copy.deepcopy(layer)
    return base | {key: merge(base.get(key), value) for key, value in layer.items()}


def _read(path: str | Path) -> Any:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    return {} if data is None else data


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", yaml.safe_load("value"))``.

    Raises:
        ConfigError: No ``=`` or unparsable value.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.optim.lr=0.01), got {text!r}")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err


def validate(config: BenchConfig) -> None:
    """Check the values together, fill the default labels, and type the stages' sections.

    Every loss variant is built once, and every cell's ``TrainConfig`` but its seed and
    fold, so a misspelt setting is exit 2 before any work.

    Raises:
        ConfigError: The first problem found.
    """
    from wsi_ncmi.losses import list_losses
    from wsi_ncmi.mil import list_aggregators

    sweep, data, stats = config.sweep, config.data, config.stats
    require("name", config.name, bool(LABEL.match(config.name)), f"matching {LABEL.pattern}")
    for kind, entries, names in (
        ("losses", sweep.losses, list_losses()),
        ("models", sweep.models, list_aggregators()),
    ):
        require(f"sweep.{kind}", entries, bool(entries), "a non-empty list")
        for entry in entries:
            require(f"sweep.{kind}: name", entry.name, entry.name in names, f"one of {names}")
            entry.label = entry.label or entry.name
            ok = bool(LABEL.match(entry.label))
            require(f"sweep.{kind}: label", entry.label, ok, f"matching {LABEL.pattern}")
        labels = [e.label for e in entries]
        require(f"sweep.{kind} labels", labels, len(set(labels)) == len(labels), "distinct")
    seeds = sweep.seeds
    require(
        "sweep.seeds",
        seeds,
        bool(seeds) and len(set(seeds)) == len(seeds),
        "distinct and non-empty",
    )
    labels = [e.label for e in sweep.losses]
    for role in ("baseline", "treatment"):
        value = getattr(sweep, role)
        require(f"sweep.{role}", value, value in labels, f"one of the loss labels {labels}")
    for name in sweep.splits:
        require("sweep.splits: a name", name, bool(LABEL.match(name)), f"like {LABEL.pattern}")
    named = {f"sweep.splits.{name}": split for name, split in sweep.splits.items()}
    for where, split in {"sweep.split": sweep.split, **named}.items():
        if split.file is not None:
            raise ConfigError(f"{where}.file must not be set: the benchmark writes one per seed")
    _validate_suite(config)
    require("jobs", config.jobs, config.jobs >= 1, ">= 1")
    threads = config.torch_threads
    require("torch_threads", threads, threads is None or threads >= 1, ">= 1 or null")
    require("stats.bootstrap", stats.bootstrap, stats.bootstrap >= 100, ">= 100")
    require("stats.alpha", stats.alpha, 0.0 < stats.alpha < 1.0, "in (0, 1)")
    for where, train in [
        ("train", config.train),
        *((f"sweep.losses[{i}].train", e.train) for i, e in enumerate(sweep.losses)),
        *((f"sweep.models[{i}].train", e.train) for i, e in enumerate(sweep.models)),
    ]:
        known(train, list(TRAIN_SECTIONS), where, "sections")
        owned = sorted(set(train.get("data") or {}) & set(BENCH_OWNED_DATA))
        if owned:
            raise ConfigError(f"{where}.data must not set {owned}: set them in the data section")
    from wsi_ncmi.features.config import ExtractConfig

    extract = config.prepare.extract
    names = [f.name for f in dataclasses.fields(ExtractConfig)]
    known(extract, [n for n in names if n not in BENCH_OWNED_EXTRACT], "prepare.extract")
    build(ExtractConfig, {"coords_dir": "", "out_dir": "", **extract}, "prepare.extract")
    if data.synth is not None:
        from wsi_ncmi.synth.presets import PRESETS

        preset = data.synth.preset
        require("data.synth.preset", preset, preset in PRESETS, f"one of {sorted(PRESETS)}")
        if data.slide_dir is None or Path(data.manifest) != Path(data.slide_dir) / "manifest.csv":
            raise ConfigError(
                "data.synth needs data.slide_dir (the cohort folder) and data.manifest = "
                f"<slide_dir>/manifest.csv; got {data.slide_dir!r} and {data.manifest!r}"
            )
    _build_cells(config)


def _validate_suite(config: BenchConfig) -> None:
    """Tuning grids and seeds, treatments and baselines."""
    sweep = config.sweep
    for entry in sweep.losses:
        for key, values in entry.grid.items():
            head, _, rest = key.partition(".")
            where = f"sweep.losses[{entry.label}].grid"
            ok = head in ("kwargs", *TRAIN_SECTIONS) and bool(rest)
            require(f"{where}: a key", key, ok, "'kwargs.<arg>' or '<train section>.<key>'")
            require(f"{where}.{key}", values, bool(values), "a non-empty list")
    tuning, seeds = sweep.tuning, sweep.seeds
    ok = seeds[0] in tuning.seeds and set(tuning.seeds) <= set(seeds)
    if any(e.grid for e in sweep.losses):
        rule = f"a subset of sweep.seeds {seeds} holding its first seed (the one with heatmaps)"
        require("sweep.tuning.seeds", tuning.seeds, ok, rule)
    models = [m.label for m in sweep.models]
    ok = tuning.models is None or (bool(tuning.models) and set(tuning.models) <= set(models))
    require("sweep.tuning.models", tuning.models, ok, f"null or some of {models}")
    labels = [e.label for e in sweep.losses]
    treatments = [sweep.treatment, *sweep.treatments]
    require("sweep.treatments", sweep.treatments, set(treatments) <= set(labels), "loss labels")
    ok = set(sweep.baselines) <= set(labels) - set(treatments)
    require("sweep.baselines", sweep.baselines, ok, f"loss labels but {treatments}")


def _build_cells(config: BenchConfig) -> None:
    """Every loss variant's loss, and its ``TrainConfig`` with every aggregator."""
    from wsi_ncmi.bench.plan import Cell, train_config_for
    from wsi_ncmi.bench.suite import expand_grid
    from wsi_ncmi.losses import build_loss
    from wsi_ncmi.manifest import LABELS

    for entry in config.sweep.losses:
        for variant in expand_grid(entry):
            try:
                build_loss(variant.name, num_classes=len(LABELS), **variant.kwargs)
            except ConfigError as err:
                raise ConfigError(f"sweep.losses[{variant.label}].kwargs: {err}") from err
            for model in config.sweep.models:
                cell = Cell(variant, model, config.sweep.seeds[0], 0, "", (), "")
                train_config_for(config, cell, Path())
