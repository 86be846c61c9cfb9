"""The benchmark in the paper's form: every loss × aggregator, and the best baseline vs NCMI.

Three parts, each computed from the cells' result records and test predictions:

1. :func:`loss_table`: test macro-F1 per hospital and pooled (mean ± std over seeds) and
   the patient pN-stage kappa, one row per (aggregator, loss);
2. :func:`best_baseline_comparisons`: per aggregator, the baseline with the best mean
   *validation* score over the split's cells (``sweep.tuning.metric``; no test score
   enters, although under leave-one-hospital-out the other folds' validation slides
   include each test hospital: the choice picks a comparison, not a model) against
   each treatment (``sweep.treatment`` and ``sweep.treatments``: NCMI-MIL, the authors'
   NCMI): paired, hospital-stratified bootstrap of Δ macro-F1 per hospital and pooled,
   the Wilcoxon signed-rank test over seed × hospital pairs, and Holm's correction over
   every treatment × aggregator (bootstrap p-values over every treatment × aggregator ×
   hospital cell; Wilcoxon p-values over every treatment × aggregator);
3. :func:`epoch_points`: validation NCMI against validation macro-F1 for every epoch of
   every run, with Spearman's ρ ("does NCMI track accuracy?").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.results import RunKey, group_metric, paired_slides
from wsi_ncmi.bench.stats import (
    DeltaEstimate,
    SignedRank,
    holm,
    mean_std,
    paired_bootstrap,
    signed_rank,
    spearman,
)
from wsi_ncmi.bench.summaries import BaselineComparison, ModelSummary
from wsi_ncmi.bench.tables import fmt_mean_std
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.evaluation import MetricsReport


def _signed(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.3f}"


def loss_table(config: BenchConfig, summaries: Mapping[str, ModelSummary]) -> list[str]:
    """Markdown lines: one row per (aggregator, loss); hospitals, pooled, pN kappa.

    Args:
        config: The configuration (loss order).
        summaries: ``{aggregator: model summary}`` from
            :func:`wsi_ncmi.bench.report.model_summary`.
    """
    if not summaries:
        return []
    groups = next(iter(summaries.values())).groups
    head = [f"center {g}" if g != "pooled" else "**pooled**" for g in groups]
    lines = [
        "## Test macro-F1 of every loss × aggregator (mean ± std over seeds)",
        "",
        "| aggregator | loss | " + " | ".join(head) + " | patient pN κ (pooled) |",
        "|---|---|" + "---|" * (len(head) + 1),
    ]
    for model, summary in summaries.items():
        for loss in (e.label for e in config.sweep.losses):
            f1 = summary.macro_f1.get(loss, {})
            cells = [fmt_mean_std(*mean_std(f1.get(g, []))[:2]) for g in groups]
            kappa = summary.patient_kappa.get(loss, {}).get("pooled", [])
            cells.append(fmt_mean_std(*mean_std(kappa)[:2]))
            lines.append(f"| {model} | {loss} | " + " | ".join(cells) + " |")
    return lines


def all_treatments(config: BenchConfig) -> list[str]:
    """``sweep.treatment`` then ``sweep.treatments``: the losses compared with the best baseline."""
    sweep = config.sweep
    return [sweep.treatment, *(t for t in sweep.treatments if t != sweep.treatment)]


def best_baseline(
    config: BenchConfig, results: Sequence[CellResult], model: str
) -> tuple[str | None, dict[str, float]]:
    """The baseline with the best mean validation score for one aggregator.

    Returns:
        ``(label or None, {candidate: mean validation score})``.
    """
    sweep = config.sweep
    labels = [e.label for e in sweep.losses]
    treatments = all_treatments(config)
    candidates = sweep.baselines or [x for x in labels if x not in treatments]
    metric = sweep.tuning.metric
    scores: dict[str, float] = {}
    for loss in candidates:
        values = [
            float(value)
            for r in results
            if r.loss == loss and r.model == model and (value := r.val.get(metric)) is not None
        ]
        if values:
            scores[loss] = sum(values) / len(values)
    best = max(scores, key=lambda k: scores[k], default=None)
    return best, scores


def best_baseline_comparisons(
    config: BenchConfig,
    runs: Mapping[RunKey, list[dict[str, Any]]],
    reports: Mapping[RunKey, MetricsReport],
    results: Sequence[CellResult],
) -> dict[str, dict[str, BaselineComparison]]:
    """Best baseline (chosen on validation) vs each treatment, per aggregator, Holm-corrected.

    Holm's correction runs over every treatment × aggregator of the table: the bootstrap
    p-values over every (treatment, aggregator, hospital) cell, the Wilcoxon p-values over
    every (treatment, aggregator).

    Returns:
        ``{treatment: {aggregator: comparison}}``.
    """
    sweep, st = config.sweep, config.stats
    raw: dict[tuple[str, str], tuple[str, dict[str, float], dict[str, DeltaEstimate], SignedRank]]
    raw = {}
    for treat in all_treatments(config):
        for model in (e.label for e in sweep.models):
            base, scores = best_baseline(config, results, model)
            if base is None or not any(k[0] == model and k[1] == treat for k in runs):
                continue
            pairs = paired_slides(runs, model, base, treat, sweep.seeds)
            centers = sorted({int(c) for c in pairs.centers})
            groups: dict[str, DeltaEstimate] = {}
            for group in [*map(str, centers), "pooled"]:
                sub = pairs if group == "pooled" else pairs.subset(pairs.centers == int(group))
                groups[group] = paired_bootstrap(
                    sub, len(LABELS), n_resamples=st.bootstrap, seed=st.seed
                )
            diffs = [
                group_metric(reports[(model, treat, s)], str(c), "macro_f1")
                - group_metric(reports[(model, base, s)], str(c), "macro_f1")
                for s in sweep.seeds
                for c in centers
                if (model, treat, s) in reports and (model, base, s) in reports
            ]
            raw[(treat, model)] = (base, scores, groups, signed_rank(diffs))
    cells = [(key, group) for key, (_, _, groups, _) in raw.items() for group in groups]
    boot_holm = holm([raw[key][2][group].p_value for key, group in cells])
    adjusted = dict(zip(cells, boot_holm, strict=True))
    wilcoxon_holm = dict(zip(raw, holm([r[3].p_value for r in raw.values()]), strict=True))
    out: dict[str, dict[str, BaselineComparison]] = {}
    for (treat, model), (base, scores, groups, wilcoxon) in raw.items():
        out.setdefault(treat, {})[model] = BaselineComparison(
            baseline=base,
            validation_scores=scores,
            groups=groups,
            wilcoxon=wilcoxon,
            groups_p_holm={g: adjusted[((treat, model), g)] for g in groups},
            wilcoxon_p_holm=wilcoxon_holm[(treat, model)],
        )
    return out


def comparison_table(
    config: BenchConfig, comparisons: Mapping[str, Mapping[str, BaselineComparison]]
) -> list[str]:
    """Markdown lines of :func:`best_baseline_comparisons`, one section per treatment."""
    lines: list[str] = []
    for treat, per_model in comparisons.items():
        if lines:
            lines.append("")
        lines += _treatment_table(config, treat, per_model)
    return lines


def _treatment_table(
    config: BenchConfig, treat: str, comparisons: Mapping[str, BaselineComparison]
) -> list[str]:
    """Markdown lines of one treatment's comparisons."""
    if not comparisons:
        return []
    alpha = config.stats.alpha
    holm_scope = (
        "every treatment × aggregator" if len(all_treatments(config)) > 1 else "every aggregator"
    )
    lines = [
        f"## Best baseline vs {treat} (baseline chosen on validation, per aggregator)",
        "",
        f"Δ = {treat} − baseline test macro-F1, seeds averaged; 95% CI and p from the paired "
        "bootstrap of test slides (stratified by hospital); Wilcoxon over seed × hospital "
        "pairs; p_Holm corrects each family across the treatments' tables (bootstrap: every "
        f"cell; Wilcoxon: {holm_scope}). Significant means p_Holm < α = {alpha}.",
        "",
        "| aggregator | best baseline | group | Δ | 95% CI | p | p_Holm |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, comp in comparisons.items():
        for group, est in comp.groups.items():
            name = "**pooled**" if group == "pooled" else f"center {group}"
            lines.append(
                f"| {model} | {comp.baseline} | {name} | {_signed(est.delta)} | "
                f"[{_signed(est.low)}, {_signed(est.high)}] | {est.p_value:.3g} | "
                f"{comp.groups_p_holm[group]:.3g} |"
            )
    lines += [
        "",
        "| aggregator | best baseline | pairs | wins / losses | median Δ | Wilcoxon p | p_Holm "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, comp in comparisons.items():
        w, pooled = comp.wilcoxon, comp.groups["pooled"]
        significant = comp.wilcoxon_p_holm < alpha and comp.groups_p_holm["pooled"] < alpha
        sign = "better" if pooled.delta > 0 else "worse" if pooled.delta < 0 else "tied"
        paired = (w.wins > w.losses) - (w.wins < w.losses)
        pooled_sign = (pooled.delta > 0) - (pooled.delta < 0)
        if paired and pooled_sign and paired != pooled_sign:
            verdict = (
                f"inconclusive: {treat} is {sign} pooled but "
                f"{'wins' if paired > 0 else 'loses'} most seed × hospital pairs"
            )
        else:
            verdict = f"{treat} {sign}, " + ("significant" if significant else "not significant")
        lines.append(
            f"| {model} | {comp.baseline} | {w.n_pairs} | {w.wins} / {w.losses} | "
            f"{_signed(w.median_delta)} | {w.p_value:.3g} | {comp.wilcoxon_p_holm:.3g} | "
            f"{verdict} |"
        )
    return lines


def epoch_points(results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """Validation NCMI and macro-F1 of every epoch of every run (cells with a history)."""
    points = []
    for r in results:
        for h in r.history:
            ncmi, f1 = h.values.get("ncmi"), h.values.get("macro_f1")
            if ncmi is None or f1 is None:
                continue
            if math.isfinite(float(ncmi)) and math.isfinite(float(f1)):
                points.append(
                    {
                        "loss": r.loss,
                        "model": r.model,
                        "cell_id": r.cell_id,
                        "epoch": h.epoch,
                        "val_ncmi": float(ncmi),
                        "val_macro_f1": float(f1),
                    }
                )
    return points


def ncmi_tracking(points: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float, int]]:
    """Spearman ρ of validation NCMI vs validation macro-F1: over all points, per loss."""
    out = {"all": spearman([p["val_ncmi"] for p in points], [p["val_macro_f1"] for p in points])}
    for loss in sorted({p["loss"] for p in points}):
        mine = [p for p in points if p["loss"] == loss]
        out[loss] = spearman([p["val_ncmi"] for p in mine], [p["val_macro_f1"] for p in mine])
    return out


def tracking_lines(tracking: Mapping[str, tuple[float, float, int]]) -> list[str]:
    """Markdown lines of :func:`ncmi_tracking`."""
    if not tracking or tracking["all"][2] == 0:
        return []
    lines = [
        "## Does NCMI track accuracy? (validation, every epoch of every run)",
        "",
        "Spearman ρ of validation NCMI against validation macro-F1 (negative: lower NCMI "
        "goes with higher macro-F1); figure `plots/ncmi_epochs.png`.",
        "",
        "| runs of | ρ | p | points |",
        "|---|---|---|---|",
    ]
    for key, (rho, p, n) in tracking.items():
        name = "**all losses**" if key == "all" else key
        if math.isfinite(rho):
            lines.append(f"| {name} | {rho:+.3f} | {p:.3g} | {n} |")
        else:  # constant NCMI or macro-F1 over the points
            lines.append(f"| {name} | – | – | {n} |")
    return lines
