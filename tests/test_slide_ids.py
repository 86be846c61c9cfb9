"""Issue 24 #2: one slide-id rule for manifests, folder scans and imports; nothing outside --out."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cli_args import TILE_SMALL
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.cli.tile import main as tile_main
from wsi_ncmi.errors import ConfigError, ManifestError
from wsi_ncmi.features.schema import feature_path
from wsi_ncmi.ids import (
    MAX_SLIDE_ID_BYTES,
    check_slide_ids,
    path_under,
    slide_id_problem,
    slide_id_problems,
)
from wsi_ncmi.manifest import read_manifest
from wsi_ncmi.tiling.job import output_paths


@pytest.mark.parametrize(
    ("slide_id", "reason"),
    [
        ("../../evil2", "path separator"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("center/slide", "path separator"),
        ("c:\\slide", "path separator"),
        ("tab\there", "control character"),
        ("new\nline", "control character"),
        ("x" * (MAX_SLIDE_ID_BYTES + 1), "shorten the slide id"),
        ("   ", "empty"),
    ],
)
def test_bad_ids_are_named_with_their_reason(slide_id: str, reason: str) -> None:
    problem = slide_id_problem(slide_id)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    "slide_id", ["patient_000_node_0", "Tumor 001", "ñ" * 120, "a.b-c", "x" * MAX_SLIDE_ID_BYTES]
)
def test_good_ids_pass(slide_id: str) -> None:
    assert slide_id_problem(slide_id) is None


def test_ids_that_differ_only_in_case_are_refused_and_every_row_is_listed() -> None:
    problems = slide_id_problems(
        [("line 2", "Slide_A"), ("line 3", "ok"), ("line 4", "slide_a"), ("line 5", "../x")]
    )
    assert len(problems) == 2
    assert problems[0].startswith("line 4")
    assert "only in case" in problems[0]
    assert problems[1].startswith("line 5")
    with pytest.raises(ConfigError, match="2 slide id"):
        check_slide_ids([("a", "A"), ("b", "a"), ("c", "x/y")], "test")


def test_output_paths_stay_under_out(tmp_path: Path) -> None:
    assert output_paths(tmp_path, "ok").coords.parent == tmp_path / "coords"
    with pytest.raises(ConfigError, match="outside the output folder"):
        output_paths(tmp_path, "../../evil")
    with pytest.raises(ConfigError, match="outside the output folder"):
        feature_path(tmp_path, "enc", "../../../evil")
    with pytest.raises(ConfigError):
        path_under(tmp_path / "out", tmp_path / "out" / ".." / "x")


def test_manifest_lists_every_bad_id(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "slide_id,patient_id,center,label\n"
        "good,p0,0,negative\n"
        "../../evil2,p1,0,negative\n"
        "center_1/x,p2,0,macro\n"
        "GOOD,p3,0,macro\n"
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    message = str(info.value)
    assert "3 slide id(s)" in message
    for line in ("line 3", "line 4", "line 5"):
        assert line in message


def test_wsi_tile_refuses_a_manifest_id_that_escapes_out(tmp_path: Path) -> None:
    """The issue's case: rc 2, nothing written outside (or inside) --out."""
    slides = tmp_path / "data" / "slides"
    (slides / "center_0").mkdir(parents=True)
    write_pyramid_tiff(tmp_path / "data" / "evil2.tif", tissue_image(320, 256))
    write_pyramid_tiff(slides / "center_0" / "good.tif", tissue_image(320, 256))
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "slide_id,patient_id,center,label\ngood,p0,0,negative\n../../evil2,p1,0,negative\n"
    )
    before = sorted(p for p in tmp_path.rglob("*"))
    out = tmp_path / "data" / "out"
    code = tile_main(["--manifest", str(manifest), "--slide_dir", str(slides),
                      "--out_dir", str(out), *TILE_SMALL])  # fmt: skip
    assert code == 2
    after = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(out))
    assert after == before
    assert not list(out.rglob("*.h5"))


def test_wsi_tile_refuses_a_control_character_in_a_file_name(tmp_path: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    write_pyramid_tiff(slides / "bad\x07name.tif", tissue_image(320, 256))
    out = tmp_path / "out"
    assert tile_main([str(slides), "--out_dir", str(out), *TILE_SMALL]) == 2
    assert not (out / "coords").is_dir() or not list((out / "coords").iterdir())
