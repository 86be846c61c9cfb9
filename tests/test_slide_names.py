"""Slide ids come from the manifest or from the path as given, never a symlink's target."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
from _cli_args import EXTRACT_CPU, TILE_SMALL
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.cli.extract import main as extract_main
from wsi_ncmi.cli.tile import main as tile_main
from wsi_ncmi.manifest import ManifestRow, write_manifest

TILE = TILE_SMALL
EXTRACT = (*EXTRACT_CPU, "--workers", "0", "--skip_errors")


def _scanner_files(root: Path) -> list[Path]:
    """Two slides under scanner names, linked as CASE_A / CASE_B in ``root/links``."""
    (root / "scanner").mkdir(parents=True)
    (root / "links").mkdir()
    targets = []
    for i, case in enumerate(("CASE_A", "CASE_B")):
        target = root / "scanner" / f"patient_00{i}_node_0.tif"
        write_pyramid_tiff(target, tissue_image(640, 480, seed=i))
        (root / "links" / f"{case}.tif").symlink_to(target)
        targets.append(target)
    return targets


def _results(out: Path, stage: str) -> dict[str, dict[str, object]]:
    (path,) = sorted((out / "reports").glob(f"{stage}_*.json"))[-1:]
    return {r["item_id"]: r for r in json.loads(path.read_text())["results"]}


def test_manifest_ids_through_symlinks_reach_features(tmp_path: Path) -> None:
    _scanner_files(tmp_path)
    rows = [ManifestRow(c, f"p{i}", 0, "negative") for i, c in enumerate(("CASE_A", "CASE_B"))]
    write_manifest(rows, tmp_path / "manifest.csv")
    out = tmp_path / "out"
    args = ["--manifest", str(tmp_path / "manifest.csv"), "--slide_dir", str(tmp_path / "links")]
    assert tile_main([*args, "--out_dir", str(out), *TILE]) == 0
    assert sorted(p.name for p in (out / "coords").glob("*.h5")) == ["CASE_A.h5", "CASE_B.h5"]
    with h5py.File(out / "coords" / "CASE_A.h5") as h5:
        assert h5.attrs["slide_id"] == "CASE_A"
        assert h5.attrs["slide_path"] == str(tmp_path / "links" / "CASE_A.tif")  # as given
    assert extract_main(["--out_dir", str(out), *EXTRACT]) == 0
    features = sorted(p.name for p in (out / "features" / "random-cnn").glob("*.h5"))
    assert features == ["CASE_A.h5", "CASE_B.h5"]


def test_without_manifest_the_link_name_is_the_id(tmp_path: Path) -> None:
    _scanner_files(tmp_path)
    out = tmp_path / "out"
    assert tile_main([str(tmp_path / "links"), "--out_dir", str(out), *TILE]) == 0
    assert set(_results(out, "wsi-tile")) == {"CASE_A", "CASE_B"}
    link = tmp_path / "links" / "CASE_A.tif"
    out2 = tmp_path / "out2"
    assert tile_main([str(link), "--out_dir", str(out2), *TILE]) == 0
    assert set(_results(out2, "wsi-tile")) == {"CASE_A"}


def test_dangling_link_has_its_own_error_naming_the_link(tmp_path: Path) -> None:
    (tmp_path / "slides").mkdir()
    write_pyramid_tiff(tmp_path / "slides" / "good.tif", tissue_image(640, 480))
    link = tmp_path / "slides" / "dangling.svs"
    link.symlink_to(tmp_path / "elsewhere" / "slide.svs")
    out = tmp_path / "out"
    assert tile_main([str(tmp_path / "slides"), "--out_dir", str(out), *TILE]) == 1
    results = _results(out, "wsi-tile")
    assert results["good"]["status"] == "ok"
    bad = results["dangling"]
    assert bad["status"] == "failed"
    assert bad["error_type"] == "DanglingLinkError"
    assert str(link) in str(bad["reason"])
    assert "slide.svs" in str(bad["reason"])
    assert "symbolic link" in str(bad["reason"])
