"""What a training run returns: frozen records of one fold and of the whole run.

:func:`~wsi_ncmi.train.fit.run_fold` returns a :class:`FoldResult` and
:func:`~wsi_ncmi.train.fit.run_training` a :class:`TrainingResult`. The JSON files a run
writes are built from them (:meth:`FoldResult.to_json`), so the files and the returned
values cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.losses.decision import PriorRule
from wsi_ncmi.train.attention_summary import AttentionSummary
from wsi_ncmi.train.evaluation import MetricsReport
from wsi_ncmi.train.probe import ProbeResult


@dataclass(frozen=True)
class FoldResult:
    """One trained and evaluated fold.

    Attributes:
        fold: Fold name (``fixed``, ``loho_center0``, ...).
        test_centers: Hospitals of the fold's test part.
        best_checkpoint: Path of the checkpoint the test part was predicted with.
        best_score: Its value of the monitored validation metric.
        epochs_trained: Epochs run (early stopping may end before ``max_epochs``).
        excluded: Slides left out for missing features (``missing="exclude"``).
        no_tissue_excluded: Blank slides (no valid patch) left out of every part
            (:mod:`wsi_ncmi.train.empty`; ``data.include_empty`` keeps them).
        metrics: Test report of the fold (pooled and per hospital).
        decision_rule: The validation-fitted prior-aware rule.
        by_decision: Test metrics under each decision rule.
        attention: Attention on true tumour (per slide and per true class) where the
            slides have ground truth.
        probe: Linear probe on the selected checkpoint's frozen slide embeddings, fitted
            on the training slides.
        history: Logged metrics, one dict per epoch.
        records: One prediction record per test slide.
    """

    fold: str
    test_centers: list[int]
    best_checkpoint: str | None
    best_score: float | None
    epochs_trained: int
    excluded: list[str]
    no_tissue_excluded: list[str]
    metrics: MetricsReport
    decision_rule: PriorRule
    by_decision: dict[str, MetricsReport]
    attention: AttentionSummary
    probe: ProbeResult
    history: list[dict[str, float]]
    records: list[dict[str, Any]]

    def to_json(self, *, history: bool = True, per_slide: bool = False) -> JSONObject:
        """The fields in declaration order, without the prediction records.

        Args:
            history: Keep the per-epoch history (the fold's own ``metrics.json``), or
                leave it out (the run's ``metrics.json``).
            per_slide: Keep the attention's per-slide table (the fold's own
                ``metrics.json``).
        """
        out: JSONObject = {
            "fold": self.fold,
            "test_centers": list(self.test_centers),
            "best_checkpoint": self.best_checkpoint,
            "best_score": self.best_score,
            "epochs_trained": self.epochs_trained,
            "excluded": list(self.excluded),
            "no_tissue_excluded": list(self.no_tissue_excluded),
            "metrics": self.metrics.to_json(),
            "decision_rule": self.decision_rule.to_json(),
            "by_decision": {rule: r.to_json() for rule, r in self.by_decision.items()},
            "attention": self.attention.to_json(per_slide=per_slide),
            "probe": self.probe.to_json(),
        }
        if history:
            out["history"] = [dict(h) for h in self.history]
        return out


@dataclass(frozen=True)
class TrainingResult:
    """Every selected fold of a run, and the test predictions pooled over them.

    Attributes:
        metrics: Pooled test report (pooled and per hospital).
        by_decision: Pooled test metrics under each decision rule.
        folds: The folds, in run order.
        summary: The text table written to ``summary.txt``.
    """

    metrics: MetricsReport
    by_decision: dict[str, MetricsReport]
    folds: tuple[FoldResult, ...]
    summary: str

    @property
    def no_tissue_excluded(self) -> list[str]:
        """Blank slides left out of any fold, sorted."""
        return sorted({s for f in self.folds for s in f.no_tissue_excluded})


__all__ = ["FoldResult", "TrainingResult"]
