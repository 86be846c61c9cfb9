"""Each stage's settings check their own values when they are built (``__post_init__``).

A library caller gets the error the command line gives, before any work: the CLIs only
parse.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.losses import CentroidSchedule
from wsi_ncmi.tiling.job import TilingConfig
from wsi_ncmi.tiling.run import run_tiling
from wsi_ncmi.train.config import (
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SplitConfig,
    TrainerConfig,
)

BACKENDS = "auto, openslide, tiffslide, tiledecode, cucim"
COORDS, OUT = Path("c"), Path("o")
CASES: dict[str, tuple[Callable[[], object], str]] = {
    "thumb": (
        lambda: TilingConfig(out_dir="o", thumb_size_px=8),
        "--thumb_size_px must be an integer ≥ 16 px, got 8",
    ),
    "mpp": (
        lambda: TilingConfig(out_dir="o", mpp_override=500.0),
        "--mpp_override must be a level-0 µm/px in [0.05, 50], got 500.0",
    ),
    "tile-backend": (
        lambda: TilingConfig(out_dir="o", backend="pillow"),
        f"--backend must be one of {BACKENDS}, got 'pillow'",
    ),
    "bad-fraction": (
        lambda: ExtractConfig(COORDS, OUT, max_bad_fraction=3.0),
        "--max_bad_fraction must be in [0, 1], got 3.0",
    ),
    "extract-workers": (
        lambda: ExtractConfig(COORDS, OUT, workers=-1),
        "--workers must be >= 0, got -1",
    ),
    "lr": (lambda: OptimConfig(lr=0.0), "optim.lr must be > 0, got 0.0"),
    "batch": (lambda: DataConfig(batch_size=0), "data.batch_size must be >= 1, got 0"),
    "train-workers": (lambda: DataConfig(num_workers=-2), "data.num_workers must be >= 0, got -2"),
    "epochs": (lambda: TrainerConfig(max_epochs=0), "trainer.max_epochs must be >= 1, got 0"),
    # A misspelt monitor failed only after the first epoch (Lightning), and a score selected
    # with mode min (or val/loss with max) silently kept the worst checkpoint.
    "monitor": (
        lambda: TrainerConfig(monitor="val/macro_f1_calbrated"),
        "trainer.monitor must be one of ['val/macro_f1_calibrated', 'val/macro_f1', "
        "'val/balanced_accuracy', 'val/accuracy', 'val/loss', 'val/ncmi', 'val/cmi'], "
        "got 'val/macro_f1_calbrated'",
    ),
    "accelerator": (  # Lightning refused it with a traceback once the data was loaded
        lambda: TrainerConfig(accelerator="gpuu"),
        "trainer.accelerator must be one of ['auto', 'cpu', 'gpu', 'cuda', 'mps', 'tpu'], got "
        "'gpuu'",
    ),
    "mode": (
        lambda: TrainerConfig(monitor="val/loss"),
        "trainer.mode must be 'min' for val/loss, got 'max'",
    ),
    # Split fields that need no manifest are checked when the split is built, so that a
    # benchmark refuses them before it tiles and extracts (it made the folds only after).
    "split-preset": (
        lambda: SplitConfig(kind="fixed", preset="nope"),
        "split.preset must be one of ['c17_train012_test34', 'wilds'] or null, got 'nope'",
    ),
    "split-fixed": (
        lambda: SplitConfig(kind="fixed", train_centers=[0, 1]),
        "fixed splits need a preset or non-empty train_centers and test_centers, got "
        "preset=None, train_centers=[0, 1], test_centers=None",
    ),
    "split-fraction": (
        lambda: SplitConfig(val_fraction=1.5),
        "split.val_fraction must be in (0, 1), got 1.5",
    ),
    "model-kwargs": (
        lambda: ModelConfig("abmil", {"hidden_dm": 8}),
        "model: invalid arguments for aggregator 'abmil': unknown 'hidden_dm' (did you mean "
        "'hidden_dim'?); it takes ['attention_dim', 'class_head', 'dropout', 'hidden_dim', "
        "'in_dim', 'num_classes']",
    ),
    "loss-kwargs": (
        lambda: LossConfig("ncmi_mil", {"tempreature": 0.2}),
        "loss: invalid arguments for loss 'ncmi_mil': unknown 'tempreature' (did you mean "
        "'temperature'?); it takes ['anchors', 'center_decay', 'feature_dim', 'form', 'head', "
        "'num_classes', 'schedule', 'temperature']",
    ),
    "split-folds": (
        lambda: SplitConfig(kind="kfold", num_folds=1),
        "split.num_folds must be >= 2, got 1",
    ),
    "damping": (
        lambda: CentroidSchedule(damping=0.0),
        "schedule.damping must be in (0, 1], got 0.0",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_value_is_refused_when_the_settings_are_built(case: str) -> None:
    build, message = CASES[case]
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value) == message


def test_a_config_for_another_machine_can_be_built_and_is_checked_when_run(
    tmp_path: Path,
) -> None:
    # The coords folder is a fact of the host that runs it, not a value: not checked
    # when the config is built.
    config = ExtractConfig(tmp_path / "not-yet-tiled", tmp_path / "out")
    with pytest.raises(ConfigError, match="--coords_dir must be a directory"):
        config.check_environment()


def test_run_tiling_refuses_zero_workers_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--workers must be an integer ≥ 1, got 0"):
        run_tiling([], TilingConfig(out_dir=str(tmp_path / "out")), workers=0)
    assert not (tmp_path / "out").exists()
