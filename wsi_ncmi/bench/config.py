"""The typed configuration of ``wsi-bench``: defaults here, then a YAML file, then overrides.

A benchmark is a sweep of losses × aggregators × seeds over the folds of one split. Its
YAML file (``configs/bench/*.yaml``) has the sections of :class:`BenchConfig`; the
``train`` section holds overrides of ``wsi-train``'s own configuration sections
(:class:`wsi_ncmi.train.config.TrainConfig`: ``data``, ``optim``, ``trainer``,
``report``), so the two commands share one source of truth for training settings.

Every key is checked: an unknown key, a wrong type or an out-of-range value raises
:class:`~wsi_ncmi.errors.ConfigError` naming the key, what is allowed and what was
received. Overrides use dotted keys (``--set train.trainer.max_epochs=5``) whose values
are parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wsi_ncmi.errors import ConfigError

#: Sections of ``TrainConfig`` that the ``train`` section may override.
TRAIN_SECTIONS = ("data", "optim", "trainer", "report")
#: ``TrainConfig.data`` fields owned by the benchmark (set from :class:`BenchData`).
BENCH_OWNED_DATA = ("manifest", "features_root", "encoder", "slide_dir")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class BenchData:
    """Where the slides, the manifest and the features are.

    Attributes:
        manifest: Slide manifest CSV (slide_id, patient_id, center, label).
        features_root: Extraction root: features in ``<root>/features/<encoder>/``; when
            slides are given, their coords go to ``<root>/coords/`` too.
        encoder: Encoder name of the features.
        slide_dir: Slide root in the CAMELYON layout (``center_K/<slide_id>.tif``). When
            set and ``prepare.enabled``, missing slides are tiled and extracted first;
            it also gives the attention heatmaps their thumbnails.
    """

    manifest: str = "data_manifests/camelyon17.csv"
    features_root: str = "outputs/camelyon17"
    encoder: str = "resnet50-trunc"
    slide_dir: str | None = None


@dataclass
class PrepareConfig:
    """Tiling and extraction of missing slides (used only when ``data.slide_dir`` is set).

    Attributes:
        enabled: Run tile → extract for slides without features.
        target_mpp: Patch resolution in µm/px.
        patch_size_px: Patch side in pixels at ``target_mpp``.
        min_tissue: Minimum tissue fraction of a kept patch.
        tile_workers: Tiling processes (``null``: cores available).
        weights: Local encoder checkpoint (``null``: the encoder's own source).
        random_init: Random encoder weights (demos only; recorded in the features).
        device: ``cpu``, ``cuda`` or ``auto``.
        batch_size: Patches per extraction batch (``null``: 256 on GPU, 64 on CPU).
        extract_workers: DataLoader workers of the extraction (``null``: automatic).
        allow_mpp_mismatch: Accept a tiling µm/px other than the encoder's.
        skip_errors: Record failing slides and go on (they then lack features).
    """

    enabled: bool = True
    target_mpp: float = 0.5
    patch_size_px: int = 256
    min_tissue: float = 0.25
    tile_workers: int | None = None
    weights: str | None = None
    random_init: bool = False
    device: str = "auto"
    batch_size: int | None = None
    extract_workers: int | None = None
    allow_mpp_mismatch: bool = False
    skip_errors: bool = True


@dataclass
class LossEntry:
    """One loss of the sweep.

    Attributes:
        name: A :func:`wsi_ncmi.losses.list_losses` name.
        kwargs: Its constructor arguments.
        label: Column name in the tables (default: ``name``); distinct variants of one
            loss (an ablation) need distinct labels.
        train: Overrides of the ``train`` sections for this loss only (e.g. its own
            ``optim.lr`` or ``data.batch_size``, as chosen on validation), applied over
            the sweep-wide ``train`` section.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelEntry:
    """One aggregator of the sweep.

    Attributes:
        name: A :func:`wsi_ncmi.mil.list_aggregators` name.
        kwargs: Constructor arguments other than ``in_dim``/``num_classes``.
        label: Name in the tables (default: ``name``).
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass
class BenchSplit:
    """The split scheme (see :func:`wsi_ncmi.train.splits.make_splits`).

    Attributes:
        kind: ``loho`` (default), ``fixed`` or ``kfold``.
        val_fraction: Share of training patients (per stratum) used for validation.
        preset: ``fixed``: a preset name.
        train_centers: ``fixed`` without preset.
        val_centers: ``fixed`` without preset.
        test_centers: ``fixed`` without preset.
        num_folds: ``kfold``: number of folds.
        folds: Fold indices to run (``null``: all).
        seed: Seed of the patient shuffles (``null``: each training seed makes its own
            split, so seed variance includes the validation carve).
    """

    kind: str = "loho"
    val_fraction: float = 0.2
    preset: str | None = None
    train_centers: list[int] | None = None
    val_centers: list[int] | None = None
    test_centers: list[int] | None = None
    num_folds: int = 5
    folds: list[int] | None = None
    seed: int | None = None


@dataclass
class SweepConfig:
    """What is swept.

    Attributes:
        losses: Losses (at least one).
        models: Aggregators (at least one).
        seeds: Training seeds (at least one).
        split: The split scheme.
        baseline: Label of the reference loss of the headline table (``ce``).
        treatment: Label of the loss compared with it (``ncmi_mil``).
    """

    losses: list[LossEntry] = field(
        default_factory=lambda: [LossEntry("ce"), LossEntry("ncmi_mil")]
    )
    models: list[ModelEntry] = field(default_factory=lambda: [ModelEntry("abmil")])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    split: BenchSplit = field(default_factory=BenchSplit)
    baseline: str = "ce"
    treatment: str = "ncmi_mil"


@dataclass
class StatsConfig:
    """Statistics of the comparison.

    Attributes:
        bootstrap: Paired bootstrap resamples (slides, within each hospital).
        alpha: Significance level of the paired tests.
        seed: Seed of the resampling.
    """

    bootstrap: int = 2000
    alpha: float = 0.05
    seed: int = 0


@dataclass
class BenchConfig:
    """Everything ``wsi-bench`` needs.

    Attributes:
        name: Benchmark name; outputs go to ``<output_root>/<name>/``.
        output_root: Parent folder of benchmark outputs.
        data: See :class:`BenchData`.
        prepare: See :class:`PrepareConfig`.
        sweep: See :class:`SweepConfig`.
        train: Overrides of ``TrainConfig`` sections (``data``, ``optim``, ``trainer``,
            ``report``), e.g. ``{"trainer": {"max_epochs": 20}}``.
        stats: See :class:`StatsConfig`.
        jobs: Cells trained at once, each in its own process.
        torch_threads: Torch threads per cell process (``null``: cores / jobs).
        progress: Show the progress bar.
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

    @property
    def out_dir(self) -> Path:
        """``<output_root>/<name>``."""
        return Path(self.output_root) / self.name


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a (simple) type hint, building nested dataclasses."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_type(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def from_dict(cls: type[Any], data: Any, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types.

    Args:
        cls: A dataclass type.
        data: The mapping (``None`` means all defaults).
        where: Dotted name of the section, for messages.

    Returns:
        The instance.

    Raises:
        ConfigError: Unknown key or wrong type.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed: {names}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from err


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"``, creating mappings as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` → ``("a.b", yaml.safe_load("value"))``.

    Raises:
        ConfigError: No ``=`` or unparsable value.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set expects KEY=VALUE (e.g. train.trainer.max_epochs=5), got {text!r}"
        )
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {err}") from err


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> BenchConfig:
    """Defaults, then the YAML file, then dotted overrides; validated.

    Args:
        path: YAML file, or ``None`` for the defaults.
        overrides: ``{"dotted.key": value}`` applied after the file.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: Unreadable file, unknown key, wrong type or invalid value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read bench config {str(path)!r}: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    config = from_dict(BenchConfig, data)
    validate(config)
    return config


def validate(config: BenchConfig) -> None:
    """Check values and fill the default labels.

    Raises:
        ConfigError: The first problem found.
    """
    from wsi_ncmi.losses import list_losses
    from wsi_ncmi.mil import list_aggregators

    if not _LABEL.match(config.name):
        raise ConfigError(f"name must match {_LABEL.pattern}, got {config.name!r}")
    sweep = config.sweep
    for kind, entries, known in (
        ("losses", sweep.losses, list_losses()),
        ("models", sweep.models, list_aggregators()),
    ):
        if not entries:
            raise ConfigError(f"sweep.{kind} must name at least one entry")
        for entry in entries:
            if entry.name not in known:
                raise ConfigError(f"sweep.{kind}: name must be one of {known}, got {entry.name!r}")
            entry.label = entry.label or entry.name
            if not _LABEL.match(entry.label):
                raise ConfigError(
                    f"sweep.{kind}: label must match {_LABEL.pattern}, got {entry.label!r}"
                )
        labels = [e.label for e in entries]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"sweep.{kind} labels must be distinct, got {labels}")
    if not sweep.seeds or len(set(sweep.seeds)) != len(sweep.seeds):
        raise ConfigError(f"sweep.seeds must be distinct and non-empty, got {sweep.seeds}")
    loss_labels = [e.label for e in sweep.losses]
    for role in ("baseline", "treatment"):
        value = getattr(sweep, role)
        if value not in loss_labels:
            raise ConfigError(
                f"sweep.{role} must be one of the loss labels {loss_labels}, got {value!r}"
            )
    if sweep.split.kind not in ("loho", "fixed", "kfold"):
        raise ConfigError(
            f"sweep.split.kind must be loho, fixed or kfold, got {sweep.split.kind!r}"
        )
    if config.jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {config.jobs!r}")
    if config.torch_threads is not None and config.torch_threads < 1:
        raise ConfigError(f"torch_threads must be >= 1 or null, got {config.torch_threads!r}")
    if config.stats.bootstrap < 100:
        raise ConfigError(f"stats.bootstrap must be >= 100, got {config.stats.bootstrap!r}")
    if not 0.0 < config.stats.alpha < 1.0:
        raise ConfigError(f"stats.alpha must be in (0, 1), got {config.stats.alpha!r}")
    overrides = [("train", config.train)] + [
        (f"sweep.losses[{i}].train", entry.train) for i, entry in enumerate(config.sweep.losses)
    ]
    for where, train in overrides:
        unknown = sorted(set(train) - set(TRAIN_SECTIONS))
        if unknown:
            raise ConfigError(
                f"{where} has unknown sections {unknown}; allowed: {list(TRAIN_SECTIONS)}"
            )
        owned = sorted(set(train.get("data") or {}) & set(BENCH_OWNED_DATA))
        if owned:
            raise ConfigError(
                f"{where}.data must not set {owned}: set them in the top-level data section"
            )


def to_dict(config: BenchConfig) -> dict[str, Any]:
    """JSON/YAML-ready form of a configuration."""
    return dataclasses.asdict(config)
