"""Slide manifests: a CSV with one row per slide, validated at the boundary.

Required columns: ``slide_id``, ``patient_id``, ``center`` (non-negative integer) and
``label`` (one of :data:`LABELS`). Any other column (for example ``pN_stage`` or
``label_2016``) is kept as a string in :attr:`ManifestRow.extra`. A patient's slides must
all come from one center; slide ids must be unique. Every problem raises
:class:`~wsi_ncmi.errors.ManifestError` naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wsi_ncmi.errors import ManifestError
from wsi_ncmi.ids import slide_id_problems

#: Slide labels in class-index order (CAMELYON-17 metastasis size classes).
LABELS: tuple[str, ...] = ("negative", "itc", "micro", "macro")
#: Columns every manifest must have, in the order they are written.
REQUIRED_COLUMNS: tuple[str, ...] = ("slide_id", "patient_id", "center", "label")


@dataclass(frozen=True)
class ManifestRow:
    """One slide of a manifest.

    Attributes:
        slide_id: Unique slide id, e.g. ``patient_000_node_0``.
        patient_id: Patient id, e.g. ``patient_000``.
        center: Hospital index.
        label: One of :data:`LABELS`.
        extra: Other columns as ``(name, value)`` pairs, in file order.
    """

    slide_id: str
    patient_id: str
    center: int
    label: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def label_index(self) -> int:
        """Index of :attr:`label` in :data:`LABELS`."""
        return LABELS.index(self.label)

    @property
    def relative_path(self) -> Path:
        """Slide path in the CAMELYON layout: ``center_K/<slide_id>.tif``."""
        return Path(f"center_{self.center}") / f"{self.slide_id}.tif"

    def get(self, column: str, default: str | None = None) -> str | None:
        """Return an extra column's value.

        Args:
            column: Column name.
            default: Returned when the column is absent.

        Returns:
            The value, or ``default``.
        """
        return dict(self.extra).get(column, default)


def _fail(path: Path, line: int | None, problem: str, fix: str) -> ManifestError:
    where = f"{path}" if line is None else f"{path}, line {line}"
    return ManifestError(f"{where}: {problem}. Fix: {fix}")


def _parse_center(path: Path, line: int, value: str) -> int:
    try:
        center = int(value)
    except ValueError as err:
        raise _fail(
            path,
            line,
            f"center {value!r} is not an integer",
            "write the hospital index (0, 1, 2, ...)",
        ) from err
    if center < 0:
        raise _fail(
            path, line, f"center {center!r} is negative", "write the hospital index (0, 1, 2, ...)"
        )
    return center


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read and validate a slide manifest.

    Args:
        path: CSV file; when no such file exists, a manifest shipped with the package of
            that name (``camelyon17.csv``, ``data_manifests/camelyon17.csv``).

    Returns:
        The rows, in file order.

    Raises:
        ManifestError: If the file is missing or empty, lacks a required column, or has an
            unknown label, an empty id, a missing or invalid center, a duplicate slide id,
            a patient whose slides name different centers, or slide ids that break the
            rule of :mod:`wsi_ncmi.ids` (every offending row is listed).
    """
    from wsi_ncmi.packaged import resolve_packaged

    path = Path(resolve_packaged(path, "data_manifests"))  # the packaged one, by name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise _fail(
            path,
            None,
            f"cannot read the manifest ({err.strerror})",
            "pass the path of an existing CSV file",
        ) from err
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in (reader.fieldnames or [])]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise _fail(
            path,
            1,
            f"missing column(s) {missing}; header is {header}",
            f"the header must contain {list(REQUIRED_COLUMNS)}",
        )
    reader.fieldnames = header
    rows: list[ManifestRow] = []
    first_line: dict[str, int] = {}
    patient_center: dict[str, tuple[int, int]] = {}
    for line, record in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in record.items() if k is not None}
        slide_id, patient_id = values["slide_id"], values["patient_id"]
        if not slide_id or not patient_id:
            raise _fail(
                path,
                line,
                "empty slide_id or patient_id",
                "give every row a slide id and a patient id",
            )
        label = values["label"]
        if label not in LABELS:
            raise _fail(
                path,
                line,
                f"unknown label {label!r} for slide {slide_id!r}",
                f"use one of {list(LABELS)} (lower case)",
            )
        if not values["center"]:
            raise _fail(
                path,
                line,
                f"slide {slide_id!r} has no center",
                "write the hospital index (0, 1, 2, ...)",
            )
        center = _parse_center(path, line, values["center"])
        if slide_id in first_line:
            raise _fail(
                path,
                line,
                f"duplicate slide_id {slide_id!r} (first on line {first_line[slide_id]})",
                "keep one row per slide",
            )
        first_line[slide_id] = line
        seen = patient_center.setdefault(patient_id, (center, line))
        if seen[0] != center:
            raise _fail(
                path,
                line,
                f"patient {patient_id!r} has center {center} here but center "
                f"{seen[0]} on line {seen[1]}",
                "all slides of a patient must come from one center",
            )
        extra = tuple((k, v) for k, v in values.items() if k not in REQUIRED_COLUMNS)
        rows.append(ManifestRow(slide_id, patient_id, center, label, extra))
    if not rows:
        raise _fail(path, None, "the manifest has no rows", "add one row per slide")
    problems = slide_id_problems((f"line {first_line[r.slide_id]}", r.slide_id) for r in rows)
    if problems:
        listed = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise _fail(
            path,
            None,
            f"{len(problems)} slide id(s) cannot name output files:\n  {listed}{more}\n",
            "rename them (no '/', '\\', '..' or control characters; ids must differ in "
            "more than case); nothing was written",
        )
    return rows


def write_manifest(rows: Iterable[ManifestRow], path: str | Path) -> None:
    """Write rows as a manifest CSV (required columns first, then the extra columns).

    Args:
        rows: Rows to write; their extra columns must agree.
        path: Output file.
    """
    rows = list(rows)
    extra_columns = [name for name, _ in rows[0].extra] if rows else []
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*REQUIRED_COLUMNS, *extra_columns])
        for row in rows:
            extras = dict(row.extra)
            writer.writerow(
                [
                    row.slide_id,
                    row.patient_id,
                    row.center,
                    row.label,
                    *(extras.get(name, "") for name in extra_columns),
                ]
            )
