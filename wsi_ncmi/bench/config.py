"""The typed configuration of ``wsi-bench``, and :func:`build`, which types plain data into it.

A benchmark sweeps losses × aggregators × seeds over the folds of a split. Its YAML file
(``configs/bench/*.yaml``) has the sections of :class:`BenchConfig`, which embeds the
stages' own dataclasses (``wsi-tile``'s grid, ``wsi-train``'s split). ``train`` holds
partial overrides of ``wsi-train``'s sections (:data:`TRAIN_SECTIONS`) and
``prepare.extract`` of ``wsi-extract``'s fields, checked against those dataclasses when
the config is loaded (:func:`wsi_ncmi.bench.parser.load_config`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.tiling.grid import GridParams
from wsi_ncmi.train.config import SplitConfig

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")

#: Sections of ``TrainConfig`` that a ``train`` section may override.
TRAIN_SECTIONS = ("data", "optim", "trainer", "report")
#: ``TrainConfig.data`` fields owned by the benchmark (set from :class:`BenchData`).
BENCH_OWNED_DATA = ("manifest", "features_root", "encoder", "slide_dir")
#: ``ExtractConfig`` fields the benchmark sets itself (from ``data`` and ``progress``).
BENCH_OWNED_EXTRACT = ("coords_dir", "out_dir", "encoder", "progress")
#: The benchmark's defaults for ``prepare.extract`` (a failing slide is recorded and the
#: sweep goes on without it, as ``wsi-extract`` does by default).
BENCH_EXTRACT_DEFAULTS: dict[str, Any] = {"skip_errors": True}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class SynthSource:
    """Generate the slides first: a synthetic cohort (``wsi-synth-cohort``) in ``slide_dir``.

    Attributes:
        preset: Size preset (:data:`wsi_ncmi.synth.PRESETS`).
        seed: Generator seed.
        manifest: The manifest whose slides are twinned; the cohort's own manifest is
            written to ``<slide_dir>/manifest.csv``.
        subset: Slides per hospital (``null``: all). workers: Processes (``null``: cores).
    """

    preset: str = "bench"
    seed: int = 0
    manifest: str = "data_manifests/camelyon17.csv"
    subset: int | None = None
    workers: int | None = None


@dataclass
class BenchData:
    """Where the slides, the manifest and the features are.

    Attributes:
        manifest: Slide manifest CSV. encoder: Encoder name of the features.
        features_root: Extraction root (``<root>/features/<encoder>/``, ``<root>/coords/``).
        slide_dir: Slide root (``center_K/<slide_id>.tif``): with ``prepare.enabled``,
            missing slides are tiled and extracted first; heatmaps get thumbnails.
        synth: Generate a synthetic cohort into ``slide_dir`` first (resumable); then
            ``manifest`` must be ``<slide_dir>/manifest.csv``.
    """

    manifest: str = "data_manifests/camelyon17.csv"
    features_root: str = "outputs/camelyon17"
    encoder: str = "resnet50-trunc"
    slide_dir: str | None = None
    synth: SynthSource | None = None


@dataclass
class PrepareConfig:
    """Tiling and extraction of missing slides (only when ``data.slide_dir`` is set).

    Attributes:
        enabled: Run tile → extract for slides without features.
        grid: ``wsi-tile``'s :class:`~wsi_ncmi.tiling.GridParams`.
        tile_workers: Tiling processes (``null``: cores available).
        extract: ``wsi-extract``'s ``ExtractConfig`` fields but the folders, the encoder
            and ``progress`` (e.g. ``{device: cpu, batch_size: 64}``), over
            :data:`BENCH_EXTRACT_DEFAULTS`.
    """

    enabled: bool = True
    grid: GridParams = field(default_factory=GridParams)
    tile_workers: int | None = None
    extract: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossEntry:
    """One loss of the sweep.

    Attributes:
        name: A :func:`wsi_ncmi.losses.list_losses` name. kwargs: Its arguments.
        label: Column name in the tables (default: ``name``); variants need distinct ones.
        train: Overrides of the ``train`` sections for this loss (over the sweep's and the
            aggregator's).
        grid: Settings tuned on validation, ``{"kwargs.<arg>" or "<section>.<key>":
            [values]}``: every combination trains on the tuning seeds, the best mean
            validation score then on every seed (:mod:`wsi_ncmi.bench.suite`).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class ModelEntry:
    """One aggregator of the sweep.

    Attributes:
        name: A :func:`wsi_ncmi.mil.list_aggregators` name. kwargs: Its arguments (but
            ``in_dim``/``num_classes``). label: Name in the tables (default: ``name``).
        train: Overrides of the ``train`` sections for this aggregator (over the sweep's,
            under a loss's own).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchSplit(SplitConfig):
    """``wsi-train``'s ``SplitConfig`` (``file`` unset: one split file per seed) plus a seed.

    Attributes:
        seed: Seed of the patient shuffles (``null``: each training seed makes its own).
    """

    seed: int | None = None


@dataclass
class TuningConfig:
    """How grid settings are chosen (validation only).

    Attributes:
        seeds: Seeds the grid trains on (a subset of ``sweep.seeds``, holding the first).
        metric: Key of a cell's validation record, higher is better (mean over seeds, folds).
        models: Aggregator labels the grid trains on (``null``: all); the others take the
            first one's choice per loss and fold.
    """

    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "macro_f1_calibrated"
    models: list[str] | None = None


@dataclass
class SweepConfig:
    """What is swept.

    Attributes:
        losses: Losses. models: Aggregators. seeds: Training seeds (each non-empty).
        split: The split scheme. splits: Named schemes run in turn, each in
            ``<out_dir>/<name>/`` with its own report (then ``split`` is not used).
        baseline: Reference loss label of the headline table. treatment: The loss label
            compared with it. treatments: Further ones, also compared with the best
            baseline (Holm's correction over every treatment × aggregator).
        baselines: Labels competing for "best baseline" on validation (empty: every loss
            but the treatments). tuning: How the losses' ``grid`` settings are chosen.
    """

    losses: list[LossEntry] = field(
        default_factory=lambda: [LossEntry("ce"), LossEntry("ncmi_mil")]
    )
    models: list[ModelEntry] = field(default_factory=lambda: [ModelEntry("abmil")])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    split: BenchSplit = field(default_factory=BenchSplit)
    baseline: str = "ce"
    treatment: str = "ncmi_mil"
    treatments: list[str] = field(default_factory=list)
    splits: dict[str, BenchSplit] = field(default_factory=dict)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    baselines: list[str] = field(default_factory=list)


@dataclass
class StatsConfig:
    """Statistics: paired bootstrap resamples (slides within hospitals), test level, seed."""

    bootstrap: int = 2000
    alpha: float = 0.05
    seed: int = 0


@dataclass
class BenchConfig:
    """Everything ``wsi-bench`` needs.

    Attributes:
        name: Benchmark name; outputs go to ``<output_root>/<name>/``.
        data, prepare, sweep, stats: See :class:`BenchData` and the other sections.
        train: Overrides of ``TrainConfig`` sections, e.g. ``{trainer: {max_epochs: 20}}``.
        jobs: Cells trained at once, each in its own process.
        torch_threads: Torch threads per cell process (``null``: cores / jobs).
        progress: Show the progress bar.
        quick: Dotted overrides applied by ``--quick`` (a smaller sweep of the same design).
    """

    name: str = "bench"
    output_root: str = "outputs/bench"
    data: BenchData = field(default_factory=BenchData)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: StatsConfig = field(default_factory=StatsConfig)
    jobs: int = 1
    torch_threads: int | None = None
    progress: bool = True
    quick: dict[str, Any] = field(default_factory=dict)

    @property
    def out_dir(self) -> Path:
        """``<output_root>/<name>``."""
        return Path(self.output_root) / self.name


def to_dict(config: BenchConfig) -> dict[str, Any]:
    """JSON/YAML-ready form of a configuration."""
    return dataclasses.asdict(config)


def build(cls: type[_T], data: Any, where: str = "") -> _T:
    """Build dataclass ``cls`` from plain data (``None``: the defaults), typing every value.

    Nested dataclasses, lists and mappings of them are built too; an ``int`` where a
    ``float`` is due, and a numeric string where a number is, are converted.

    Args:
        cls: The dataclass.
        data: Its mapping.
        where: Its dotted name, for messages.

    Raises:
        ConfigError: Naming the key: an unknown key, a wrong type, or a value the
            dataclass itself refuses.
    """
    if not isinstance(data, Mapping | None):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    known(data or {}, [f.name for f in dataclasses.fields(cls)], where or "config")
    hints = _hints(cls)
    values = {k: _typed(hints[k], v, f"{where}.{k}".lstrip(".")) for k, v in (data or {}).items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a missing key, or the class's own checks
        raise ConfigError(f"{where or 'config'}: {err}") from err


def known(data: Mapping[str, Any], names: list[str], where: str, what: str = "keys") -> None:
    """Raise ``"<where> has unknown keys [...]; allowed: <names>"`` for keys not in ``names``."""
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        raise ConfigError(f"{where} has unknown {what} {unknown}; allowed: {names}")


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _typed(hint: Any, value: Any, where: str) -> Any:
    """``value`` as type ``hint`` (see :func:`build`), or a ``ConfigError`` naming ``where``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed(arg, value, where)
            except ConfigError as err:
                if dataclasses.is_dataclass(arg) and isinstance(value, Mapping):
                    raise err
    elif hint is Any or (origin is Literal and value in args):
        return value
    elif origin in (list, tuple) and isinstance(value, list | tuple):
        items = [_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    elif origin is dict and isinstance(value, Mapping):
        return {k: _typed(args[1], v, f"{where}.{k}") for k, v in value.items()}
    elif hint in (int, float) and isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return hint(value)
        except ValueError:
            pass
    elif type(value) is hint or (hint is Path and isinstance(value, str)):
        return Path(value) if hint is Path else value
    shown = origin if origin in (list, dict, tuple) else hint
    raise ConfigError(f"{where}: Expected a {shown}. Got value: {value}")


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"`` (``"a.b+"``: append to the list).

    Missing or ``null`` mappings on the way are created.

    Raises:
        ConfigError: A key on the way holds something other than a mapping.
    """
    *heads, last = key.removesuffix("+").split(".")
    node = data
    for i, part in enumerate(heads):
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            where = ".".join(heads[: i + 1])
            raise ConfigError(f"cannot set {key!r}: {where!r} is {node!r}, not a mapping")
    node[last] = [*(node.get(last) or []), value] if key.endswith("+") else value
