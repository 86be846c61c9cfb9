"""The comparisons of ``tools/check_outputs_identical.py`` on hand-made files (no pipeline run)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import check_outputs_identical as check

RESULTS = Path("bench") / "synthetic_demo" / "results.csv"


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(row[c] for c in header) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _h5(path: Path, features: np.ndarray, **attrs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"slide_id": "s0", **attrs})
        h5.create_dataset("features", data=features)
        h5.create_dataset("coords", data=np.arange(6, dtype=np.int64).reshape(3, 2))
    return path


ROW = {"loss": "ce", "macro_f1": "0.5", "seconds": "1.2", "config_hash": "abc"}


def test_csv_differences_name_row_and_column(tmp_path: Path) -> None:
    a = _csv(tmp_path / "a" / "results.csv", [ROW, {**ROW, "loss": "ncmi"}])
    same = _csv(tmp_path / "b" / "results.csv", [ROW, {**ROW, "loss": "ncmi", "seconds": "9"}])
    assert check.compare_csv(a, same, check.RUN_DEPENDENT_COLUMNS) == []
    assert check.compare_csv(a, same) == ["results.csv row 2 column seconds: '1.2' != '9'"]
    other = _csv(tmp_path / "c" / "results.csv", [ROW, {**ROW, "macro_f1": "0.51"}])
    assert check.compare_csv(a, other, check.RUN_DEPENDENT_COLUMNS) == [
        "results.csv row 2 column loss: 'ncmi' != 'ce'",
        "results.csv row 2 column macro_f1: '0.5' != '0.51'",
    ]
    short = _csv(tmp_path / "d" / "results.csv", [ROW])
    assert check.compare_csv(a, short) == ["results.csv: 2 rows in base, 1 in head"]
    wider = _csv(tmp_path / "e" / "results.csv", [{**ROW, "extra": "1"}, {**ROW, "extra": "1"}])
    assert "only in head ['extra']" in check.compare_csv(a, wider)[0]


def test_h5_bitwise_then_content_with_run_dependent_attributes_ignored(tmp_path: Path) -> None:
    features = np.linspace(0, 1, 12, dtype=np.float16).reshape(3, 4)
    a = _h5(tmp_path / "a.h5", features, slide_mtime="1.0")
    copy = tmp_path / "copy.h5"
    shutil.copyfile(a, copy)
    assert check.compare_h5(a, copy, check.RUN_DEPENDENT_ATTRS) == (True, [])
    later = _h5(tmp_path / "b.h5", features, slide_mtime="2.0")
    assert check.compare_h5(a, later, check.RUN_DEPENDENT_ATTRS) == (False, [])
    assert check.compare_h5(a, later) == (False, ["a.h5: / attribute slide_mtime: '1.0' != '2.0'"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"features": np.full((3, 4), 0.5, np.float16)}, "a.h5: features values differ"),
        ({"features": np.zeros((3, 4), np.float32)}, "a.h5: features dtype/shape"),
        ({"features": np.zeros((4, 4), np.float16)}, "a.h5: features dtype/shape"),
        ({"encoder": "other"}, "a.h5: / attribute encoder only in head"),
    ],
)
def test_h5_content_differences_are_named(
    tmp_path: Path, change: dict[str, Any], expected: str
) -> None:
    features = np.zeros((3, 4), np.float16)
    a = _h5(tmp_path / "a.h5", features, slide_mtime="1.0")
    new_features = change.pop("features", features)
    b = _h5(tmp_path / "b.h5", new_features, slide_mtime="2.0", **change)
    same_bytes, problems = check.compare_h5(a, b, check.RUN_DEPENDENT_ATTRS)
    assert not same_bytes
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_nan_features_compare_equal_by_bytes(tmp_path: Path) -> None:
    nan = np.full((3, 4), np.nan, np.float16)
    a = _h5(tmp_path / "a.h5", nan, slide_mtime="1.0")
    b = _h5(tmp_path / "b.h5", nan.copy(), slide_mtime="2.0")
    assert check.compare_h5(a, b, check.RUN_DEPENDENT_ATTRS) == (False, [])


def test_output_trees_verdict(tmp_path: Path) -> None:
    features = np.zeros((3, 4), np.float16)
    for side, seconds in (("base", "1.0"), ("head", "7.5")):
        _csv(tmp_path / side / RESULTS, [{**ROW, "seconds": seconds}])
        _h5(tmp_path / side / "tiles" / "features" / "s0.h5", features, slide_mtime=side)
    notes, problems = check.compare_outputs(
        tmp_path / "base", tmp_path / "head", require_bytes=False
    )
    assert problems == []
    assert notes[0] == f"same: {RESULTS} (1 rows)"
    assert "1 files in both; 0 bitwise identical, 1 with the same datasets" in notes[1]
    _, strict = check.compare_outputs(tmp_path / "base", tmp_path / "head")
    assert strict == [
        "tiles/features/s0.h5: other bytes, same datasets and attributes but slide_mtime"
    ]
    _h5(tmp_path / "head" / "tiles" / "features" / "s0.h5", features + 1, slide_mtime="x")
    _h5(tmp_path / "head" / "tiles" / "features" / "s1.h5", features, slide_mtime="x")
    _csv(tmp_path / "head" / RESULTS, [{**ROW, "macro_f1": "0.9"}])
    _, problems = check.compare_outputs(tmp_path / "base", tmp_path / "head", require_bytes=False)
    assert problems == [
        f"{RESULTS.parent}/results.csv row 1 column macro_f1: '0.5' != '0.9'",
        "tiles/features/s1.h5: only in head",
        "tiles/features/s0.h5: features values differ",
    ]


def test_trees_compare_every_file_by_bytes(tmp_path: Path) -> None:
    for side in ("a", "b"):
        (tmp_path / side / "center_0").mkdir(parents=True)
        (tmp_path / side / "center_0" / "s.tif").write_bytes(b"tiff")
    assert check.compare_trees(tmp_path / "a", tmp_path / "b") == []
    (tmp_path / "b" / "center_0" / "s.tif").write_bytes(b"tifg")
    (tmp_path / "b" / "extra.json").write_text("{}")
    assert check.compare_trees(tmp_path / "a", tmp_path / "b") == [
        "extra.json: only in head",
        "center_0/s.tif: other bytes",
    ]


def test_the_demo_is_called_in_its_own_spelling() -> None:
    """A base commit's demo may spell its flags as before issue 25 (``--out``, dashes)."""
    from wsi_ncmi.cli.common import parse
    from wsi_ncmi.demo import build_parser

    now = check.demo_args(build_parser().format_help())
    assert now == list(check.DEMO_ARGS)
    assert parse(build_parser(), now).out_dir == "out"  # every flag is the demo's
    old = check.demo_args("usage: demo [--out DIR] [--slides-per-center N] [--no-progress]")
    assert old[:6] == ["--out", "out", "--slides-per-center", "2", "--workers", "1"]
    assert old[6:8] == ["--no-progress", "--set"]
    assert old[8:] == now[9:]
