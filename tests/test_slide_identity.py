"""Slide identity in every output: a re-scanned slide is redone, never silently reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from _cli_args import EXTRACT_CPU, TILE_SMALL
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.cli.extract import main as extract_main
from wsi_ncmi.cli.tile import main as tile_main
from wsi_ncmi.errors import CacheSchemaError, SlideChangedError
from wsi_ncmi.features.provenance import check_features_coords
from wsi_ncmi.slide.identity import SlideIdentity, fingerprint_file

TILE = TILE_SMALL
EXTRACT = (*EXTRACT_CPU, "--workers", "0", "--skip_errors")


def _slide(path: Path, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_pyramid_tiff(path, tissue_image(width, height, seed=seed))


def _last_report(out: Path, stage: str) -> dict[str, Any]:
    paths = sorted((out / "reports").glob(f"{stage}_*.json"))
    return json.loads(paths[-1].read_text())


def _results(report: dict[str, Any]) -> dict[str, dict[str, object]]:
    return {r["item_id"]: r for r in report["results"]}


def _tile(slides: Path, out: Path) -> int:
    return tile_main([str(slides), "--out_dir", str(out), *TILE])


def _extract(out: Path, *extra: str) -> int:
    return extract_main(["--out_dir", str(out), *EXTRACT, *extra])


def test_fingerprint_follows_content_not_copies(tmp_path: Path) -> None:
    a = _slide(tmp_path / "a.tif")
    copy = tmp_path / "copy.tif"
    shutil.copyfile(a, copy)  # a new mtime, same bytes
    assert fingerprint_file(copy) == fingerprint_file(a)
    rescan = _slide(tmp_path / "rescan.tif", seed=5)  # same geometry, other pixels
    assert fingerprint_file(rescan) != fingerprint_file(a)
    data = bytearray(a.read_bytes())
    data[10] ^= 0xFF  # inside the TIFF header/first directory
    flipped = tmp_path / "flipped.tif"
    flipped.write_bytes(bytes(data))
    assert fingerprint_file(flipped) != fingerprint_file(a)
    old = SlideIdentity.of_file(a, (640, 480))
    new = SlideIdentity.of_file(rescan, (640, 480))
    assert any(d.startswith("fingerprint") for d in old.differences(new))
    assert old.differences(SlideIdentity.of_file(copy, (640, 480))) == []


def test_rescanned_slide_is_retiled_and_its_features_redone(tmp_path: Path) -> None:
    slides, out = tmp_path / "slides", tmp_path / "out"
    _slide(slides / "a.tif")
    _slide(slides / "b.tif", seed=1)
    assert _tile(slides, out) == 0
    with h5py.File(out / "coords" / "a.h5") as h5:
        recorded = SlideIdentity.from_attrs(dict(h5.attrs))
        assert h5.attrs["coords_sha256"]
    assert recorded.fingerprint == fingerprint_file(slides / "a.tif")
    assert (recorded.width, recorded.height) == (640, 480)
    assert _extract(out) == 0
    before = (out / "features" / "random-cnn" / "a.h5").read_bytes()

    # An identical copy (new mtime) is not a change: both slides are skipped.
    shutil.copyfile(slides / "b.tif", tmp_path / "b.tif")
    shutil.move(tmp_path / "b.tif", slides / "b.tif")
    assert _tile(slides, out) == 0
    assert {r["status"] for r in _results(_last_report(out, "wsi-tile")).values()} == {"skipped"}

    # A re-scan under the same name: wsi-extract refuses the old coords, naming both scans.
    _slide(slides / "a.tif", width=704, height=512, seed=3)
    assert _extract(out) == 1
    failed = _results(_last_report(out, "wsi-extract"))["a"]
    assert failed["error_type"] == "SlideChangedError"
    for fragment in ("640x480", "704x512", "re-run wsi-tile", str(slides / "a.tif")):
        assert fragment in str(failed["reason"])
    assert (out / "features" / "random-cnn" / "a.h5").read_bytes() == before  # untouched

    # wsi-tile redoes it and says why; wsi-extract then redoes the features.
    assert _tile(slides, out) == 0
    tiled = _results(_last_report(out, "wsi-tile"))
    assert tiled["a"]["status"] == "ok"
    assert str(tiled["a"]["reason"]).startswith("redone: slide changed")
    assert tiled["b"]["status"] == "skipped"
    assert _extract(out) == 0
    extracted = _results(_last_report(out, "wsi-extract"))
    assert extracted["a"]["status"] == "ok"
    assert "another scan of the slide" in str(extracted["a"]["reason"])
    assert extracted["b"]["status"] == "skipped"
    features = out / "features" / "random-cnn" / "a.h5"
    assert check_features_coords(features)
    with h5py.File(features) as h5:
        assert h5.attrs["slide_fingerprint"] == fingerprint_file(slides / "a.tif")
        assert h5.attrs["slide_width"] == 704


def _strip_identity(coords_file: Path) -> None:
    """Make a coords file look written by an older wsi-ncmi (no identity attributes)."""
    with h5py.File(coords_file, "r+") as h5:
        for key in ("slide_size", "slide_mtime", "slide_fingerprint", "coords_sha256"):
            del h5.attrs[key]


def test_old_coords_without_fingerprint(tmp_path: Path) -> None:
    """Old coords are verified by level-0 size in wsi-extract and re-tiled by wsi-tile."""
    slides, out = tmp_path / "slides", tmp_path / "out"
    _slide(slides / "a.tif")
    assert _tile(slides, out) == 0
    _strip_identity(out / "coords" / "a.h5")
    assert _extract(out) == 0  # same dimensions: accepted
    _slide(slides / "a.tif", width=704, height=512, seed=3)
    assert _extract(out, "--redo", "a") == 1
    failed = _results(_last_report(out, "wsi-extract"))["a"]
    assert failed["error_type"] == "SlideChangedError"
    assert "640x480 -> 704x512" in str(failed["reason"])
    assert _tile(slides, out) == 0
    tiled = _results(_last_report(out, "wsi-tile"))["a"]
    assert "no slide fingerprint recorded" in str(tiled["reason"])


def test_features_and_coords_that_do_not_belong_together(tmp_path: Path) -> None:
    slides, out = tmp_path / "slides", tmp_path / "out"
    _slide(slides / "a.tif")
    assert _tile(slides, out) == 0
    assert _extract(out) == 0
    features = out / "features" / "random-cnn" / "a.h5"
    shutil.copyfile(features, tmp_path / "old_features.h5")
    assert tile_main([str(slides), "--out_dir", str(out), *TILE, "--grid.overlap_px", "16"]) == 0
    with pytest.raises(SlideChangedError, match=r"re-run wsi-extract"):
        check_features_coords(tmp_path / "old_features.h5", out / "coords" / "a.h5")
    with pytest.raises(CacheSchemaError, match="does not exist"):
        check_features_coords(features, tmp_path / "missing.h5")


def test_the_coords_check_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 #1: a features file made from a relative --out is checked from anywhere."""
    slides = tmp_path / "slides"
    _slide(slides / "a.tif")
    monkeypatch.chdir(tmp_path)
    assert _tile(Path("slides"), Path("out")) == 0
    assert _extract(Path("out")) == 0
    features = tmp_path / "out" / "features" / "random-cnn" / "a.h5"
    with h5py.File(features) as h5:
        assert h5.attrs["coords_file"] == "../../coords/a.h5"  # relative to its folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert check_features_coords(features)  # found and compared, from another directory
    _slide(slides / "a.tif", width=704, height=512, seed=3)
    monkeypatch.chdir(tmp_path)
    assert _tile(Path("slides"), Path("out")) == 0  # re-tiled: the features are stale now
    monkeypatch.chdir(elsewhere)
    with pytest.raises(SlideChangedError):
        check_features_coords(features)
    (tmp_path / "out" / "coords" / "a.h5").unlink()
    with pytest.raises(CacheSchemaError, match="not there any more"):
        check_features_coords(features)  # never skipped without a word


def test_no_tissue_and_report_summary_name_the_redo(tmp_path: Path) -> None:
    slides, out = tmp_path / "slides", tmp_path / "out"
    _slide(slides / "a.tif")
    assert _tile(slides, out) == 0
    _slide(slides / "a.tif", seed=9)
    from wsi_ncmi.batch.report import ItemResult, RunReport

    report = RunReport("wsi-tile")
    report.add(ItemResult("a", "ok", reason="redone: slide changed: size 1 -> 2 bytes", count=3))
    assert "a: redone: slide changed" in report.summary()
    assert _tile(slides, out) == 0
    assert np.asarray(h5py.File(out / "coords" / "a.h5")["coords"]).shape[1] == 2
