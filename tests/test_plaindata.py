"""Plain data typed into the configuration dataclasses (:mod:`wsi_ncmi.plaindata`).

One typer serves bench's YAML layers, a run's saved ``config.json`` (``wsi-export-model``)
and a bundle's tiling record (``wsi-predict``), with the same one-line errors.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.plaindata import build


def test_one_dataclass_is_typed_by_build() -> None:
    from wsi_ncmi.tiling import GridParams
    from wsi_ncmi.train.config import OptimConfig, TrainerConfig

    optim = build(OptimConfig, {"lr": 1, "weight_decay": 0}, "train.optim")
    assert (optim.lr, optim.weight_decay) == (1.0, 0.0)
    assert (type(optim.lr), type(optim.weight_decay)) == (float, float)
    with pytest.raises(ConfigError, match=r"^train\.trainer\.max_epochs: Expected a <class 'int'>"):
        build(TrainerConfig, {"max_epochs": "many"}, "train.trainer")
    with pytest.raises(ConfigError, match=r"^train\.trainer has unknown keys \['max_epoch'\]"):
        build(TrainerConfig, {"max_epoch": 3}, "train.trainer")
    with pytest.raises(ConfigError, match=r"^prepare\.grid: min_tissue must be a fraction"):
        build(GridParams, {"min_tissue": 2.0}, "prepare.grid")
    with pytest.raises(ConfigError, match=r"^train\.optim must be a mapping, got 3"):
        build(OptimConfig, 3, "train.optim")


def _saved_run_config(tmp_path: Path, edit: dict[str, dict[str, object]]) -> Path:
    from wsi_ncmi.train.config import TrainConfig

    record = dataclasses.asdict(TrainConfig(seed=7))
    for section, values in edit.items():
        record[section].update(values)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"version": "0", "config": record}))
    return path


def test_a_saved_run_config_is_read_back_typed(tmp_path: Path) -> None:
    from wsi_ncmi.train.config import TrainConfig
    from wsi_ncmi.train.export import config_from_json

    config = config_from_json(_saved_run_config(tmp_path, {"optim": {"lr": 1}}))
    assert config == dataclasses.replace(
        TrainConfig(seed=7), optim=dataclasses.replace(TrainConfig().optim, lr=1.0)
    )
    assert type(config.optim.lr) is float  # JSON's 1 read as the float the field is


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ({"trainer": {"max_epochs": "x"}}, "config.trainer.max_epochs: Expected a <class 'int'>"),
        ({"trainer": {"max_epoch": 3}}, "config.trainer has unknown keys ['max_epoch']"),
    ],
)
def test_a_saved_run_config_with_a_bad_value_names_its_key(
    edit: dict[str, dict[str, object]], needle: str, tmp_path: Path
) -> None:
    from wsi_ncmi.train.export import config_from_json

    with pytest.raises(ConfigError, match="cannot read the run configuration") as err:
        config_from_json(_saved_run_config(tmp_path, edit))
    assert needle in str(err.value)


def test_a_bundle_tiling_record_is_typed_and_checked() -> None:
    from wsi_ncmi.predict.records import TilingRecord
    from wsi_ncmi.train.bundle import BundleError

    record = TilingRecord.from_json(
        {"target_mpp": 0.5, "patch_size_px": 256, "grid": {"target_mpp": 1, "patch_size_px": 256}}
    )
    assert record.grid is not None
    assert type(record.grid.target_mpp) is float
    bad = {"target_mpp": 0.5, "patch_size_px": 256, "grid": {"min_tissue": 2.0}}
    with pytest.raises(BundleError, match=r"tiling\.grid: min_tissue must be a fraction"):
        TilingRecord.from_json(bad)
