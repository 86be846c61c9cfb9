"""``wsi-bench``: sweep losses × aggregators × seeds over hospital folds; per-hospital tables.

The configuration (:func:`wsi_ncmi.bench.parser.load_config`): ``--config FILE.yaml``,
then in order a flag per key (``--stats.bootstrap 100``,
``--sweep.seeds 0 1``) or ``--set KEY=VALUE`` for any dotted key. Outputs go to
``<output_root>/<name>/``; rerunning the same command resumes (finished cells are never recomputed).

Exit codes (:data:`wsi_ncmi.cli.common.EXIT_CODES_HELP`): 0 every cell finished; 1 some
cell failed (the others are reported); 2 bad arguments or configuration; 3 features
missing; 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wsi_ncmi.cli.argv import expand_argv
from wsi_ncmi.cli.common import new_parser, renamed_for, run_cli

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

EPILOG = """\
example configs: configs/bench/*.yaml; what each section means: docs/bench.md ("wsi-bench");
the resolved values: --print_config

--config files are read first, wherever they stand: the other options win, in order.
A flag sets its key as a whole (a section given as a mapping starts from its defaults);
--KEY+ VALUE appends to a list. Keys inside the mapping sections (train,
prepare.extract, sweep.splits) have no flags: --set train.trainer.max_epochs=5.
"""


def build_parser() -> ArgumentParser:
    """The parser: ``--config``, ``--set``, a flag per config key, the run."""
    from wsi_ncmi.bench.parser import add_config_flags

    p = new_parser(
        "wsi-bench",
        "Benchmark losses (CE vs NCMI, ...) × MIL aggregators × seeds over "
        "leave-one-hospital-out folds, resumably; writes per-hospital tables, paired "
        "tests and plots.",
        epilog=EPILOG,
        config_file=False,
    )
    add_config_flags(p)
    p.add_argument(
        "--print_config",
        action="store_true",
        help="print the resolved, checked config as YAML (--config reads it back) and exit",
    )
    p.add_argument(
        "--shard",
        type=str | None,
        metavar="I/N",
        help="share the sweep with N-1 other jobs (e.g. $SLURM_ARRAY_TASK_ID/N): cells are "
        "claimed by lock files, this job starts with shard I, the last job writes the report",
    )
    p.add_argument(
        "--force", type=bool, default=False, help="recompute cells made with other settings"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsi-bench``; returns the exit code."""
    return run_cli("wsi-bench", lambda: _bench(argv))


def _bench(argv: Sequence[str] | None) -> int:
    began = time.time()  # before the config check imports the losses (seconds)
    from wsi_ncmi.batch.shard import parse_shard
    from wsi_ncmi.bench.parser import config_from_flags

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = expand_argv(parser, argv, renamed_for(parser.prog))
    namespace = parser.parse_args(args)
    config = config_from_flags(namespace)
    parse_shard(namespace.shard)  # a malformed I/N fails before any work
    if namespace.print_config:
        import yaml

        print(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
        return 0

    from wsi_ncmi.batch.preflight import check_writable_dir

    check_writable_dir(config.out_dir, "--output_root")  # before any work
    from wsi_ncmi.bench.pipeline import run_bench

    outcome = run_bench(config, force=namespace.force, shard=namespace.shard, began=began)
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
        who = (
            "another job wrote the report during this run"
            if sweep.complete
            else "the job that finishes the last cell writes the report"
        )
        print(
            f"cells: {len(sweep.ran)} trained by this job, {len(sweep.claimed)} held by other "
            f"jobs, {len(sweep.failed)} failed; {who} ({out_dir})"
        )
        return 1 if sweep.failed else 0
    for model, table in reports.headline.items():
        print(f"\n{model}: test macro-F1 per hospital\n{table}")
    for lines in reports.verdicts.values():
        print("\n".join(lines))
    if reports.constant_runs:
        print(
            f"warning: {len(reports.constant_runs)} runs predict a single class for every "
            "test slide; see summary.md"
        )
    print(
        f"\ncells: {len(sweep.ran)} trained, {len(sweep.skipped)} already done, "
        f"{len(sweep.failed)} failed; summary: {reports.paths['summary']}"
    )
    return 1 if sweep.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
