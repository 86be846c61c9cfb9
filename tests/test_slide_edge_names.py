"""Truncated real slides and very long names give clear errors, not library internals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _cli_args import EXTRACT_CPU, TILE_SMALL
from _slides import tissue_image, write_pyramid_tiff

from wsi_ncmi.batch.atomic import NAME_MAX, temp_path_for
from wsi_ncmi.cli.extract import main as extract_main
from wsi_ncmi.cli.tile import main as tile_main
from wsi_ncmi.errors import SlideOpenError
from wsi_ncmi.slide import open_slide

FIXTURES = Path("/work/shared/fixtures/slides")
SVS = FIXTURES / "CMU-1-Small-Region.svs"
TILE = TILE_SMALL
EXTRACT = (*EXTRACT_CPU, "--workers", "0", "--skip_errors")


@pytest.mark.skipif(not SVS.is_file(), reason="real SVS fixture not available")
@pytest.mark.parametrize("keep", [0.01, 0.5, 0.9])
def test_truncated_real_svs_is_a_slide_open_error(
    tmp_path: Path, keep: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: 'IndexError: index 0 out of range(0)' plus a stray tifffile log line."""
    data = SVS.read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(SlideOpenError) as info:
        open_slide(cut).close()
    message = str(info.value)
    assert str(cut) in message
    assert "truncated" in message
    assert "re-copy" in message
    assert message.count("re-copy") == 1  # said once, not once per backend
    captured = capsys.readouterr()
    assert "tifffile" not in captured.err + captured.out


@pytest.mark.skipif(not SVS.is_file(), reason="real SVS fixture not available")
def test_truncated_real_svs_in_wsi_tile(tmp_path: Path) -> None:
    (tmp_path / "slides").mkdir()
    data = SVS.read_bytes()
    (tmp_path / "slides" / "cut.svs").write_bytes(data[: len(data) // 2])
    shutil.copyfile(SVS, tmp_path / "slides" / "whole.svs")
    out = tmp_path / "out"
    assert tile_main([str(tmp_path / "slides"), "--out_dir", str(out), *TILE]) == 1
    report = json.loads(next((out / "reports").glob("*.json")).read_text())
    results = {r["item_id"]: r for r in report["results"]}
    assert results["whole"]["status"] == "ok"
    assert results["cut"]["error_type"] == "SlideOpenError"
    assert "truncated" in results["cut"]["reason"]


def test_temp_names_stay_within_name_max(tmp_path: Path) -> None:
    long = tmp_path / ("ñ" * 120 + ".h5")  # 243 bytes: fits, its temp name would not
    assert len(long.name.encode()) <= NAME_MAX
    tmp = temp_path_for(long)
    assert len(tmp.name.encode()) <= NAME_MAX
    assert temp_path_for(tmp_path / ("ñ" * 120 + "x.h5")).name != tmp.name  # distinct
    tmp.write_bytes(b"ok")  # the filesystem accepts it


def test_a_234_character_slide_name_goes_through(tmp_path: Path) -> None:
    """Was: 'File name too long' from the temp-file name."""
    name = "case_" + "x" * 229  # 234 characters, as in the issue
    (tmp_path / "slides").mkdir()
    write_pyramid_tiff(tmp_path / "slides" / f"{name}.tif", tissue_image(640, 480))
    out = tmp_path / "out"
    assert tile_main([str(tmp_path / "slides"), "--out_dir", str(out), *TILE]) == 0
    assert (out / "coords" / f"{name}.h5").is_file()
    assert extract_main(["--out_dir", str(out), *EXTRACT]) == 0
    assert (out / "features" / "random-cnn" / f"{name}.h5").is_file()


def test_an_output_name_over_name_max_says_to_shorten_the_id(tmp_path: Path) -> None:
    name = "y" * 249  # the slide (.tif) fits in 255 bytes, its .geojson does not
    (tmp_path / "slides").mkdir()
    write_pyramid_tiff(tmp_path / "slides" / f"{name}.tif", tissue_image(640, 480))
    out = tmp_path / "out"
    # Issue 24: the slide-id rule refuses it before any work (rc 2), naming the fix.
    assert tile_main([str(tmp_path / "slides"), "--out_dir", str(out), *TILE]) == 2
    assert not (out / "coords").is_dir() or not list((out / "coords").iterdir())
