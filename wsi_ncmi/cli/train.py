"""``wsi-train``: attention-MIL training with hospital-aware splits and per-hospital reports.

Layered configuration (jsonargparse over :class:`wsi_ncmi.train.config.TrainConfig`):
defaults, then ``--config FILE.yaml`` (repeatable), then overrides such as
``--trainer.max_epochs 5 --loss.name ce --split.folds '[2]'``. ``--print_config`` shows
the resolved configuration; it is saved as ``<out_dir>/config.yaml`` with every run.

Exit codes: 0 success; 1 training failed (NaN/inf features or loss, corrupt features file);
2 bad arguments, configuration, manifest or splits; 3 features missing (run wsi-extract or
set ``--data.missing exclude``); 130 interrupted (resume with ``--resume true``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def build_parser() -> Any:
    """The jsonargparse parser of :class:`~wsi_ncmi.train.config.TrainConfig`."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from wsi_ncmi.train.config import TrainConfig

    parser = ArgumentParser(
        prog="wsi-train",
        description="Train an attention-MIL slide classifier on cached patch features.",
        exit_on_error=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file(s)")
    parser.add_class_arguments(TrainConfig, fail_untyped=True, sub_configs=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-train``; returns the exit code."""
    from jsonargparse import ArgumentError

    parser = build_parser()
    try:
        cfg = parser.parse_args(list(argv) if argv is not None else None)
        config = parser.instantiate(cfg)
    except (ArgumentError, ValueError, TypeError) as err:
        print(f"wsi-train: error: {err}", file=sys.stderr)
        return 2

    from wsi_ncmi.batch import write_text_atomic
    from wsi_ncmi.errors import (
        ConfigError,
        ManifestError,
        MissingFeaturesError,
        WsiNcmiError,
    )
    from wsi_ncmi.train.config import TrainConfig
    from wsi_ncmi.train.fit import run_training

    train_config = TrainConfig(**{k: v for k, v in vars(config).items() if k != "config"})
    out_dir = Path(train_config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_to_dump = cfg.clone()
    cfg_to_dump.pop("config", None)
    write_text_atomic(out_dir / "config.yaml", parser.dump(cfg_to_dump))
    try:
        result = run_training(train_config)
    except (ConfigError, ManifestError) as err:
        print(f"wsi-train: configuration error: {err}", file=sys.stderr)
        return 2
    except MissingFeaturesError as err:
        print(f"wsi-train: {err}", file=sys.stderr)
        return 3
    except WsiNcmiError as err:
        print(f"wsi-train: training failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wsi-train: interrupted; rerun with --resume true to continue", file=sys.stderr)
        return 130
    print(result.summary)
    print(f"outputs in {out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
