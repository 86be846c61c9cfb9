"""The benchmark's reports: ``results.csv``, ``summary.md``, ``summary.json`` and the plots.

The headline table (one per aggregator) has one row per test hospital and a pooled row::

    | hospital | CE macro-F1 | NCMI macro-F1 | Δ | 95% CI of Δ | <other losses> macro-F1 |

with mean ± std over seeds, Δ = treatment − baseline averaged over seeds, and the paired,
hospital-stratified bootstrap interval of Δ (:mod:`wsi_ncmi.bench.stats`). A second
table gives the patient-level pN-stage kappa; then the paired tests and their verdict,
and the Spearman correlation of validation NCMI with macro-F1 across runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.html import write_bench_html
from wsi_ncmi.bench.plots import grouped_bars, ncmi_epochs_scatter, ncmi_scatter
from wsi_ncmi.bench.results import (
    RunKey,
    group_metric,
    paired_slides,
    result_rows,
    run_records,
    run_reports,
    write_results_csv,
)
from wsi_ncmi.bench.stats import mean_std, paired_bootstrap, signed_rank, spearman
from wsi_ncmi.bench.suite import Choice, tuning_table
from wsi_ncmi.bench.summaries import BenchReports, Comparison, ModelSummary
from wsi_ncmi.bench.sweep import SweepOutcome
from wsi_ncmi.bench.tables import decision_table, diagnostics_table, per_class_table
from wsi_ncmi.bench.tables import fmt_mean_std as _fmt
from wsi_ncmi.jsontypes import JSONObject, finite_json
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.evaluation import MetricsReport


def _signed(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.{digits}f}"


def _group_label(group: str, n: int) -> str:
    return f"pooled (n={n})" if group == "pooled" else f"center {group} (n={n})"


def model_summary(
    config: BenchConfig,
    model: str,
    runs: Mapping[RunKey, list[dict[str, Any]]],
    reports: Mapping[RunKey, MetricsReport],
) -> ModelSummary:
    """Everything the tables say about one aggregator."""
    sweep, st = config.sweep, config.stats
    losses = [e.label for e in sweep.losses]
    seeds = sweep.seeds
    centers = sorted(
        {g for (m, _, _), rep in reports.items() if m == model for g in rep.per_center}, key=int
    )
    groups = [*centers, "pooled"]
    f1: dict[str, dict[str, list[float]]] = {loss: {} for loss in losses}
    kappa: dict[str, dict[str, list[float]]] = {loss: {} for loss in losses}
    sizes: dict[str, int] = {}
    patients: dict[str, int] = {}
    for loss in losses:
        for group in groups:
            keyed = [reports[(model, loss, s)] for s in seeds if (model, loss, s) in reports]
            f1[loss][group] = [group_metric(r, group, "macro_f1") for r in keyed]
            kappa[loss][group] = [group_metric(r, group, "patient_kappa_quadratic") for r in keyed]
            for r in keyed:  # a run without this hospital (a failed cell) has no count
                n, p = group_metric(r, group, "n"), group_metric(r, group, "patients")
                sizes[group] = int(n) if math.isfinite(n) else sizes.get(group, 0)
                patients[group] = int(p) if math.isfinite(p) else patients.get(group, 0)
    comparisons: dict[str, Comparison] = {}
    for other in (x for x in losses if x != sweep.baseline):
        pairs = paired_slides(runs, model, sweep.baseline, other, seeds)
        per_group = {}
        for group in groups:
            sub = pairs if group == "pooled" else pairs.subset(pairs.centers == int(group))
            per_group[group] = paired_bootstrap(
                sub, len(LABELS), n_resamples=st.bootstrap, seed=st.seed
            )
        diffs = [
            group_metric(reports[(model, other, s)], c, "macro_f1")
            - group_metric(reports[(model, sweep.baseline, s)], c, "macro_f1")
            for s in seeds
            for c in centers
            if (model, other, s) in reports and (model, sweep.baseline, s) in reports
        ]
        comparisons[other] = Comparison(per_group, signed_rank(diffs))
    return ModelSummary(groups, sizes, patients, f1, kappa, comparisons)


def headline_table(config: BenchConfig, summary: ModelSummary) -> str:
    """The markdown headline table of one aggregator."""
    sweep = config.sweep
    base, treat = sweep.baseline, sweep.treatment
    others = [e.label for e in sweep.losses if e.label not in (base, treat)]
    head = [f"{base.upper()} macro-F1", f"{treat.upper()} macro-F1", "Δ", "95% CI of Δ"]
    head += [f"{o} macro-F1" for o in others]
    lines = ["| hospital | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    compared = summary.comparisons.get(treat)
    boot = {} if compared is None else compared.bootstrap
    for group in summary.groups:
        cells = [_fmt(*mean_std(summary.macro_f1[loss][group])[:2]) for loss in (base, treat)]
        est = boot.get(group)
        delta, low, high = (math.nan,) * 3 if est is None else (est.delta, est.low, est.high)
        cells += [_signed(delta), f"[{_signed(low)}, {_signed(high)}]"]
        cells += [_fmt(*mean_std(summary.macro_f1[o][group])[:2]) for o in others]
        label = _group_label(group, summary.sizes.get(group, 0))
        if group == "pooled":
            label, cells = f"**{label}**", [f"**{c}**" if c != "–" else c for c in cells]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kappa_table(config: BenchConfig, summary: ModelSummary) -> str:
    """Patient-level pN-stage quadratic kappa, mean ± std over seeds."""
    losses = [e.label for e in config.sweep.losses]
    lines = [
        "| group | " + " | ".join(f"{x} pN-κ" for x in losses) + " |",
        "|---" * (len(losses) + 1) + "|",
    ]
    for group in summary.groups:
        cells = [_fmt(*mean_std(summary.patient_kappa[x][group])[:2]) for x in losses]
        name = "pooled" if group == "pooled" else f"center {group}"
        count = summary.patients.get(group, 0)
        lines.append(f"| {name} ({count} patients) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(config: BenchConfig, summary: ModelSummary, loss: str) -> str:
    """One sentence: is ``loss`` − baseline significant (Wilcoxon, then bootstrap)?"""
    alpha, base = config.stats.alpha, config.sweep.baseline
    comp = summary.comparisons[loss]
    w, b = comp.wilcoxon, comp.bootstrap["pooled"]
    direction = (
        f"better than {base}"
        if b.delta > 0
        else f"worse than {base}"
        if b.delta < 0
        else f"tied with {base} (identical predictions)"
    )
    both = w.p_value < alpha and b.p_value < alpha
    either = w.p_value < alpha or b.p_value < alpha
    status = (
        "significant" if both else "significant by one test only" if either else "not significant"
    )
    head = (
        f"{loss} vs {base}: pooled Δ macro-F1 {_signed(b.delta)} "
        f"(95% CI [{_signed(b.low)}, {_signed(b.high)}], bootstrap p = {b.p_value:.3g}); "
        f"Wilcoxon over {w.n_pairs} seed×hospital pairs: {w.wins} wins / "
        f"{w.losses} losses, p = {w.p_value:.3g}."
    )
    pooled_sign = (b.delta > 0) - (b.delta < 0)
    paired_sign = (w.wins > w.losses) - (w.wins < w.losses)
    if pooled_sign and paired_sign and pooled_sign != paired_sign:
        # Per-hospital means and the pooled slide set can disagree; never pick one silently.
        side = "wins" if paired_sign > 0 else "loses"
        return (
            f"{head} → inconclusive: {loss} {side} hospital by hospital but is "
            f"{'better' if pooled_sign > 0 else 'worse'} on the pooled slides ({status} at "
            f"α = {alpha})."
        )
    return f"{head} → {loss} is {direction}, {status} at α = {alpha}."


def write_reports(
    config: BenchConfig, outcome: SweepOutcome, *, choices: Sequence[Choice] = ()
) -> BenchReports:
    """Write ``results.csv``, ``summary.md``, ``summary.json`` and ``plots/*.png``.

    Args:
        config: The configuration, in its own loss labels.
        outcome: The sweep (final stage) outcome.
        choices: The tuning choices (:class:`wsi_ncmi.bench.suite.Choice`), if any.

    Returns:
        What was written: the summary's text, the headline tables, the paths, the
        missing cells, the runs that predict one class and the verdicts.
    """
    from wsi_ncmi.batch import write_text_atomic
    from wsi_ncmi.manifest import read_manifest

    out = config.out_dir
    results = sorted(outcome.results, key=lambda r: r.cell_id)
    write_results_csv(result_rows(results), out / "results.csv")
    runs = run_records(out / "cells", results)
    reports = run_reports(runs, read_manifest(config.data.manifest))
    sweep = config.sweep
    trainer = config.train.get("trainer") or {}
    decision = (config.train.get("report") or {}).get("decision", "calibrated")
    md = [
        f"# Benchmark `{config.name}`: {sweep.treatment} vs {sweep.baseline}",
        "",
        f"Split `{sweep.split.kind}`, seeds {sweep.seeds}, encoder `{config.data.encoder}`; "
        f"{len(results)} of {len(outcome.cells)} cells finished. Checkpoints selected on "
        f"validation `{trainer.get('monitor', 'val/macro_f1_calibrated')}` only; "
        f"test predictions by the `{decision}` decision rule (the other rule: the table "
        "'Decision rules' below). Every run counts. Test macro-F1 is mean ± std over seeds; "
        "Δ and its 95% CI come from a paired bootstrap of the test slides (stratified by "
        "hospital, seeds averaged).",
    ]
    headline: dict[str, str] = {}
    summaries: dict[str, ModelSummary] = {}
    paths: dict[str, str] = {}
    for model in [e.label for e in sweep.models]:
        if not any(k[0] == model for k in reports):
            continue
        summary = model_summary(config, model, runs, reports)
        summaries[model] = summary
        headline[model] = headline_table(config, summary)
        bars = grouped_bars(
            summary.macro_f1,
            summary.groups,
            out / "plots" / f"bars_{model}.png",
            title=f"{config.name}: {model}, test macro-F1 per hospital (mean ± std over seeds)",
        )
        paths[f"bars_{model}"] = str(bars)
        md += [
            "",
            f"## {model}: test macro-F1 per hospital",
            "",
            headline[model],
            "",
            "Patient-level pN stage (quadratic-weighted kappa, patients whose slides are all "
            "in the cohort):",
            "",
            kappa_table(config, summary),
            "",
            "Paired tests:",
            "",
        ]
        md += [f"- {verdict(config, summary, loss)}" for loss in summary.comparisons]
    cells: list[dict[str, Any]] = [
        {
            "loss": r.loss,
            "model": r.model,
            "val_ncmi": r.val.get("ncmi"),
            "val_macro_f1": r.val.get("macro_f1"),
            "test_macro_f1": r.test.pooled.macro_f1,
        }
        for r in results
    ]
    corr = {
        key: spearman(
            [c["val_ncmi"] if c["val_ncmi"] is not None else math.nan for c in cells],
            [c[f"{key}_macro_f1"] if c[f"{key}_macro_f1"] is not None else math.nan for c in cells],
        )
        for key in ("val", "test")
    }
    if cells:
        paths["ncmi_vs_f1"] = str(
            ncmi_scatter(cells, out / "plots" / "ncmi_vs_f1.png", correlations=corr)
        )
    from wsi_ncmi.bench import paper

    best = paper.best_baseline_comparisons(config, runs, reports, results)
    points = paper.epoch_points(results)
    tracking = paper.ncmi_tracking(points)
    if points:
        paths["ncmi_epochs"] = str(
            ncmi_epochs_scatter(
                points, out / "plots" / "ncmi_epochs.png", correlation=tracking["all"]
            )
        )
    md += ["", *paper.loss_table(config, summaries), "", *paper.comparison_table(config, best)]
    md += ["", *tuning_table(config, choices), "", *paper.tracking_lines(tracking)]
    md += ["", *decision_table(runs), "", *per_class_table(runs)]
    md += ["", *diagnostics_table(results, reports)]
    md += ["", "## Validation NCMI vs macro-F1 across runs", ""]
    md += [
        f"- validation NCMI vs {k} macro-F1: Spearman ρ = {v[0]:.3f} (p = {v[1]:.3g}, "
        f"n = {v[2]} runs)"
        for k, v in corr.items()
    ]
    md += [
        "",
        "## Files",
        "",
        "- `results.csv`: one row per (loss, model, seed, fold/hospital)",
        "- `plots/`: " + ", ".join(f"`{Path(p).name}`" for p in paths.values()),
        "- `cells/<cell>/run/`: each run's curves, confusion data, attention heatmaps",
    ]
    constant = sorted(
        key for key, records in runs.items() if len({r["pred_label"] for r in records}) == 1
    )
    if constant:
        md[3:3] = [
            "",
            f"> **Warning:** {len(constant)} of {len(runs)} runs (model, loss, seed) predict one "
            f"class for every test slide (e.g. {'/'.join(map(str, constant[0]))} → "
            f"`{runs[constant[0]][0]['pred_label']}`): those runs learned nothing that "
            "transfers, and comparisons between them carry no information about the losses.",
        ]
    missing = [c.cell_id for c in outcome.cells if c.cell_id not in {r.cell_id for r in results}]
    if missing:
        md += ["", f"## Missing cells ({len(missing)})", ""]
        md += [f"- `{c}`: {outcome.failed.get(c, 'not run')}" for c in missing]
    text = "\n".join(md) + "\n"
    write_text_atomic(out / "summary.md", text)
    summary_json: JSONObject = {
        "models": {model: summary.to_json() for model, summary in summaries.items()},
        "ncmi_correlation": {key: [rho, p, n] for key, (rho, p, n) in corr.items()},
        "ncmi_tracking_epochs": {key: [rho, p, n] for key, (rho, p, n) in tracking.items()},
        "best_baseline": {
            treat: {model: comp.to_json() for model, comp in per_model.items()}
            for treat, per_model in best.items()
        },
        "tuning": [
            {
                "loss": c.loss,
                "model": c.model,
                "fold": c.fold,
                "chosen": c.variant.label,
                "tuned_on": c.tuned_on or c.model,
                "scores": {label: [score, n] for label, (score, n) in c.scores.items()},
            }
            for c in choices
        ],
        "missing": missing,
    }
    write_text_atomic(out / "summary.json", json.dumps(finite_json(summary_json), indent=1) + "\n")
    paths |= {"summary": str(out / "summary.md"), "results": str(out / "results.csv")}
    paths["html"] = str(write_bench_html(config, text, paths, reports))
    return BenchReports(
        summary_md=text,
        headline=headline,
        paths=paths,
        missing=missing,
        constant_runs=constant,
        verdicts={m: [verdict(config, s, x) for x in s.comparisons] for m, s in summaries.items()},
    )
