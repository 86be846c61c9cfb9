"""The typed configuration of ``wsi-bench``: defaults here, then a YAML file, then overrides.

A benchmark is a sweep of losses × aggregators × seeds over the folds of one split. Its
YAML file (``configs/bench/*.yaml``) has the sections of :class:`BenchConfig`, which
embeds the stages' own dataclasses (``wsi-tile``'s grid, ``wsi-train``'s split); the
``train`` section holds overrides of ``wsi-train``'s own configuration sections
(:class:`wsi_ncmi.train.config.TrainConfig`: ``data``, ``optim``, ``trainer``,
``report``), so the commands share one source of truth for their settings.

The dataclasses are read by jsonargparse, as every ``wsi-*`` command's options are
(:mod:`wsi_ncmi.bench.parser`, shared by ``wsi-bench`` and
:func:`~wsi_ncmi.bench.parser.load_config`). Every key is checked: an unknown key, a
wrong type or an out-of-range value raises :class:`~wsi_ncmi.errors.ConfigError` naming
the key. Overrides use dotted keys
(``--set train.trainer.max_epochs=5``) whose values are parsed as YAML.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsi_ncmi.bench.typed import parse_override, set_dotted
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.tiling.grid import GridParams
from wsi_ncmi.train.config import SplitConfig

__all__ = [
    "BenchConfig",
    "ConfigError",
    "parse_override",
    "set_dotted",
    "to_dict",
]

#: Sections of ``TrainConfig`` that the ``train`` section may override.
TRAIN_SECTIONS = ("data", "optim", "trainer", "report")
#: ``TrainConfig.data`` fields owned by the benchmark (set from :class:`BenchData`).
BENCH_OWNED_DATA = ("manifest", "features_root", "encoder", "slide_dir")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class SynthSource:
    """Generate the slides first: a synthetic cohort (``wsi-synth-cohort``) in ``slide_dir``.

    Attributes:
        preset: Size preset (:data:`wsi_ncmi.synth.PRESETS`), e.g. ``bench``.
        seed: Generator seed.
        manifest: The manifest whose slides are twinned (names, patients, hospitals,
            labels); the cohort's own manifest is written to ``<slide_dir>/manifest.csv``.
        subset: Slides per hospital (``null``: every slide of the manifest).
        workers: Generator processes (``null``: cores available).
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
        manifest: Slide manifest CSV (slide_id, patient_id, center, label).
        features_root: Extraction root: features in ``<root>/features/<encoder>/``; when
            slides are given, their coords go to ``<root>/coords/`` too.
        encoder: Encoder name of the features.
        slide_dir: Slide root in the CAMELYON layout (``center_K/<slide_id>.tif``). When
            set and ``prepare.enabled``, missing slides are tiled and extracted first;
            it also gives the attention heatmaps their thumbnails.
        synth: Generate a synthetic cohort into ``slide_dir`` first (resumable); then
            ``manifest`` must be ``<slide_dir>/manifest.csv``.
    """

    manifest: str = "data_manifests/camelyon17.csv"
    features_root: str = "outputs/camelyon17"
    encoder: str = "resnet50-trunc"
    slide_dir: str | None = None
    synth: SynthSource | None = None


#: ``ExtractConfig`` fields the benchmark sets itself (from ``data`` and ``progress``).
BENCH_OWNED_EXTRACT = ("coords_dir", "out_dir", "encoder", "progress")
#: The benchmark's defaults for ``prepare.extract`` (a failing slide is recorded and the
#: sweep goes on without it, as ``wsi-extract`` does by default).
BENCH_EXTRACT_DEFAULTS: dict[str, Any] = {"skip_errors": True}


@dataclass
class PrepareConfig:
    """Tiling and extraction of missing slides (used only when ``data.slide_dir`` is set).

    The stages' own configurations, not copies: ``grid`` is ``wsi-tile``'s
    :class:`~wsi_ncmi.tiling.GridParams` (``--grid.*``) and ``extract`` holds
    ``wsi-extract``'s :class:`~wsi_ncmi.features.config.ExtractConfig` fields (the same names
    as its flags), so each setting has one name and one default.

    Attributes:
        enabled: Run tile → extract for slides without features.
        grid: The patch grid (µm/px, patch size, overlap, minimum tissue fraction).
        tile_workers: Tiling processes (``null``: cores available).
        extract: ``ExtractConfig`` fields other than the folders and the encoder (e.g.
            ``{device: cpu, batch_size: 64, workers: 0, random_init: true}``), over
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
        name: A :func:`wsi_ncmi.losses.list_losses` name.
        kwargs: Its constructor arguments.
        label: Column name in the tables (default: ``name``); distinct variants of one
            loss (an ablation) need distinct labels.
        train: Overrides of the ``train`` sections for this loss only (e.g. its own
            ``optim.lr`` or ``data.batch_size``, as chosen on validation), applied over
            the sweep-wide ``train`` section.
        grid: Settings tuned on validation: ``{"kwargs.<arg>" or "<section>.<key>":
            [values]}`` (e.g. ``{"optim.lr": [1e-3, 3e-3], "kwargs.gamma": [1, 2]}``).
            Every combination trains on the tuning seeds; the one with the best mean
            validation score (``sweep.tuning.metric``) is then trained on every seed
            (see :mod:`wsi_ncmi.bench.suite`).
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
        name: A :func:`wsi_ncmi.mil.list_aggregators` name.
        kwargs: Constructor arguments other than ``in_dim``/``num_classes``.
        label: Name in the tables (default: ``name``).
        train: Overrides of the ``train`` sections for this aggregator only (e.g.
            ``{data: {max_patches_train: 128}}`` for a costly one), applied over the
            sweep-wide ``train`` section and under a loss's own ``train``.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchSplit(SplitConfig):
    """The split scheme: ``wsi-train``'s ``SplitConfig`` plus the seed of the shuffles.

    The fields are :class:`~wsi_ncmi.train.config.SplitConfig`'s. The benchmark writes
    one split file per seed (``<bench>/splits/seed<k>.json``), so ``file`` must stay
    unset. ``val_fraction`` defaults to 0.2, as in ``wsi-train``.

    Attributes:
        seed: Seed of the patient shuffles (``null``: each training seed makes its own
            split, so seed variance includes the validation carve).
    """

    seed: int | None = None


@dataclass
class TuningConfig:
    """How grid settings are chosen (validation only).

    Attributes:
        seeds: Seeds the grid trains on (a subset of ``sweep.seeds``, whose cells are
            then reused).
        metric: Key of a cell's validation record (``val`` in ``result.json``), higher
            is better; averaged over the tuning seeds and every fold of the split.
        models: Labels of the aggregators the grid trains on (``null``: every one).
            The others take, per loss and fold, the variant chosen on the first of
            them, so every loss still gets the same budget at a fraction of the cost.
    """

    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "macro_f1_calibrated"
    models: list[str] | None = None


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
        treatments: Further treatments, each also compared with the best baseline (e.g.
            ``ncmi_authors``); Holm's correction runs over every treatment × aggregator.
        splits: Named split schemes run one after the other (e.g. ``loho`` and
            ``fixed``), each in ``<out_dir>/<name>/`` with its own report; when given,
            ``split`` is not used.
        tuning: How the losses' ``grid`` settings are chosen.
        baselines: Labels that compete for "best baseline" against the treatments (the
            best on validation, per aggregator; empty: every loss but the treatments).
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
        quick: Dotted overrides applied by ``--quick`` (a smaller sweep of the same
            design, e.g. ``{"sweep.seeds": [0, 1]}``).
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
