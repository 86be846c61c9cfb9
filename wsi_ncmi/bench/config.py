"""The typed configuration of ``wsi-bench`` (keys: ``docs/bench.md``).

It embeds the stages' own dataclasses; ``train`` and ``prepare.extract`` partially override
``wsi-train``'s sections and ``wsi-extract``'s fields (typed by :mod:`wsi_ncmi.plaindata`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.tiling.grid import GridParams
from wsi_ncmi.train.config import SplitConfig

#: Sections of ``TrainConfig`` that a ``train`` section may override.
TRAIN_SECTIONS = ("data", "optim", "trainer", "report")
#: ``TrainConfig.data`` fields owned by the benchmark (set from :class:`BenchData`).
BENCH_OWNED_DATA = ("manifest", "features_root", "encoder", "slide_dir")
#: ``ExtractConfig`` fields the benchmark sets itself (from ``data`` and ``progress``).
BENCH_OWNED_EXTRACT = ("coords_dir", "out_dir", "encoder", "progress")
#: The benchmark's defaults for ``prepare.extract``: a failing slide is left out.
BENCH_EXTRACT_DEFAULTS: dict[str, Any] = {"skip_errors": True}
#: Validation scores a grid chooses by (higher is better; every cell's result keeps them).
Score = Literal["macro_f1_calibrated", "macro_f1", "balanced_accuracy", "accuracy"]
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class SynthSource:
    """A cohort to generate into ``data.slide_dir`` first: ``wsi-synth-cohort``'s settings."""

    preset: str = "bench"
    seed: int = 0
    manifest: str = "data_manifests/camelyon17.csv"
    subset: int | None = None
    workers: int | None = None


@dataclass
class BenchData:
    """The manifest, the features root and encoder, and the slides (then ``prepare`` runs)."""

    manifest: str = "data_manifests/camelyon17.csv"
    features_root: str = "outputs/camelyon17"
    encoder: str = "resnet50-trunc"
    slide_dir: str | None = None
    synth: SynthSource | None = None


@dataclass
class PrepareConfig:
    """Tiling (``wsi-tile``'s grid) and extraction (over :data:`BENCH_EXTRACT_DEFAULTS`)."""

    enabled: bool = True
    grid: GridParams = field(default_factory=GridParams)
    tile_workers: int | None = None
    extract: dict[str, Any] = field(default_factory=dict)


@dataclass
class Entry:
    """A loss or an aggregator of the sweep: its registered name and arguments.

    ``label``: its name in the tables (default: ``name``); ``train``: its own overrides.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossEntry(Entry):
    """A loss (:func:`wsi_ncmi.losses.list_losses`), and its ``grid`` tuned on validation.

    ``{"kwargs.<arg>" or "<section>.<key>": [values]}``: see :mod:`wsi_ncmi.bench.suite`.
    """

    grid: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class ModelEntry(Entry):
    """An aggregator (:func:`wsi_ncmi.mil.list_aggregators`) of the sweep."""


@dataclass
class BenchSplit(SplitConfig):
    """``wsi-train``'s split (``file`` unset), and the seed of its shuffles (``null``: own)."""

    seed: int | None = None


@dataclass
class TuningConfig:
    """Grid settings: the best mean validation ``metric`` over ``seeds``, folds and ``models``."""

    seeds: list[int] = field(default_factory=lambda: [0])
    metric: Score = "macro_f1_calibrated"
    models: list[str] | None = None


@dataclass
class SweepConfig:
    """Losses × models × seeds over the folds of ``split`` (or of each named ``splits``).

    ``treatment`` and ``treatments`` meet ``baseline`` and the best ``baselines`` (on val).
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
    """Paired bootstrap resamples (slides within hospitals), test level and seed."""

    bootstrap: int = 2000
    alpha: float = 0.05
    seed: int = 0


@dataclass
class BenchConfig:
    """Everything ``wsi-bench`` needs; outputs go to ``<output_root>/<name>/``.

    ``train`` overrides ``TrainConfig`` sections.
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


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key = "a.b"`` (``"a.b+"``: append to the list)."""
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
