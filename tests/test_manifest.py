from __future__ import annotations

import collections
import csv
import importlib.util
from pathlib import Path

import pytest

from wsi_ncmi.errors import ManifestError
from wsi_ncmi.manifest import LABELS, ManifestRow, read_manifest, write_manifest

GOOD = "slide_id,patient_id,center,label\np_0_node_0,p_0,0,negative\np_0_node_1,p_0,0,macro\n"
CHANGED_SLIDES = {
    "patient_022_node_4": ("negative", "macro"),
    "patient_038_node_2": ("negative", "micro"),
    "patient_086_node_0": ("negative", "itc"),
    "patient_086_node_4": ("negative", "itc"),
    "patient_089_node_3": ("itc", "micro"),
    "patient_097_node_1": ("negative", "macro"),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slides.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_label_indices_rank_severity_as_the_pn_stage_does(camelyon_manifest_path: Path) -> None:
    """Class indices are ordered by metastasis size: on the real label file, each patient's
    worst node (highest index) gives its pN stage (pN0, pN0(i+), pN1mi, pN1/pN2)."""
    stage_of_worst = {0: {"pN0"}, 1: {"pN0(i+)"}, 2: {"pN1mi"}, 3: {"pN1", "pN2"}}
    worst: dict[str, int] = collections.defaultdict(int)
    stages = {}
    for row in read_manifest(camelyon_manifest_path):
        assert LABELS[row.label_index] == row.label
        worst[row.patient_id] = max(worst[row.patient_id], row.label_index)
        stages[row.patient_id] = dict(row.extra)["pN_stage"]
    assert len(worst) == 100
    for patient, index in worst.items():
        assert stages[patient] in stage_of_worst[index], patient


def test_reads_good_manifest(tmp_path: Path) -> None:
    rows = read_manifest(
        _write(
            tmp_path,
            GOOD.replace("label\n", "label,extra\n")
            .replace("negative\n", "negative,a\n")
            .replace("macro\n", "macro,b\n"),
        )
    )
    assert rows[1] == ManifestRow("p_0_node_1", "p_0", 0, "macro", (("extra", "b"),))
    assert rows[1].label_index == 3
    assert rows[1].relative_path == Path("center_0/p_0_node_1.tif")
    assert rows[0].get("extra") == "a"
    assert rows[0].get("missing") is None


def test_write_manifest_round_trip(tmp_path: Path, camelyon_manifest_path: Path) -> None:
    rows = read_manifest(camelyon_manifest_path)
    out = tmp_path / "copy.csv"
    write_manifest(rows, out)
    assert out.read_bytes() == camelyon_manifest_path.read_bytes()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("slide_id,patient_id,label\na,p,negative\n", "missing column(s) ['center']"),
        ("slide_id,patient_id,center,label\na,p,0,tumor\n", "unknown label 'tumor'"),
        ("slide_id,patient_id,center,label\na,p,0,Negative\n", "unknown label 'Negative'"),
        ("slide_id,patient_id,center,label\na,p,0,itc\na,p,0,itc\n", "duplicate slide_id 'a'"),
        ("slide_id,patient_id,center,label\na,p,,itc\n", "has no center"),
        ("slide_id,patient_id,center,label\na,p,one,itc\n", "center 'one' is not an integer"),
        ("slide_id,patient_id,center,label\na,p,-1,itc\n", "center -1 is negative"),
        (
            "slide_id,patient_id,center,label\na,p,0,itc\nb,p,1,itc\n",
            "patient 'p' has center 1 here but center 0 on line 2",
        ),
        ("slide_id,patient_id,center,label\n,p,0,itc\n", "empty slide_id or patient_id"),
        ("slide_id,patient_id,center,label\n", "no rows"),
    ],
)
def test_manifest_errors_name_file_line_and_fix(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    assert "Fix:" in message
    if "no rows" not in needle:
        assert ", line " in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        read_manifest(tmp_path / "absent.csv")


def test_camelyon_manifest_counts(camelyon_manifest_path: Path) -> None:
    rows = read_manifest(camelyon_manifest_path)
    assert len(rows) == 500
    assert len({r.patient_id for r in rows}) == 100
    totals = collections.Counter(r.label for r in rows)
    assert totals == {"negative": 318, "itc": 36, "micro": 59, "macro": 87}
    assert all(r.center == int(r.patient_id[-3:]) // 20 for r in rows)
    assert all((r.get("pN_stage") or "").startswith("pN") for r in rows)
    changed = {
        r.slide_id: (r.get("label_2016"), r.label) for r in rows if r.get("label_2016") != r.label
    }
    assert changed == CHANGED_SLIDES


def test_camelyon_manifest_matches_source(
    camelyon_manifest_path: Path, shared_data_dir: Path
) -> None:
    with (shared_data_dir / "camelyon17_stages_with_center.csv").open() as handle:
        source = [r for r in csv.DictReader(handle) if r["patient"].endswith(".tif")]
    expected = collections.Counter((int(r["center"]), r["stage"]) for r in source)
    rows = read_manifest(camelyon_manifest_path)
    assert collections.Counter((r.center, r.label) for r in rows) == expected


def test_make_manifest_is_up_to_date(
    repo_root: Path, camelyon_manifest_path: Path, shared_data_dir: Path, tmp_path: Path
) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_manifest", repo_root / "tools" / "make_manifest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "camelyon17.csv"
    assert tool.main(["--shared", str(shared_data_dir.parent), "--out", str(out)]) == 0
    assert out.read_bytes() == camelyon_manifest_path.read_bytes()
