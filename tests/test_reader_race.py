"""tools/bench/reader_race.py runs end to end on a tiny cohort (no timings asserted)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

RACE = Path(__file__).resolve().parents[1] / "tools" / "bench" / "reader_race.py"


@pytest.mark.slow
def test_reader_race_reports_every_reader_on_both_grids(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(RACE), "--slides", "1", "--size", "1280", "--rounds", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(RACE), run_name="__main__")
    result = json.loads(capsys.readouterr().out)
    readers = {"pipeline_tiledecode", "pipeline_openslide", "dataset_only", "openslide_strips",
               "decode_floor", "decode_floor_reused_buffer"}  # fmt: skip
    assert result["aligned"]["patches"] == 25  # 1280 / 256 = 5 per side
    assert result["unaligned"]["patches"] == 4  # (1280 - 100) // 512 = 2 per side
    for grid in ("aligned", "unaligned"):
        assert readers <= set(result[grid]["patches_per_s"])
        assert result[grid]["pipeline_vs_decode_floor"] > 0
        assert result[grid]["dataset_vs_decode_floor"] > 0


def test_the_decode_floor_decodes_the_pixels_openslide_returns(tmp_path: Path) -> None:
    """The floor decodes each tile in the page's colour space (YCbCr here), as every reader
    does; a floor that skipped the conversion would be faster than any correct reader."""
    import openslide

    race = runpy.run_path(str(RACE))
    slide = race["write_slide"](tmp_path / "s.tif", race["tissue_image"](768, 768, seed=0))
    origins = [(0, 0), (256, 512)]  # tiles 0 and 7 of a 3 × 3 tile grid, in file order
    tiles = list(race["floor_tiles"](str(slide), np.array(origins), 256))
    buffer = np.empty((256, 256, 3), np.uint8)  # the reused-buffer floor decodes into it
    reused = [t.copy() for t in race["floor_tiles"](str(slide), np.array(origins), 256, buffer)]
    assert len(tiles) == len(reused) == 2
    with openslide.OpenSlide(str(slide)) as reader:
        for tile, again, origin in zip(tiles, reused, origins, strict=True):
            expected = np.asarray(reader.read_region(origin, 0, (256, 256)).convert("RGB"))
            assert np.array_equal(tile, expected)
            assert np.array_equal(again, expected)
