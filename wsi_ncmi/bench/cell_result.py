"""The result of one bench cell: what ``result.json`` holds, as a typed record.

:func:`wsi_ncmi.bench.cells.run_cell` builds a :class:`CellResult` from the fold it trained
and writes :meth:`CellResult.to_json` as the cell's ``result.json``;
:func:`wsi_ncmi.bench.cells.read_result` reads it back with :meth:`CellResult.from_json`.
Every reader of finished cells (``results.csv``, the summary tables, the tuning choice,
``tools/bench``) takes these records.

Values a run could not define are NaN when the cell was trained by this process and
``None`` when it was read back (JSON writes NaN as ``null``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.losses.decision import PriorRule
from wsi_ncmi.train.attention_summary import AttentionSummary
from wsi_ncmi.train.evaluation import MetricsReport, optional_float
from wsi_ncmi.train.probe import ProbeResult


@dataclass(frozen=True)
class EpochValidation:
    """The validation values logged at one epoch of a cell.

    Attributes:
        epoch: The epoch.
        values: ``{key: value}`` of :data:`wsi_ncmi.bench.cells.VAL_KEYS` logged then.
    """

    epoch: int
    values: dict[str, float | None]

    def to_json(self) -> JSONObject:
        """``{"epoch": epoch, <key>: value, ...}``."""
        out: JSONObject = {"epoch": self.epoch}
        out.update(self.values)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpochValidation:
        """Read :meth:`to_json`'s form back."""
        values = {str(k): optional_float(v) for k, v in data.items() if k != "epoch"}
        return cls(int(data["epoch"]), values)


@dataclass(frozen=True)
class CellResult:
    """One finished cell: identity, selection, validation and test metrics, bookkeeping.

    Attributes:
        schema: :data:`wsi_ncmi.bench.plan.CELL_SCHEMA` of the writer.
        cell_id: The cell.
        loss: Loss label (after tuning: the loss family's label, see ``variant``).
        loss_name: Registered loss name.
        model: Aggregator label.
        model_name: Registered aggregator name.
        seed: Training seed.
        fold: Fold name.
        fold_index: Fold index in the split.
        test_centers: Hospitals of the fold's test part.
        config_hash: Hash of the cell's resolved training config.
        monitor: The validation metric the checkpoint was selected on.
        best_score: Its value at the selected checkpoint.
        best_epoch: The selected epoch.
        epochs_trained: Epochs run.
        val: Validation values of the selected epoch (``val/<key>`` without ``val/``).
        history: Per epoch: ``epoch`` and the same validation values.
        test: Test metrics, pooled and per hospital.
        decision_rule: The validation-fitted prior-aware rule (``None`` in older cells).
        test_by_decision: Test metrics under each decision rule.
        attention: Attention on true tumour, without the per-slide table (``None`` in
            older cells).
        probe: The linear probe's scores (``None`` in older cells).
        excluded: Slides left out for missing features.
        seconds: Wall time of the cell.
        host: Machine that trained it.
        pid: Process that trained it.
        finished_at: Local time it finished (``%Y-%m-%dT%H:%M:%S%z``).
        variant: After tuning, the chosen grid variant's label (never in ``result.json``).
    """

    schema: str
    cell_id: str
    loss: str
    loss_name: str
    model: str
    model_name: str
    seed: int
    fold: str
    fold_index: int
    test_centers: list[int]
    config_hash: str
    monitor: str
    best_score: float | None
    best_epoch: int | None
    epochs_trained: int
    val: dict[str, float | None]
    history: list[EpochValidation]
    test: MetricsReport
    decision_rule: PriorRule | None
    test_by_decision: dict[str, MetricsReport]
    attention: AttentionSummary | None
    probe: ProbeResult | None
    excluded: list[str]
    seconds: float
    host: str
    pid: int
    finished_at: str
    variant: str | None = None

    @property
    def run_key(self) -> tuple[str, str, int]:
        """``(model, loss, seed)``: the run whose folds this cell is one of."""
        return self.model, self.loss, self.seed

    def to_json(self) -> JSONObject:
        """``result.json``'s content (``variant`` only where set)."""
        out: JSONObject = {
            "schema": self.schema,
            "cell_id": self.cell_id,
            "loss": self.loss,
            "loss_name": self.loss_name,
            "model": self.model,
            "model_name": self.model_name,
            "seed": self.seed,
            "fold": self.fold,
            "fold_index": self.fold_index,
            "test_centers": list(self.test_centers),
            "config_hash": self.config_hash,
            "monitor": self.monitor,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "epochs_trained": self.epochs_trained,
            "val": dict(self.val),
            "history": [h.to_json() for h in self.history],
            "test": self.test.to_json(),
            "decision_rule": None if self.decision_rule is None else self.decision_rule.to_json(),
            "test_by_decision": {rule: r.to_json() for rule, r in self.test_by_decision.items()},
            "attention": None if self.attention is None else self.attention.to_json(),
            "probe": None if self.probe is None else self.probe.to_json(),
            "excluded": list(self.excluded),
            "seconds": self.seconds,
            "host": self.host,
            "pid": self.pid,
            "finished_at": self.finished_at,
        }
        if self.variant is not None:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CellResult:
        """Read ``result.json`` (``history`` and ``probe``, newer than the schema, may lack).

        Raises:
            KeyError, TypeError, ValueError: Not a cell result.
        """
        rule, attention, probe = data["decision_rule"], data["attention"], data.get("probe")
        return cls(
            schema=str(data["schema"]),
            cell_id=str(data["cell_id"]),
            loss=str(data["loss"]),
            loss_name=str(data["loss_name"]),
            model=str(data["model"]),
            model_name=str(data["model_name"]),
            seed=int(data["seed"]),
            fold=str(data["fold"]),
            fold_index=int(data["fold_index"]),
            test_centers=[int(c) for c in data["test_centers"]],
            config_hash=str(data["config_hash"]),
            monitor=str(data["monitor"]),
            best_score=optional_float(data["best_score"]),
            best_epoch=None if data["best_epoch"] is None else int(data["best_epoch"]),
            epochs_trained=int(data["epochs_trained"]),
            val={str(k): optional_float(v) for k, v in data["val"].items()},
            history=[EpochValidation.from_json(h) for h in data.get("history") or []],
            test=MetricsReport.from_json(data["test"]),
            decision_rule=PriorRule.from_json(rule) if rule else None,
            test_by_decision={
                str(name): MetricsReport.from_json(report)
                for name, report in data["test_by_decision"].items()
            },
            attention=AttentionSummary.from_json(attention) if attention else None,
            probe=ProbeResult.from_json(probe) if probe else None,
            excluded=[str(s) for s in data["excluded"]],
            seconds=float(data["seconds"]),
            host=str(data["host"]),
            pid=int(data["pid"]),
            finished_at=str(data["finished_at"]),
            variant=None if data.get("variant") is None else str(data["variant"]),
        )


__all__ = ["CellResult", "EpochValidation"]
