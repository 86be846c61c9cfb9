"""Typed records of the benchmark's report: one aggregator's summary, and what was written.

:func:`wsi_ncmi.bench.report.model_summary` returns a :class:`ModelSummary` (its
``to_json`` is the aggregator's entry of ``summary.json``); the headline, pN-kappa and
paper tables read it. :func:`wsi_ncmi.bench.report.write_reports` returns a
:class:`BenchReports`.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsi_ncmi.bench.results import RunKey
from wsi_ncmi.bench.stats import DeltaEstimate, SignedRank
from wsi_ncmi.jsontypes import JSONObject


@dataclass(frozen=True)
class Comparison:
    """One loss against the baseline, for one aggregator.

    Attributes:
        bootstrap: Paired, hospital-stratified bootstrap of Δ macro-F1 per group
            (hospitals, then ``pooled``).
        wilcoxon: Signed-rank test over the (seed, hospital) pairs.
    """

    bootstrap: dict[str, DeltaEstimate]
    wilcoxon: SignedRank

    def to_json(self) -> JSONObject:
        """``{"bootstrap": {group: estimate}, "wilcoxon": test}``."""
        return {
            "bootstrap": {group: e.to_json() for group, e in self.bootstrap.items()},
            "wilcoxon": self.wilcoxon.to_json(),
        }


@dataclass(frozen=True)
class BaselineComparison:
    """A treatment against the best baseline (chosen on validation), for one aggregator.

    Attributes:
        baseline: The baseline's label.
        validation_scores: ``{candidate baseline: mean validation score}``.
        groups: Paired, hospital-stratified bootstrap of Δ macro-F1 per group (hospitals,
            then ``pooled``).
        wilcoxon: Signed-rank test over the (seed, hospital) pairs.
        groups_p_holm: Holm-adjusted bootstrap p-value of each group (the family: every
            treatment × aggregator × group of the table).
        wilcoxon_p_holm: Holm-adjusted Wilcoxon p-value (the family: every treatment ×
            aggregator).
    """

    baseline: str
    validation_scores: dict[str, float]
    groups: dict[str, DeltaEstimate]
    wilcoxon: SignedRank
    groups_p_holm: dict[str, float]
    wilcoxon_p_holm: float

    def to_json(self) -> JSONObject:
        """The entry of ``summary.json``'s ``best_baseline``.

        ``{"baseline", "validation_scores", "groups": {group: estimate + "p_holm"},
        "wilcoxon": test + "p_holm"}``.
        """
        groups: JSONObject = {
            group: {**e.to_json(), "p_holm": self.groups_p_holm[group]}
            for group, e in self.groups.items()
        }
        return {
            "baseline": self.baseline,
            "validation_scores": dict(self.validation_scores),
            "groups": groups,
            "wilcoxon": {**self.wilcoxon.to_json(), "p_holm": self.wilcoxon_p_holm},
        }


@dataclass(frozen=True)
class ModelSummary:
    """Everything the report's tables say about one aggregator.

    Attributes:
        groups: The test hospitals (as strings, in increasing order), then ``pooled``.
        sizes: Test slides per group.
        patients: Patients with every slide predicted, per group.
        macro_f1: ``{loss: {group: [test macro-F1 of each seed]}}``.
        patient_kappa: ``{loss: {group: [patient pN-stage kappa of each seed]}}``.
        comparisons: ``{loss: comparison with the baseline}`` for every other loss.
    """

    groups: list[str]
    sizes: dict[str, int]
    patients: dict[str, int]
    macro_f1: dict[str, dict[str, list[float]]]
    patient_kappa: dict[str, dict[str, list[float]]]
    comparisons: dict[str, Comparison]

    def to_json(self) -> JSONObject:
        """The aggregator's entry of ``summary.json``."""
        return {
            "groups": list(self.groups),
            "sizes": dict(self.sizes),
            "patients": dict(self.patients),
            "macro_f1": _per_loss(self.macro_f1),
            "patient_kappa": _per_loss(self.patient_kappa),
            "comparisons": {loss: c.to_json() for loss, c in self.comparisons.items()},
        }


def _per_loss(values: dict[str, dict[str, list[float]]]) -> JSONObject:
    return {
        loss: {group: list(seeds) for group, seeds in per_group.items()}
        for loss, per_group in values.items()
    }


@dataclass(frozen=True)
class BenchReports:
    """What :func:`wsi_ncmi.bench.report.write_reports` wrote.

    Attributes:
        summary_md: The text of ``summary.md``.
        headline: ``{aggregator: headline Markdown table}``.
        paths: ``{name: path}`` of the files written (plots, summary, results, html).
        missing: Planned cells without a result.
        constant_runs: Runs that predict one class for every test slide.
        verdicts: ``{aggregator: one sentence per loss compared with the baseline}``.
    """

    summary_md: str
    headline: dict[str, str]
    paths: dict[str, str]
    missing: list[str]
    constant_runs: list[RunKey]
    verdicts: dict[str, list[str]]


__all__ = ["BenchReports", "Comparison", "ModelSummary"]
