"""``wsi-bench``: sweep losses × aggregators × seeds over hospital folds; per-hospital tables.

Layered configuration: defaults, then ``--config FILE.yaml`` (``configs/bench/``), then
``--set KEY=VALUE`` overrides (dotted keys, YAML values) and the shortcut flags.

Outputs under ``<output_root>/<name>/``: ``results.csv``, ``summary.md``, ``summary.json``,
``plots/*.png``, ``bench_config.yaml``, ``splits/`` and ``cells/<cell>/``. Rerunning the
same command resumes: finished cells are never recomputed.

Exit codes: 0 every cell finished; 1 some cell failed (the others are reported);
2 bad arguments or configuration; 3 features missing; 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    p = argparse.ArgumentParser(
        prog="wsi-bench",
        description="Benchmark losses (CE vs NCMI, ...) × MIL aggregators × seeds over "
        "leave-one-hospital-out folds, resumably; writes per-hospital tables, paired "
        "tests and plots.",
    )
    p.add_argument("--config", metavar="YAML", help="bench config (e.g. configs/bench/*.yaml)")
    p.add_argument("--name", help="benchmark name (outputs in <output_root>/<name>)")
    p.add_argument("--output-root", metavar="DIR", help="parent folder of the outputs")
    p.add_argument("--manifest", metavar="CSV", help="slide manifest")
    p.add_argument("--slides", metavar="DIR", help="slide folder: tile+extract missing slides")
    p.add_argument("--features", metavar="DIR", help="features root (features/<encoder>/)")
    p.add_argument("--encoder", help="encoder name of the features")
    p.add_argument("--seeds", type=int, nargs="+", metavar="K", help="training seeds")
    p.add_argument("--jobs", type=int, metavar="N", help="cells trained in parallel")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="share the sweep with N-1 other jobs (e.g. $SLURM_ARRAY_TASK_ID/N): cells are "
        "claimed by lock files, this job starts with shard I, the last job writes the report",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any key, e.g. --set train.trainer.max_epochs=5 (repeatable)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="apply the config's 'quick' section: a smaller sweep of the same design",
    )
    p.add_argument("--force", action="store_true", help="recompute cells made with other settings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-bench``; returns the exit code."""
    args = build_parser().parse_args(argv)

    from wsi_ncmi.bench.config import load_config, parse_override, to_dict
    from wsi_ncmi.errors import ConfigError, ManifestError, MissingFeaturesError, WsiNcmiError

    shortcuts = {
        "name": args.name,
        "output_root": args.output_root,
        "data.manifest": args.manifest,
        "data.slide_dir": args.slides,
        "data.features_root": args.features,
        "data.encoder": args.encoder,
        "sweep.seeds": args.seeds,
        "jobs": args.jobs,
        "progress": False if args.no_progress else None,
    }
    try:
        overrides = {k: v for k, v in shortcuts.items() if v is not None}
        overrides |= dict(parse_override(item) for item in args.set)
        config = load_config(args.config, overrides, quick=args.quick)
        from wsi_ncmi.batch.shard import parse_shard

        parse_shard(args.shard)  # a malformed I/N fails before any work
    except (ConfigError, ManifestError) as err:
        print(f"wsi-bench: configuration error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0

    from wsi_ncmi.bench.pipeline import run_bench

    try:
        outcome = run_bench(config, force=args.force, shard=args.shard)
    except (ConfigError, ManifestError) as err:
        print(f"wsi-bench: configuration error: {err}", file=sys.stderr)
        return 2
    except MissingFeaturesError as err:
        print(f"wsi-bench: {err}", file=sys.stderr)
        return 3
    except WsiNcmiError as err:
        print(f"wsi-bench: failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wsi-bench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    parts = outcome.parts or {"": outcome}
    return max(_print_outcome(name, part, config) for name, part in parts.items())


def _print_outcome(name: str, outcome: Any, config: Any) -> int:
    """Print one split's tables and cell counts; returns its exit code."""
    reports = outcome.reports
    sweep = outcome.sweep
    out_dir = config.out_dir / name if name else config.out_dir
    if name:
        print(f"\n=== split {name} ({out_dir}) ===")
    if not reports:
        print(
            f"cells: {len(sweep.ran)} trained by this job, {len(sweep.claimed)} held by other "
            f"jobs, {len(sweep.failed)} failed; the job that finishes the last cell writes "
            f"the report ({out_dir})"
        )
        return 1 if sweep.failed else 0
    for model, table in reports["headline"].items():
        print(f"\n{model}: test macro-F1 per hospital\n{table}")
    for lines in reports["verdicts"].values():
        print("\n".join(lines))
    if reports["constant_runs"]:
        print(
            f"warning: {len(reports['constant_runs'])} runs predict a single class for every "
            "test slide; see summary.md"
        )
    print(
        f"\ncells: {len(sweep.ran)} trained, {len(sweep.skipped)} already done, "
        f"{len(sweep.failed)} failed; summary: {reports['paths']['summary']}"
    )
    return 1 if sweep.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
