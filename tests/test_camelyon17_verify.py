"""The CAMELYON-17 download verifier on a tiny fake layout."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

from _slides import tissue_image, truncate, write_pyramid_tiff

TOOL = Path(__file__).resolve().parents[1] / "tools" / "camelyon17" / "verify.py"


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("c17_verify", TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verify_reports_each_problem(tmp_path: Path) -> None:
    tool = _load_tool()
    root = tmp_path / "c17"
    (root / "center_0").mkdir(parents=True)
    ids = [f"patient_000_node_{i}" for i in range(5)]
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "slide_id,patient_id,center,label\n"
        + "".join(f"{sid},patient_000,0,negative\n" for sid in ids)
    )
    good = write_pyramid_tiff(root / "center_0" / f"{ids[0]}.tif", tissue_image(128, 96))
    write_pyramid_tiff(root / "center_0" / f"{ids[1]}.tif", tissue_image(128, 96, seed=1))
    truncate(write_pyramid_tiff(root / "center_0" / f"{ids[2]}.tif", tissue_image(128, 96)))
    (root / "center_0" / f"{ids[3]}.tif").write_bytes(b"")
    md5 = tmp_path / "checksums.md5"
    digest = hashlib.md5(good.read_bytes(), usedforsecurity=False).hexdigest()
    md5.write_text(
        f"{digest}  CAMELYON17/training/center_0/{ids[0]}.tif\n{'0' * 32}  {ids[1]}.tif\n"
    )
    report = tmp_path / "r.json"
    code = tool.main(
        [str(root), "--manifest", str(manifest), "--md5", str(md5), "--open", "--json", str(report)]
    )
    statuses = {r["slide_id"]: r["status"] for r in json.loads(report.read_text())}
    assert statuses == {
        ids[0]: "ok",
        ids[1]: "bad_md5",
        ids[2]: "unreadable",
        ids[3]: "empty",
        ids[4]: "missing",
    }
    assert code == 1
