"""The demo (``make demo`` / ``python -m wsi_ncmi.demo``): CE vs NCMI per hospital, offline.

Steps, all under one output folder (default ``outputs/demo``), each resumable:

1. generate the synthetic CAMELYON-like cohort from the real CAMELYON-17 manifest
   (``cohort/``, 20 slides per hospital);
2. tile it (``tiles/coords``, overlays in ``tiles/thumbnails``);
3. extract features with the built-in offline encoder ``random-cnn``
   (``tiles/features/random-cnn``);
4. run ``configs/bench/synthetic_demo.yaml``: CE and NCMI, ABMIL, leave-one-hospital-out,
   3 seeds (``bench/synthetic_demo/``);
5. print the per-hospital table and the files to open.

Rerunning continues where a killed run stopped. Stage wall times go to ``timings.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

#: The command, in help and errors.
PROG = "python -m wsi_ncmi.demo"
#: Shipped with the package (also under ``configs/`` and ``data_manifests/`` in a checkout).
PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = PACKAGE_DIR / "configs" / "bench" / "synthetic_demo.yaml"
DEFAULT_MANIFEST = PACKAGE_DIR / "data_manifests" / "camelyon17.csv"


def build_parser() -> ArgumentParser:
    """The argument parser (the ``wsi-*`` commands' kind: one spelling per flag)."""
    from wsi_ncmi.cli.common import SPELLING_HELP, new_parser

    p = new_parser(
        PROG,
        "Synthetic cohort → tiles → random-cnn features → CE vs NCMI benchmark, offline.",
        config_file=False,
        conventions=SPELLING_HELP,
    )
    p.add_argument(
        "--out_dir", type=str, default="outputs/demo", metavar="DIR", help="output folder"
    )
    p.add_argument(
        "--config", type=str, default=str(DEFAULT_CONFIG), metavar="YAML", help="bench config"
    )
    p.add_argument(
        "--manifest",
        type=str,
        default=str(DEFAULT_MANIFEST),
        metavar="CSV",
        help="CAMELYON-17 manifest driving the cohort",
    )
    p.add_argument(
        "--slides_per_center",
        type=int,
        default=20,
        metavar="N",
        help="slides generated per hospital (from the manifest's first N of each)",
    )
    p.add_argument("--workers", type=int, default=2, help="processes for slide generation")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="bench config override, repeatable, e.g. --set sweep.seeds=[0]",
    )
    p.add_argument("--progress", type=bool, default=True, help="show progress bars")
    return p


def _first(paths: Sequence[Path]) -> str:
    return str(paths[0]) if paths else "(none)"


def what_to_open(out: Path, bench_dir: Path, labels: dict[str, str]) -> list[str]:
    """Lines naming the table, the plots, a tiling overlay and an attention heatmap.

    The heatmap shown is of a tumour slide when one was drawn (``labels``: slide → label).
    """
    heatmaps = sorted(bench_dir.glob("cells/*/run/heatmaps/*.png"))
    rank = {"macro": 0, "micro": 1, "itc": 2}
    tumour = sorted(
        (p for p in heatmaps if labels.get(p.stem) in rank), key=lambda p: rank[labels[p.stem]]
    )
    return [
        f"  table:             {bench_dir / 'summary.md'}",
        f"  per-run metrics:   {bench_dir / 'results.csv'}",
        f"  bars per hospital: {_first(sorted(bench_dir.glob('plots/bars_*.png')))}",
        f"  NCMI vs macro-F1:  {bench_dir / 'plots' / 'ncmi_vs_f1.png'}",
        f"  tiling overlay:    {_first(sorted((out / 'tiles' / 'thumbnails').glob('*.png')))}",
        f"  attention heatmap: {_first(tumour or heatmaps)}",
        f"  training curves:   {_first(sorted(bench_dir.glob('cells/*/run/curves.png')))}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo under the commands' shared exit table (:func:`wsi_ncmi.cli.common.run_cli`).

    Returns:
        0 ok, 1 failed cells or stages, 2 bad arguments or configuration, 3 missing inputs,
        130 interrupted (one line on stderr, no traceback; a rerun resumes).
    """
    from wsi_ncmi.cli.common import parse, run_cli

    return run_cli(
        "demo",
        lambda: _run(parse(build_parser(), argv)),
        resume_hint="run the same command again: finished stages are skipped",
    )


def _run(args: Any) -> int:
    """The demo's stages; errors propagate to :func:`main`'s exit table."""
    from wsi_ncmi.bench.parser import load_config, parse_override
    from wsi_ncmi.bench.pipeline import run_bench
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth import generate_cohort

    out = Path(args.out_dir)
    cohort = out / "cohort"
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    overrides = {
        "output_root": str(out / "bench"),
        "data.manifest": str(cohort / "manifest.csv"),
        "data.slide_dir": str(cohort),
        "data.features_root": str(out / "tiles"),
        "progress": args.progress,
    }
    overrides |= dict(parse_override(item) for item in args.set)
    rows = read_manifest(args.manifest)
    load_config(args.config, overrides)  # a bad config or override stops before any work
    print(f"[1/4] synthetic cohort: {args.slides_per_center} slides per hospital → {cohort}")
    generate_cohort(
        rows,
        cohort,
        preset="demo",
        subset=args.slides_per_center,
        workers=args.workers,
        progress=args.progress,
    )
    seconds["synth"] = time.perf_counter() - started
    config = load_config(args.config, overrides)
    print(
        f"[2-4/4] tiling, {config.data.encoder} features, then benchmark {config.name} "
        f"({len(config.sweep.seeds)} seeds, {config.sweep.split.kind}); finished work is skipped"
    )
    outcome = run_bench(config)
    seconds |= outcome.seconds
    seconds["total"] = time.perf_counter() - started
    from wsi_ncmi.batch import write_text_atomic

    write_text_atomic(out / "timings.json", json.dumps(seconds, indent=1) + "\n")
    reports = outcome.reports
    if reports is not None:  # a run alone on its folder always writes them
        for model, table in reports.headline.items():
            print(
                f"\n{model}: test macro-F1 per held-out hospital (mean ± std over seeds)\n{table}"
            )
        for lines in reports.verdicts.values():
            print("\n" + "\n".join(lines))
        if reports.constant_runs:
            print(
                f"warning: {len(reports.constant_runs)} runs predict a single class for every "
                "test slide; see summary.md"
            )
    print("\nopen:")
    labels = {row.slide_id: row.label for row in read_manifest(config.data.manifest)}
    print("\n".join(what_to_open(out, config.out_dir, labels)))
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    print(f"\nwall time: {stages} (this run; finished stages are skipped on a rerun)")
    return 1 if outcome.sweep.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
