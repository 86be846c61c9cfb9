"""Loading ``wsi-bench``'s configuration: plain data in layers, typed and checked once.

Defaults, YAML files (mappings merge, other values replace), then dotted overrides, each
setting its key as a whole (``KEY+`` appends to a list).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from wsi_ncmi.bench import config as bench
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.plaindata import build, known
from wsi_ncmi.train.config import require


def load_config(
    path: str | Path | Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
) -> bench.BenchConfig:
    """Defaults, then the YAML file(s), then dotted overrides.

    Args:
        path: A YAML file, several (later ones win), or ``None`` for the defaults.
        overrides: ``{"dotted.key": value}`` or ``(key, value)`` pairs, applied in order.

    Raises:
        ConfigError: Unreadable file, unknown key, wrong type or invalid value.
    """
    paths = [path] if isinstance(path, str | Path) else list(path or [])
    data = dataclasses.asdict(bench.BenchConfig())
    for file in paths:
        try:
            layer = yaml.safe_load(Path(file).read_text())
            build(bench.BenchConfig, layer)  # the file alone, so that its problems name it
        except (OSError, yaml.YAMLError, ConfigError) as err:
            raise ConfigError(f"{file}: {err}") from err
        data = merge(data, layer or {})
    for key, value in overrides.items() if isinstance(overrides, Mapping) else overrides or []:
        bench.set_dotted(data, str(key), copy.deepcopy(value))
    config = build(bench.BenchConfig, data)
    validate(config)
    return config


def add_config_flags(parser: Any) -> None:
    """``--config``, ``--set`` and a flag per key, recorded in command-line order."""
    layer: dict[str, Any] = {"action": _Layer}
    parser.add_argument("--config", **layer, const="--config", metavar="FILE", help="YAML")
    parser.add_argument("--set", **layer, const="--set", metavar="KEY=VALUE", help="any key")
    for key, hint, default in _options(bench.BenchConfig()):
        metavar = re.sub(r"<class '|'>|\b\w+\.", "", str(hint))
        shown = "a mapping" if dataclasses.is_dataclass(default) else f"default: {default!r}"
        parser.add_argument(
            f"--{key}", **layer, const=key, typehint=hint, metavar=metavar, help=shown
        )
        if "list[" in metavar:  # --KEY+ VALUE: append VALUE to the list
            parser.add_argument(f"--{key}+", **layer, const=f"{key}+", help=argparse.SUPPRESS)


def config_from_flags(namespace: Any) -> bench.BenchConfig:
    """:func:`load_config` of the flags :func:`add_config_flags` recorded."""
    layers = namespace.get("layers") or []
    files = [value for key, value in layers if key == "--config"]
    return load_config(files, [(key, value) for key, value in layers if key != "--config"])


def merge(base: Any, layer: Any) -> Any:
    """``layer`` over ``base``: mappings merge key by key, any other value replaces."""
    if not (isinstance(base, dict) and isinstance(layer, dict)):
        return copy.deepcopy(layer)
    return base | {key: merge(base.get(key), value) for key, value in layer.items()}


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", yaml.safe_load("value"))``, or a ``ConfigError``."""
    key, sep, raw = text.partition("=")
    try:
        if sep and key.strip():
            return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err
    raise ConfigError(f"--set expects KEY=VALUE (e.g. train.optim.lr=0.01), got {text!r}")


def validate(config: bench.BenchConfig) -> None:
    """Check the values together, fill default labels, build every loss variant and its cells."""
    from wsi_ncmi.bench.plan import Cell, train_config_for
    from wsi_ncmi.bench.suite import expand_grid
    from wsi_ncmi.features.config import ExtractConfig
    from wsi_ncmi.losses import build_loss, list_losses
    from wsi_ncmi.manifest import LABELS
    from wsi_ncmi.mil import check_aggregator, list_aggregators
    from wsi_ncmi.synth.presets import PRESETS

    sweep, data, stats, rule = config.sweep, config.data, config.stats, bench.LABEL.pattern
    require("name", config.name, bool(bench.LABEL.match(config.name)), f"like {rule}")
    for kind, entries, names in (
        ("losses", sweep.losses, list_losses()),
        ("models", sweep.models, list_aggregators()),
    ):
        require(f"sweep.{kind}", entries, bool(entries), "a non-empty list")
        for entry in entries:
            require(f"sweep.{kind}: name", entry.name, entry.name in names, f"one of {names}")
            entry.label = entry.label or entry.name
            ok = bool(bench.LABEL.match(entry.label))
            require(f"sweep.{kind}: label", entry.label, ok, f"like {rule}")
        labels = [e.label for e in entries]
        require(f"sweep.{kind} labels", labels, len(set(labels)) == len(labels), "distinct")
    seeds, tuning, losses = sweep.seeds, sweep.tuning, [e.label for e in sweep.losses]
    require("sweep.seeds", seeds, len(set(seeds)) == len(seeds) > 0, "distinct and non-empty")
    for role in ("baseline", "treatment"):
        label = getattr(sweep, role)
        require(f"sweep.{role}", label, label in losses, f"one of the loss labels {losses}")
    for name in sweep.splits:
        require("sweep.splits: a name", name, bool(bench.LABEL.match(name)), f"like {rule}")
    named = {f"sweep.splits.{name}": split for name, split in sweep.splits.items()}
    for where, split in {"sweep.split": sweep.split, **named}.items():
        require(f"{where}.file", split.file, split.file is None, "null: one is written per seed")
    for entry in sweep.losses:
        for key, values in entry.grid.items():
            where, (head, _, rest) = f"sweep.losses[{entry.label}].grid", key.partition(".")
            ok = head in ("kwargs", *bench.TRAIN_SECTIONS) and bool(rest)
            require(f"{where}: a key", key, ok, "'kwargs.<arg>' or '<train section>.<key>'")
            require(f"{where}.{key}", values, bool(values), "a non-empty list")
    ok = seeds[0] in tuning.seeds and set(tuning.seeds) <= set(seeds)
    if any(e.grid for e in sweep.losses):
        subset = f"a subset of sweep.seeds {seeds} holding its first (the one with heatmaps)"
        require("sweep.tuning.seeds", tuning.seeds, ok, subset)
    models = [m.label for m in sweep.models]
    ok = tuning.models is None or (bool(tuning.models) and set(tuning.models) <= set(models))
    require("sweep.tuning.models", tuning.models, ok, f"null or some of {models}")
    treatments = [sweep.treatment, *sweep.treatments]
    require("sweep.treatments", sweep.treatments, set(treatments) <= set(losses), "loss labels")
    ok = set(sweep.baselines) <= set(losses) - set(treatments)
    require("sweep.baselines", sweep.baselines, ok, f"loss labels but {treatments}")
    require("jobs", config.jobs, config.jobs >= 1, ">= 1")
    threads = config.torch_threads
    require("torch_threads", threads, threads is None or threads >= 1, ">= 1 or null")
    require("stats.bootstrap", stats.bootstrap, stats.bootstrap >= 100, ">= 100")
    require("stats.alpha", stats.alpha, 0.0 < stats.alpha < 1.0, "in (0, 1)")
    trains = [("train", config.train)]
    trains += [(f"sweep.losses[{i}].train", e.train) for i, e in enumerate(sweep.losses)]
    trains += [(f"sweep.models[{i}].train", e.train) for i, e in enumerate(sweep.models)]
    for where, train in trains:
        known(train, list(bench.TRAIN_SECTIONS), where, "sections")
        owned = sorted(set(train.get("data") or {}) & set(bench.BENCH_OWNED_DATA))
        if owned:
            raise ConfigError(f"{where}.data must not set {owned}: set them in the data section")
    extract, owned_extract = config.prepare.extract, bench.BENCH_OWNED_EXTRACT
    names = [f.name for f in dataclasses.fields(ExtractConfig) if f.name not in owned_extract]
    known(extract, names, "prepare.extract")
    build(ExtractConfig, {"coords_dir": "", "out_dir": "", **extract}, "prepare.extract")
    if data.synth is not None:
        preset = data.synth.preset
        require("data.synth.preset", preset, preset in PRESETS, f"one of {sorted(PRESETS)}")
        cohort = Path(data.slide_dir or "<data.slide_dir>", "manifest.csv")
        ok = Path(data.manifest) == cohort
        require("data.synth: data.manifest", data.manifest, ok, str(cohort))
    for model in sweep.models:  # in_dim is the features' width, unknown until then
        try:
            check_aggregator(model.name, in_dim=1, num_classes=len(LABELS), **model.kwargs)
        except ConfigError as err:
            raise ConfigError(f"sweep.models[{model.label}].kwargs: {err}") from err
    for entry in config.sweep.losses:
        for variant in expand_grid(entry):
            try:
                build_loss(variant.name, num_classes=len(LABELS), **variant.kwargs)
            except ConfigError as err:
                raise ConfigError(f"sweep.losses[{variant.label}].kwargs: {err}") from err
            for model in config.sweep.models:
                cell = Cell(variant, model, config.sweep.seeds[0], 0, "", (), "")
                train_config_for(config, cell, Path())


def _options(config: Any, where: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(dotted key, type hint, default)`` of every field of ``config`` and of its sections."""
    for name, hint in typing.get_type_hints(type(config)).items():
        key, value = f"{where}{name}", getattr(config, name)
        yield key, hint, value
        section = [a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)]
        if section and typing.get_origin(hint) not in (list, dict):
            yield from _options(value or typing.cast(type, section[0])(), f"{key}.")


class _Layer(argparse.Action):
    """An option of the config, recorded in order as ``(key, value)`` for ``load_config``."""

    def __init__(self, *args: Any, typehint: Any = None, **kwargs: Any) -> None:
        kwargs.update(dest="layers", default=argparse.SUPPRESS)
        super().__init__(*args, **kwargs)
        self._typehint = typehint  # read by expand_argv (true/false alone, lists as words)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        key, value = str(self.const), str(values)
        if key == "--set":
            key, value = parse_override(value)
        elif key != "--config" and self._typehint is not str:  # YAML, also for --KEY+
            value = parse_override(f"{key}={value}")[1]
        namespace["layers"] = [*namespace.get("layers", []), (key, value)]
