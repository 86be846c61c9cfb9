"""Typed test metrics: of one group of slides, and of a run's groups (pooled and per hospital).

:func:`wsi_ncmi.train.metrics.classification_metrics` returns a
:class:`ClassificationMetrics`; :func:`wsi_ncmi.train.report.compute_report` extends it to
a :class:`GroupMetrics` per group and returns a :class:`MetricsReport`. Every writer
(``metrics.json``, ``summary.txt``, ``report.html``, a bench cell's ``result.json`` and
``results.csv``) reads these records; ``to_json`` gives the JSON form, key for key.

An undefined metric is NaN; read back from JSON (which writes NaN as ``null``) it is
``None``, so a value written and read back is the one that was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from wsi_ncmi.jsontypes import JSONObject

#: The metrics of a group that are single numbers (see :meth:`GroupMetrics.scalar`), in the
#: order of their columns in wsi-bench's results.csv (:data:`wsi_ncmi.bench.results.TEST_KEYS`).
ScalarMetric = Literal[
    "n",
    "macro_f1",
    "accuracy",
    "balanced_accuracy",
    "auroc_macro_ovr",
    "kappa_quadratic",
    "patients",
    "patient_kappa_quadratic",
    "patient_stage_accuracy",
]


def optional_float(value: Any) -> float | None:
    """A JSON number as a float, ``None`` for ``null``."""
    return None if value is None else float(value)


@dataclass(frozen=True)
class ClassificationMetrics:
    """Slide-level metrics of one group of slides.

    Attributes:
        n: Slides.
        macro_f1: Macro-F1 over the classes present in the truth or the predictions.
        accuracy: Accuracy.
        balanced_accuracy: Mean recall of the classes present in the truth.
        auroc_macro_ovr: One-vs-rest AUROC averaged over the classes with positives and
            negatives (NaN without scores).
        kappa_quadratic: Quadratic-weighted Cohen's kappa.
        f1_per_class: F1 of each class, in class order (0 where undefined).
        confusion_matrix: ``(C, C)`` counts, rows = true class.
    """

    n: int
    macro_f1: float
    accuracy: float
    balanced_accuracy: float
    auroc_macro_ovr: float
    kappa_quadratic: float
    f1_per_class: dict[str, float]
    confusion_matrix: list[list[int]]


@dataclass(frozen=True)
class GroupMetrics:
    """Test metrics of one group of slides (a hospital, or the pooled slides).

    Attributes:
        n: Slides.
        macro_f1: Macro-F1 (undefined with fewer than 2 true classes).
        accuracy: Accuracy.
        balanced_accuracy: Balanced accuracy.
        auroc_macro_ovr: Macro one-vs-rest AUROC.
        kappa_quadratic: Quadratic-weighted kappa (undefined with fewer than 2 true
            classes).
        f1_per_class: F1 of each class, in class order.
        confusion_matrix: ``(C, C)`` counts, rows = true class.
        macro_f1_ci95: ``(low, high)`` bootstrap 95% interval of macro-F1.
        patients: Patients whose slides were all predicted.
        patient_kappa_quadratic: Quadratic kappa of their pN stages.
        patient_stage_accuracy: Share of them whose pN stage is right.
        undefined: ``{metric: reason}`` of the metrics the group cannot define.
    """

    n: int
    macro_f1: float | None
    accuracy: float | None
    balanced_accuracy: float | None
    auroc_macro_ovr: float | None
    kappa_quadratic: float | None
    f1_per_class: dict[str, float]
    confusion_matrix: list[list[int]]
    macro_f1_ci95: tuple[float | None, float | None]
    patients: int
    patient_kappa_quadratic: float | None
    patient_stage_accuracy: float | None
    undefined: dict[str, str]

    def value(self, name: ScalarMetric) -> float | None:
        """The metric ``name`` as stored (an int for ``n`` and ``patients``)."""
        value: float | None = getattr(self, name)
        return value

    def scalar(self, name: ScalarMetric) -> float:
        """The metric ``name`` as a float (NaN where undefined)."""
        value = self.value(name)
        return float("nan") if value is None else float(value)

    def to_json(self) -> JSONObject:
        """The group's entry of ``metrics.json`` (NaN stays NaN; the writer makes it null)."""
        low, high = self.macro_f1_ci95
        return {
            "n": self.n,
            "macro_f1": self.macro_f1,
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "auroc_macro_ovr": self.auroc_macro_ovr,
            "kappa_quadratic": self.kappa_quadratic,
            "f1_per_class": dict(self.f1_per_class),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "macro_f1_ci95": [low, high],
            "patients": self.patients,
            "patient_kappa_quadratic": self.patient_kappa_quadratic,
            "patient_stage_accuracy": self.patient_stage_accuracy,
            "undefined": dict(self.undefined),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GroupMetrics:
        """Read :meth:`to_json`'s form back (a missing key reads as undefined)."""
        low, high = data.get("macro_f1_ci95") or (None, None)
        return cls(
            n=int(data["n"]),
            macro_f1=optional_float(data.get("macro_f1")),
            accuracy=optional_float(data.get("accuracy")),
            balanced_accuracy=optional_float(data.get("balanced_accuracy")),
            auroc_macro_ovr=optional_float(data.get("auroc_macro_ovr")),
            kappa_quadratic=optional_float(data.get("kappa_quadratic")),
            f1_per_class={str(k): float(v) for k, v in (data.get("f1_per_class") or {}).items()},
            confusion_matrix=[[int(c) for c in row] for row in data.get("confusion_matrix") or []],
            macro_f1_ci95=(optional_float(low), optional_float(high)),
            patients=int(data.get("patients") or 0),
            patient_kappa_quadratic=optional_float(data.get("patient_kappa_quadratic")),
            patient_stage_accuracy=optional_float(data.get("patient_stage_accuracy")),
            undefined={str(k): str(v) for k, v in (data.get("undefined") or {}).items()},
        )


@dataclass(frozen=True)
class MetricsReport:
    """Test metrics of the pooled slides and of each test hospital.

    Attributes:
        pooled: Every predicted slide.
        per_center: ``{hospital: metrics}``, hospitals in increasing order, as strings
            (the JSON keys).
    """

    pooled: GroupMetrics
    per_center: dict[str, GroupMetrics]

    def groups(self) -> list[tuple[str, GroupMetrics]]:
        """``("center<k>", metrics)`` per hospital, then ``("pooled", metrics)``."""
        return [(f"center{c}", m) for c, m in self.per_center.items()] + [("pooled", self.pooled)]

    def group(self, name: str) -> GroupMetrics | None:
        """``"pooled"`` or a hospital's metrics (``None`` if the report lacks it)."""
        return self.pooled if name == "pooled" else self.per_center.get(name)

    def to_json(self) -> JSONObject:
        """``{"pooled": {...}, "per_center": {"0": {...}, ...}}``."""
        return {
            "pooled": self.pooled.to_json(),
            "per_center": {c: m.to_json() for c, m in self.per_center.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricsReport:
        """Read :meth:`to_json`'s form back."""
        return cls(
            pooled=GroupMetrics.from_json(data["pooled"]),
            per_center={
                str(c): GroupMetrics.from_json(m) for c, m in (data.get("per_center") or {}).items()
            },
        )


__all__ = [
    "ClassificationMetrics",
    "GroupMetrics",
    "MetricsReport",
    "ScalarMetric",
    "optional_float",
]
