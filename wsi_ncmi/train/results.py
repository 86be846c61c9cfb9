"""What a training run returns: frozen records of one fold and of the whole run.

:func:`~wsi_ncmi.train.fit.run_fold` returns a :class:`FoldResult` and
:func:`~wsi_ncmi.train.fit.run_training` a :class:`TrainingResult`. The JSON files a run
writes are built from them (:meth:`FoldResult.summary`), so the files and the returned
values cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


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
        decision_rule: The validation-fitted prior-aware rule (``PriorRule`` as a dict).
        by_decision: Test metrics under each decision rule.
        attention: Attention summary (without the per-slide table), with the mean
            attention mass on true tumour per true class where the slides have ground
            truth.
        probe: Linear probe on the selected checkpoint's frozen slide embeddings, fitted
            on the training slides (:meth:`wsi_ncmi.train.probe.ProbeResult.to_json`).
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
    metrics: dict[str, Any]
    decision_rule: dict[str, Any]
    by_decision: dict[str, Any]
    attention: dict[str, Any]
    probe: dict[str, Any]
    history: list[dict[str, float]]
    records: list[dict[str, Any]]

    def summary(self, *, history: bool = True) -> dict[str, Any]:
        """The JSON-ready fields, in declaration order, without the prediction records.

        Args:
            history: Keep the per-epoch history (the fold's own ``metrics.json``), or
                leave it out (the run's ``metrics.json``).

        Returns:
            A new dict (the values are shared, not copied).
        """
        skip = {"records"} if history else {"records", "history"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass(frozen=True)
class TrainingResult:
    """Every selected fold of a run, and the test predictions pooled over them.

    Attributes:
        metrics: Pooled test report (``pooled``, ``per_center``, ...).
        by_decision: Pooled test metrics under each decision rule.
        folds: The folds, in run order.
        summary: The text table written to ``summary.txt``.
    """

    metrics: dict[str, Any]
    by_decision: dict[str, Any]
    folds: tuple[FoldResult, ...]
    summary: str


__all__ = ["FoldResult", "TrainingResult"]
