"""``wsi-bench``: sweep losses × aggregators × seeds over hospital folds; per-hospital tables.

Layered configuration: defaults, then ``--config FILE.yaml`` (``configs/bench/``), then
``--set KEY=VALUE`` overrides (dotted keys, YAML values) and the shortcut flags.
``--print_config`` prints the resolved config.

Outputs under ``<out>/<name>/`` (``--out`` sets the config's ``output_root``):
``results.csv``, ``summary.md``, ``summary.json``, ``plots/*.png``, ``bench_config.yaml``,
``splits/`` and ``cells/<cell>/``. Rerunning the
same command resumes: finished cells are never recomputed.

Exit codes (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`): 0 every cell finished; 1 some
cell failed (the others are reported); 2 bad arguments or configuration; 3 features
missing; 130 interrupted (rerun to resume).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wsi_ncmi.cli.common import aliases_for, aliases_help, new_parser, parse, run_cli

ALIASES = aliases_for("wsi-bench")


def build_parser() -> Any:
    """The argument parser (``--config`` is a bench YAML read by :mod:`wsi_ncmi.bench.config`)."""
    p = new_parser(
        "wsi-bench",
        "Benchmark losses (CE vs NCMI, ...) × MIL aggregators × seeds over "
        "leave-one-hospital-out folds, resumably; writes per-hospital tables, paired "
        "tests and plots.",
        epilog="example configs: configs/bench/*.yaml\n\n" + aliases_help(ALIASES),
        config_file=False,
    )
    p.add_argument("--config", metavar="YAML", help="bench config (e.g. configs/bench/*.yaml)")
    p.add_argument(
        "--print_config", action="store_true", help="print the resolved config as YAML and exit"
    )
    p.add_argument("--name", help="benchmark name (outputs in <out>/<name>)")
    p.add_argument("--out", metavar="DIR", help="output root: parent folder of <name>/")
    p.add_argument("--manifest", metavar="CSV", help="slide manifest")
    p.add_argument(
        "--slides_dir", metavar="DIR", help="slide folder: tile and extract missing slides"
    )
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
    p.add_argument("--quick", type=bool, default=False, help="apply the config's quick: section")
    p.add_argument(
        "--force", type=bool, default=False, help="recompute cells made with other settings"
    )
    p.add_argument(
        "--progress", type=bool | None, help="progress bars (default: the config's progress)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-bench``; returns the exit code."""
    return run_cli("wsi-bench", lambda: _bench(argv))


def _bench(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parse(parser, argv, ALIASES)

    from wsi_ncmi.batch.shard import parse_shard
    from wsi_ncmi.bench.config import load_config, parse_override, to_dict

    shortcuts = {
        "name": args.name,
        "output_root": args.out,
        "data.manifest": args.manifest,
        "data.slide_dir": args.slides_dir,
        "data.features_root": args.features,
        "data.encoder": args.encoder,
        "sweep.seeds": args.seeds,
        "jobs": args.jobs,
        "progress": args.progress,
    }
    overrides = {k: v for k, v in shortcuts.items() if v is not None}
    overrides |= dict(parse_override(item) for item in args.set)
    config = load_config(args.config, overrides, quick=args.quick)
    parse_shard(args.shard)  # a malformed I/N fails before any work
    if args.print_config:
        import yaml

        print(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0

    from wsi_ncmi.bench.pipeline import run_bench

    outcome = run_bench(config, force=args.force, shard=args.shard)
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
