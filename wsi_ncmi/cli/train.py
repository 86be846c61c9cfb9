"""``wsi-train``: attention-MIL training with hospital-aware splits and per-hospital reports.

Layered configuration (jsonargparse over :class:`wsi_ncmi.train.config.TrainConfig`):
defaults, then ``--config FILE.yaml`` (repeatable), then overrides such as
``--trainer.max_epochs 5 --loss.name ce --split.folds '[2]'``. ``--print_config`` shows
the resolved configuration; it is saved as ``<out_dir>/config.yaml`` with every run.

Exit codes (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`): 0 success; 1 training failed
(NaN/inf features or loss, corrupt features file); 2 bad arguments, configuration,
manifest or splits; 3 features missing (run wsi-extract or set ``--data.missing
exclude``); 130 interrupted (resume with ``--resume true``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wsi_ncmi.cli.common import build_from, new_parser, parse, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

    from wsi_ncmi.train.config import TrainConfig

RESUME_HINT = "rerun the same command with --resume true to continue the unfinished folds"


def build_parser() -> ArgumentParser:
    """The jsonargparse parser of :class:`~wsi_ncmi.train.config.TrainConfig`."""
    from wsi_ncmi.train.config import TrainConfig

    parser = new_parser(
        "wsi-train",
        "Train an attention-MIL slide classifier on cached patch features.",
        epilog="example configs: configs/camelyon17/*.yaml, configs/synthetic/demo.yaml\n",
    )
    parser.add_class_arguments(TrainConfig, fail_untyped=True, sub_configs=True)
    parser.add_argument(
        "--workers",
        type=int | None,
        default=None,
        help="DataLoader worker processes, as on every wsi-* command (sets data.num_workers)",
    )
    parser.add_argument(
        "--progress",
        type=bool | None,
        default=None,
        help="show the progress bar, as on every wsi-* command (sets trainer.progress_bar)",
    )
    parser.add_argument(
        "--list_configs",
        action=_ListConfigs,
        help="print the configs shipped with wsi-ncmi (--config takes these names from any "
        "directory) and exit",
    )
    return parser


class _ListConfigs(argparse.Action):
    """``--list_configs``: print the packaged configs and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.pop("default", None)
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        from wsi_ncmi.packaged import PACKAGED, list_packaged

        print(f"configs shipped with wsi-ncmi ({PACKAGED['configs']}):")
        for name in list_packaged("configs"):
            print(f"  {name}")
        print("use one with: wsi-train --config camelyon17/abmil_ncmi.yaml [options]")
        raise SystemExit(0)


def with_common_options(
    config: TrainConfig, workers: int | None, progress: bool | None
) -> TrainConfig:
    """``config`` with the shared ``--workers``/``--progress`` applied (``None``: unchanged).

    Raises:
        ConfigError: ``workers`` below 0 (``DataConfig`` checks it).
    """
    from dataclasses import replace

    if workers is not None:
        config = replace(config, data=replace(config.data, num_workers=workers))
    if progress is not None:
        config = replace(config, trainer=replace(config.trainer, progress_bar=progress))
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-train``; returns the exit code."""
    return run_cli("wsi-train", lambda: _train(argv), resume_hint=RESUME_HINT)


def _train(argv: Sequence[str] | None) -> int:
    from wsi_ncmi.batch.preflight import check_writable_dir
    from wsi_ncmi.errors import ConfigError
    from wsi_ncmi.train.config import TrainConfig

    parser = build_parser()
    cfg = parse(parser, argv, instantiate=False)
    try:
        config = parser.instantiate(cfg)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err
    train_config = with_common_options(
        build_from(TrainConfig, config), config.workers, config.progress
    )
    # Before any work (and the imports).
    out_dir = check_writable_dir(train_config.out_dir)
    from wsi_ncmi.train.fit import run_training

    cfg_to_dump = cfg.clone()
    cfg_to_dump.pop("config", None)
    result = run_training(train_config, config_yaml=parser.dump(cfg_to_dump))
    print(result.summary)
    print(f"outputs in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
