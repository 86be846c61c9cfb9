"""The typed result records and their JSON boundary.

A cell's ``result.json`` and a run's ``metrics.json`` are written from frozen records
(``to_json``) and read back into them (``from_json``): the keys keep the order the files
have always had, a NaN is written as ``null`` and reads back as ``None``, and a record
read back writes the same JSON again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _results import cell_result, group_metrics

from wsi_ncmi.bench.cell_result import CellResult, EpochValidation
from wsi_ncmi.bench.results import result_rows, write_results_csv
from wsi_ncmi.jsontypes import finite_json
from wsi_ncmi.manifest import ManifestRow
from wsi_ncmi.train.evaluation import GroupMetrics, MetricsReport
from wsi_ncmi.train.report import compute_report, write_json

CELL_KEYS = [
    "schema", "cell_id", "loss", "loss_name", "model", "model_name", "seed", "fold",
    "fold_index", "test_centers", "config_hash", "monitor", "best_score", "best_epoch",
    "epochs_trained", "val", "history", "test", "decision_rule", "test_by_decision",
    "attention", "probe", "excluded", "seconds", "host", "pid", "finished_at",
]  # fmt: skip
GROUP_KEYS = [
    "n", "macro_f1", "accuracy", "balanced_accuracy", "auroc_macro_ovr", "kappa_quadratic",
    "f1_per_class", "confusion_matrix", "macro_f1_ci95", "patients",
    "patient_kappa_quadratic", "patient_stage_accuracy", "undefined",
]  # fmt: skip


def _nan_cell() -> CellResult:
    nan = float("nan")
    return cell_result(
        val={"macro_f1": 0.5, "ncmi": nan},
        history=[EpochValidation(0, {"macro_f1": 0.25, "ncmi": nan})],
        test=MetricsReport(
            group_metrics(nan, macro_f1_ci95=(nan, nan)), {"0": group_metrics(kappa_quadratic=nan)}
        ),
    )


def test_a_cell_result_written_and_read_back_writes_the_same_json(tmp_path: Path) -> None:
    fresh = _nan_cell()
    path = write_json(fresh.to_json(), tmp_path / "result.json")
    text = path.read_text()
    data = json.loads(text)
    assert list(data) == CELL_KEYS
    assert list(data["test"]["pooled"]) == GROUP_KEYS
    assert data["test"]["pooled"]["macro_f1"] is None  # NaN is written as null
    assert data["history"] == [{"epoch": 0, "macro_f1": 0.25, "ncmi": None}]
    again = CellResult.from_json(data)
    assert again.test.pooled.macro_f1 is None  # ... and read back as None
    assert again.test.per_center["0"].kappa_quadratic is None
    assert again.val == {"macro_f1": 0.5, "ncmi": None}
    assert again.history == [EpochValidation(0, {"macro_f1": 0.25, "ncmi": None})]
    assert write_json(again.to_json(), tmp_path / "again.json").read_text() == text
    assert again.to_json() == finite_json(fresh.to_json())


def test_a_tuned_result_carries_its_variant_and_a_plain_one_does_not() -> None:
    import dataclasses

    plain = cell_result("ce_lr0.01")
    assert "variant" not in plain.to_json()
    tuned = dataclasses.replace(plain, loss="ce", variant="ce_lr0.01")
    assert tuned.to_json()["variant"] == "ce_lr0.01"
    assert CellResult.from_json(tuned.to_json()).variant == "ce_lr0.01"


def test_a_record_that_is_not_a_cell_result_does_not_read() -> None:
    data = cell_result().to_json()
    del data["test"]
    with pytest.raises(KeyError):
        CellResult.from_json(data)


def test_results_csv_keeps_nan_of_a_trained_cell_and_null_of_a_read_back_one(
    tmp_path: Path,
) -> None:
    """A trained cell's undefined metric is NaN (``nan`` in results.csv); one read back from
    result.json is null (an empty cell), as results.csv has always written them."""
    fresh = _nan_cell()
    read_back = CellResult.from_json(json.loads(json.dumps(finite_json(fresh.to_json()))))
    for result, expected in ((fresh, "nan"), (read_back, "")):
        path = write_results_csv(result_rows([result]), tmp_path / "results.csv")
        header, row = path.read_text().splitlines()
        values = dict(zip(header.split(","), row.split(","), strict=True))
        assert values["kappa_quadratic"] == expected
        assert values["val_ncmi"] == expected
        assert values["macro_f1"] == "0.5"


def test_a_report_keeps_its_keys_and_reads_back() -> None:
    rows = [ManifestRow(f"s{i}", f"p{i}", i % 2, ("negative", "macro")[i // 2]) for i in range(4)]
    records = [
        {
            "slide_id": r.slide_id,
            "patient_id": r.patient_id,
            "center": r.center,
            "true_label": r.label,
            "pred_label": "negative",
            "prob_negative": 0.7,
            "prob_itc": 0.1,
            "prob_micro": 0.1,
            "prob_macro": 0.1,
        }
        for r in rows
    ]
    report = compute_report(records, rows, n_bootstrap=10)
    data = report.to_json()
    assert list(data) == ["pooled", "per_center"]
    assert list(report.per_center) == ["0", "1"]
    assert [list(m.to_json()) for _, m in report.groups()] == [GROUP_KEYS] * 3
    per_class = {"negative": pytest.approx(2 / 3), "itc": 0.0, "micro": 0.0, "macro": 0.0}
    assert report.pooled.f1_per_class == per_class
    back = MetricsReport.from_json(json.loads(json.dumps(finite_json(data))))
    assert back.to_json() == finite_json(data)
    assert back.group("pooled") == back.pooled
    assert back.group("7") is None
    assert math.isnan(GroupMetrics.from_json({"n": 0}).scalar("macro_f1"))
