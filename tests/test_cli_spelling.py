"""One spelling per flag: the config key; other spellings are a one-line error (exit 2)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import pytest
import yaml

import wsi_ncmi.errors as errors
from wsi_ncmi.cli.argv import expand_argv
from wsi_ncmi.cli.common import RENAMED

COMMANDS = ["tile", "extract", "train", "bench", "import_features", "synth", "predict"]


def _module(name: str) -> Any:
    return importlib.import_module(f"wsi_ncmi.cli.{name}")


def _printed_config(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main([*argv, "--print_config"]) == 0
    return capsys.readouterr().out


#: The output folder's flag: the config key of each command.
OUT_FLAG = {"bench": "--output_root"}


@pytest.mark.parametrize("name", COMMANDS)
def test_one_spelling_per_shared_concept(name: str) -> None:
    options = _module(name).build_parser()._option_string_actions
    assert "--print_config" in options
    assert OUT_FLAG.get(name, "--out_dir") in options
    for loose in ("--print-config", "--output-root", "--slide-dir", "--slides", "--slides_dir"):
        assert loose not in options
    if name in ("tile", "extract"):
        assert "--slide_dir" in options
    if name in ("train", "bench"):
        assert "--data.slide_dir" in options
    if name in ("tile", "extract"):
        assert "--skip_errors" in options
        assert options["--skip_errors"].default is True


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("tile", ["--out", "o"], "--out was renamed to --out_dir"),
        ("tile", ["--out=o"], "--out was renamed to --out_dir"),
        ("tile", ["--slides_dir", "s"], "--slides_dir was renamed to --slide_dir"),
        ("tile", ["--keep-pen"], "--keep-pen was renamed to --tissue.reject_pen false"),
        ("tile", ["--target-mpp", "1.0"], "--target-mpp is spelled --grid.target_mpp"),
        ("tile", ["--target_mpp", "1.0"], "--target_mpp is spelled --grid.target_mpp"),
        ("tile", ["--thumb_size", "64"], "--thumb_size is spelled --thumb_size_px"),
        ("tile", ["--skip-errors", "no"], "--skip-errors is spelled --skip_errors"),
        ("tile", ["--no-progress"], "--no-progress is spelled --progress false"),
        ("tile", ["--no_skip_errors"], "--no_skip_errors is spelled --skip_errors false"),
        ("extract", ["--no-wait"], "--no-wait was renamed to --wait_locked false"),
        ("extract", ["--coords", "c"], "--coords was renamed to --coords_dir"),
        ("train", ["--out", "o"], "--out was renamed to --out_dir"),
        ("train", ["--slides_dir", "s"], "--slides_dir was renamed to --data.slide_dir"),
        ("train", ["--max-epochs", "3"], "--max-epochs is spelled --trainer.max_epochs"),
        ("predict", ["--model", "m", "s"], "--model was renamed to --models"),
        ("bench", ["--out", "o"], "--out was renamed to --output_root"),
        ("bench", ["--workers", "2"], "--workers was renamed to --jobs"),
        ("bench", ["--seeds", "0", "1"], "--seeds was renamed to --sweep.seeds"),
        ("bench", ["--features", "f"], "--features was renamed to --data.features_root"),
        ("bench", ["--output-root", "o"], "--output-root is spelled --output_root"),
        ("bench", ["--patch_size", "32"], "--patch_size is spelled --prepare.grid.patch_size_px"),
        ("bench", ["--no-progress"], "--no-progress is spelled --progress false"),
        ("synth", ["--quiet"], "--quiet was renamed to --progress false"),
    ],
)
def test_other_spellings_are_a_one_line_error_naming_the_flag(
    name: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing is guessed: the command stops (exit 2) and says how the flag is spelled."""
    capsys.readouterr()
    assert _module(name).main([*argv, "--print_config"]) == 2
    err = capsys.readouterr().err
    prog = _module(name).build_parser().prog
    assert err == f"{prog}: error: ConfigError: {message}\n"


def test_every_renamed_flag_is_an_error_and_its_new_spelling_a_flag() -> None:
    """Each entry of the table (one release) names a flag of its command."""
    import wsi_ncmi.demo

    modules = {_module(name).build_parser().prog: _module(name) for name in COMMANDS}
    modules[wsi_ncmi.demo.PROG] = wsi_ncmi.demo
    modules["wsi-export-model"] = _module("export_model")  # no options file to print
    for key, new in RENAMED.items():
        prog, old = key.rsplit(" ", 1)
        parser = modules[prog].build_parser()
        options = parser._option_string_actions
        assert old not in options, key
        assert new.split(" ")[0] in options, key
        with pytest.raises(errors.ConfigError, match=f"^{old} was renamed to {new}$"):
            expand_argv(parser, [old, "x"], {old: new})
    help_text = _module("tile").build_parser().format_help()
    assert "renamed in this release" in help_text
    assert "--keep-pen" in help_text


def test_the_value_syntax_stays() -> None:
    """A true/false flag alone means true; a list flag takes several words."""
    tile, extract = _module("tile").build_parser(), _module("extract").build_parser()
    assert expand_argv(tile, ["--tissue.fill_holes"]) == ["--tissue.fill_holes=true"]
    assert expand_argv(tile, ["--tissue.fill_holes", "false"]) == ["--tissue.fill_holes", "false"]
    assert expand_argv(extract, ["--redo", "a", "b", "--force"]) == [
        "--redo=[a, b]",
        "--force=true",
    ]
    assert expand_argv(extract, ["--redo=a"]) == ["--redo=[a]"]
    assert expand_argv(extract, ["--redo=[a, b]"]) == ["--redo=[a, b]"]
    assert expand_argv(extract, ["--redo=null"]) == ["--redo=null"]
    assert expand_argv(tile, ["--unknown", "1"]) == ["--unknown", "1"]  # the parser refuses it


def _keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        if isinstance(value, dict) and value:
            keys |= _keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


#: Options that are not config keys: they act (print, list) or read files.
NOT_KEYS = {"--config", "--print_config", "--list_encoders", "--list_configs", "--set"}
#: The minimal command line of each command (its required options).
PRINT_ARGV = {
    "import_features": ["src", "--format", "clam", "--out_dir", "o", "--encoder", "e"],
    "predict": ["s.tif", "--models", "m"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_print_config_keys_are_the_flag_names(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--print_config`` prints each option under the name its flag has, and only that one."""
    parser = _module(name).build_parser()
    flags: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = [s for s in action.option_strings if s not in NOT_KEYS and s[-1] != "+"]
        if names and not names[0].endswith(".help"):
            assert len(names) == 1, names  # one spelling
            flags.add(names[0])
    printed = _printed_config(_module(name).main, PRINT_ARGV.get(name, []), capsys)
    positional = {a.dest for a in parser._actions if not a.option_strings}
    keys = {f"--{key}" for key in _keys(yaml.safe_load(printed)) if key not in positional}
    # A section's own flag (--grid FILE, bench's --sweep MAPPING) sets it as a whole; an
    # unset optional section (bench's data.synth) is printed as null, without its keys.
    sections = {f for f in flags if any(g.startswith(f + ".") for g in flags)}
    null = tuple(f + "." for f in sections & keys)
    flags = {f for f in flags - sections if not f.startswith(null)} | (sections & keys)
    if name == "bench":
        flags -= {"--shard", "--force"}  # how to run, not the config
        keys = {k for k in keys if not k.startswith(("--train.", "--prepare.extract."))}
    assert keys == flags
