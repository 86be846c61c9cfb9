"""The ``wsi-predict`` and ``wsi-export-model`` command lines (no model is run here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from wsi_ncmi.cli import export_model, predict
from wsi_ncmi.cli.common import EXIT_CODES_HELP


def test_export_model_options_have_help_and_the_exit_code_table() -> None:
    parser = export_model.build_parser()
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, action.option_strings
    assert EXIT_CODES_HELP.splitlines()[0] in parser.format_help()


def test_several_models_are_the_models_list_and_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["slides/", "--models", "m0", "m1", "--out_dir", "o", "--geojson_tiles", "3"]
    assert predict.main([*argv, "--print_config"]) == 0
    printed = capsys.readouterr().out
    values = yaml.safe_load(printed)
    assert values["models"] == ["m0", "m1"]
    assert values["slides"] == ["slides/"]
    assert values["geojson_tiles"] == 3
    saved = tmp_path / "predict.yaml"
    saved.write_text(printed)
    assert predict.main(["--config", str(saved), "--print_config"]) == 0
    assert capsys.readouterr().out == printed


@pytest.mark.parametrize(
    "argv",
    [
        ["slides/", "--out_dir", "o"],
        ["--models", "m", "--out_dir", "o"],
        ["--models", "m", "--out_dir", "o", "s", "--min_patches", "many"],
    ],
)
def test_missing_model_or_slides_and_bad_values_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert predict.main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_missing_checkpoint_exits_2(tmp_path: Path) -> None:
    assert export_model.main([str(tmp_path / "no.ckpt"), "--out_dir", str(tmp_path / "m")]) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "m", "s"], "--model was renamed to --models"),
        (["--models", "m0", "--models", "m1", "s"], "--models is given 2 times"),
        (["--models=m0", "--models", "m1", "s"], "--models is given 2 times"),
    ],
)
def test_models_is_given_once(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert predict.main([*argv, "--out_dir", "o"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_slides_after_models_are_named_in_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--models`` takes every word up to the next option: slides after it are refused
    with what happened and how to write it, not with a puzzling "SLIDES must name"."""
    bundle, slide = tmp_path / "bundle", tmp_path / "s1.svs"
    bundle.mkdir()
    slide.write_bytes(b"")
    out = ["--out_dir", str(tmp_path / "o")]
    for argv in (
        [str(slide), "--models", str(bundle), str(slide)],
        ["--models", str(bundle), str(slide)],
    ):
        assert predict.main([*argv, *out]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{str(slide)!r} is a slide, not a model bundle" in line
        assert "name the slides first (wsi-predict SLIDES... --models BUNDLE...)" in line
    assert predict.main(["--models", str(bundle), "b2", *out]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"--models took [{str(bundle)!r}, 'b2']: --models takes every word" in line
