"""The sweep plan: one :class:`Cell` per (loss, aggregator, seed, fold), and its train config.

Splits are made once per split seed and written to ``<bench>/splits/seed<k>.json``, so
every loss and aggregator of one seed sees the same train/val/test slides: the
comparison is paired. A cell's :func:`cell_hash` digests its resolved training
configuration and its split; a finished cell whose stored hash differs from the plan's
was made with other settings and is never silently reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.bench.config import BenchConfig, LossEntry, ModelEntry
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.plaindata import build

if TYPE_CHECKING:
    from wsi_ncmi.train.config import TrainConfig

CELL_SCHEMA = "wsi-ncmi/bench-cell/2"


@dataclass(frozen=True)
class Cell:
    """One training run of the sweep.

    Attributes:
        loss: The loss entry.
        model: The aggregator entry.
        seed: Training seed.
        fold_index: Index of the fold in the split file.
        fold_name: e.g. ``loho_center2``.
        test_centers: Hospitals of the test part.
        splits_file: The split file of this seed.
    """

    loss: LossEntry
    model: ModelEntry
    seed: int
    fold_index: int
    fold_name: str
    test_centers: tuple[int, ...]
    splits_file: str

    @property
    def cell_id(self) -> str:
        """``<loss>__<model>__seed<k>__<fold>`` (also the cell's folder name)."""
        return f"{self.loss.label}__{self.model.label}__seed{self.seed}__{self.fold_name}"


def split_seed(config: BenchConfig, seed: int) -> int:
    """The seed of the split used by training seed ``seed``."""
    return seed if config.sweep.split.seed is None else config.sweep.split.seed


def write_splits(config: BenchConfig) -> dict[int, Path]:
    """Make (or reuse) the split file of every split seed.

    An existing split file is reused only if it is identical to the one the
    configuration makes now, so a changed manifest or split setting cannot mix folds.

    Returns:
        ``{training seed: split file}``.

    Raises:
        ConfigError: Bad split settings, or an existing split file that differs.
    """
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.train.splits import SPLITS_SCHEMA, save_splits, splits_for

    rows = read_manifest(config.data.manifest)
    split = config.sweep.split
    out: dict[int, Path] = {}
    for seed in config.sweep.seeds:
        k = split_seed(config, seed)
        path = config.out_dir / "splits" / f"seed{k}.json"
        if k not in {split_seed(config, s) for s in out}:
            splits = splits_for(rows, split, k)
            fresh = {"schema": SPLITS_SCHEMA, **dataclasses.asdict(splits)}
            fresh = json.loads(json.dumps(fresh))  # tuples → lists, as in the file
            if path.is_file():
                if json.loads(path.read_text()) != fresh:
                    raise ConfigError(
                        f"{str(path)!r} holds another split than the configuration makes "
                        "(manifest or split settings changed); use another bench name"
                    )
            else:
                save_splits(splits, path)
        out[seed] = path
    return out


def plan_cells(config: BenchConfig, splits_files: dict[int, Path]) -> list[Cell]:
    """Every cell of the sweep, seeds outermost (so early results cover all losses).

    Raises:
        ConfigError: Fold indices outside the split.
    """
    from wsi_ncmi.train.splits import load_splits

    cells = []
    for seed in config.sweep.seeds:
        splits = load_splits(splits_files[seed])
        selected = config.sweep.split.folds
        indices = list(range(len(splits.folds))) if selected is None else list(selected)
        bad = [k for k in indices if not 0 <= k < len(splits.folds)]
        if bad:
            raise ConfigError(f"sweep.split.folds must be in [0, {len(splits.folds)}), got {bad}")
        for k in indices:
            fold = splits.folds[k]
            for model in config.sweep.models:
                for loss in config.sweep.losses:
                    cells.append(
                        Cell(
                            loss,
                            model,
                            seed,
                            k,
                            fold.name,
                            tuple(fold.test_centers),
                            str(splits_files[seed]),
                        )
                    )
    return cells


def train_config_for(config: BenchConfig, cell: Cell, cell_dir: Path) -> TrainConfig:
    """The ``TrainConfig`` of one cell (``wsi-train``'s defaults + the bench overrides).

    Each ``train`` section is layered: ``wsi-train``'s defaults, the sweep-wide ``train``,
    the aggregator's own ``train``, then the loss's own ``train`` (a grid variant's).

    Attention heatmaps are drawn for the first seed only (the others set
    ``report.max_heatmaps = 0``): they are for looking at, not for statistics.

    Raises:
        ConfigError: A bad key or value in the ``train`` section.
    """
    from wsi_ncmi.train.config import (
        DataConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        ReportConfig,
        SplitConfig,
        TrainConfig,
        TrainerConfig,
    )

    sections: dict[str, Any] = {}
    for name, cls in (
        ("data", DataConfig),
        ("optim", OptimConfig),
        ("trainer", TrainerConfig),
        ("report", ReportConfig),
    ):
        values = (
            dataclasses.asdict(cls())
            | dict(config.train.get(name) or {})
            | dict(cell.model.train.get(name) or {})
            | dict(cell.loss.train.get(name) or {})
        )
        if cell.loss.train.get(name):
            where = f"sweep.losses[{cell.loss.label}].train.{name}"
        elif cell.model.train.get(name):
            where = f"sweep.models[{cell.model.label}].train.{name}"
        else:
            where = f"train.{name}"
        sections[name] = build(cls, values, where)
    data = config.data
    sections["data"] = dataclasses.replace(
        sections["data"],
        manifest=data.manifest,
        features_root=data.features_root,
        encoder=data.encoder,
        slide_dir=data.slide_dir,
    )
    if cell.seed != config.sweep.seeds[0]:
        sections["report"] = dataclasses.replace(sections["report"], max_heatmaps=0)
    split = config.sweep.split
    return TrainConfig(
        out_dir=str(cell_dir),
        seed=cell.seed,
        resume=True,
        split=SplitConfig(kind=split.kind, file=cell.splits_file, folds=[cell.fold_index]),
        model=ModelConfig(cell.model.name, dict(cell.model.kwargs)),
        loss=LossConfig(cell.loss.name, dict(cell.loss.kwargs)),
        **sections,
    )


#: Training options added after sweeps had been run, with the value that reproduces the
#: behaviour from before they existed: at that value they are left out of the digest, so
#: cells finished before they existed are still reused (and none is reused wrongly).
LATER_OPTIONS_NEUTRAL: dict[tuple[str, str], object] = {
    ("data", "slide_norm"): "none",
    ("trainer", "max_steps"): None,
    ("trainer", "patience_steps"): None,
    ("split", "val_scheme"): "patients",
    ("data", "include_empty"): False,
}

#: Version of what a cell's result means, in every digest. Bump it when a code change alters
#: the results of unchanged settings, so finished cells are rerun; refactors that leave
#: results unchanged keep it, so finished cells are reused. History: 1 (implicit, no key):
#: up to the full sweep of BENCHMARKS.md; 2: the Q-step runs before validation, so a
#: checkpoint holds the validated state; CLAM-SB keeps its instance branch under
#: feature-head losses.
RESULT_VERSION = 2


def cell_hash(train_config: Any, cell: Cell) -> str:
    """Digest of what determines a cell's result: its training config and its fold."""
    record = dataclasses.asdict(train_config)
    for (section, key), neutral in LATER_OPTIONS_NEUTRAL.items():
        if record.get(section, {}).get(key) == neutral:
            record[section].pop(key)
    record.pop("out_dir", None)
    record.pop("resume", None)
    record["split"].pop("file", None)
    record["fold"] = cell.fold_index
    record["splits_sha256"] = hashlib.sha256(Path(cell.splits_file).read_bytes()).hexdigest()
    record["result_version"] = RESULT_VERSION
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
