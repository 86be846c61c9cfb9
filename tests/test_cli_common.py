"""One CLI convention: help, exit codes, Ctrl-C, --print_config (spellings: test_cli_spelling)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import wsi_ncmi.errors as errors
from wsi_ncmi.cli.common import (
    EXIT_CODES_HELP,
    build_from,
    exit_code,
    fields_of,
    parse,
    run_cli,
)

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["tile", "extract", "train", "bench", "import_features", "synth", "predict"]


def _module(name: str) -> Any:
    return importlib.import_module(f"wsi_ncmi.cli.{name}")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_and_the_exit_code_table(name: str) -> None:
    parser = _module(name).build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, (name, action.option_strings)
        assert action.help.strip(), (name, action.option_strings)
    text = parser.format_help()
    assert EXIT_CODES_HELP.splitlines()[0] in text
    assert "130  interrupted" in text


# The oracle of the table: the codes the README promises for each exception.
PROMISED = {
    errors.MissingFeaturesError: 3,
    errors.WeightsUnavailableError: 3,
    errors.ConfigError: 2,
    errors.ManifestError: 2,
    errors.MissingMppError: 2,
    errors.CacheSchemaError: 1,
    errors.SlideChangedError: 1,
    errors.SlideOpenError: 1,
    errors.DanglingLinkError: 1,
    errors.UnsupportedFormatError: 1,
    errors.NonFiniteError: 1,
    errors.NonFiniteFeaturesError: 1,
    errors.BatchAbortedError: 1,
    errors.OutputWriteError: 1,
    errors.DiskFullError: 1,
    errors.WorkerFailedError: 1,
    errors.WsiNcmiError: 1,
}


def test_every_package_error_has_its_exit_code() -> None:
    assert set(PROMISED) >= {getattr(errors, n) for n in errors.__all__} - {errors.CorruptTileError}
    for cls, code in PROMISED.items():
        assert exit_code(cls("x")) == code, cls.__name__
    tile_error = errors.CorruptTileError("x", slide="s", location=(0, 0), level=0, size=(1, 1))
    assert exit_code(tile_error) == 1
    from wsi_ncmi.batch import BatchAbortedError

    assert exit_code(BatchAbortedError("stopped")) == 1
    assert exit_code(argparse.ArgumentError(None, "bad")) == 2
    assert exit_code(KeyboardInterrupt()) == 130
    with pytest.raises(TypeError):
        exit_code(RuntimeError("a bug"))


def test_run_cli_turns_errors_into_one_line_and_a_code(capsys: pytest.CaptureFixture[str]) -> None:
    def fails(error: BaseException) -> Any:
        def body() -> int:
            raise error

        return body

    assert run_cli("wsi-x", lambda: 0) == 0
    assert run_cli("wsi-x", fails(errors.ConfigError("--foo must be > 0, got -1"))) == 2
    assert run_cli("wsi-x", fails(errors.MissingFeaturesError("no features for a"))) == 3
    assert run_cli("wsi-x", fails(errors.NonFiniteError("NaN in a.h5"))) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "wsi-x: error: ConfigError: --foo must be > 0, got -1",
        "wsi-x: missing input: MissingFeaturesError: no features for a",
        "wsi-x: failed: NonFiniteError: NaN in a.h5",
    ]
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli("wsi-x", fails(RuntimeError("a bug")))


def test_ctrl_c_gives_a_resume_hint_and_130(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_cli("wsi-tile", interrupted) == 130
    err = capsys.readouterr().err
    assert "wsi-tile: interrupted; rerun the same command to resume" in err
    assert "finished slides and cells are skipped" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_ctrl_c_during_lightnings_graceful_shutdown_is_130(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lightning catches Ctrl-C in fit/predict, tears down, then calls ``sys.exit(1)``."""

    def lightning_like() -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)

    assert run_cli("wsi-train", lightning_like, resume_hint="rerun with --resume true") == 130
    assert capsys.readouterr().err.strip() == "wsi-train: interrupted; rerun with --resume true"
    assert run_cli("wsi-x", lambda: sys.exit(1)) == 1


@pytest.mark.slow  # wsi-* stages in child processes, killed or interrupted
def test_ctrl_c_stops_wsi_tile_with_130_and_the_rerun_resumes(tmp_path: Path) -> None:
    """A real Ctrl-C (SIGINT to the process group, as a terminal sends it) mid-batch."""
    from _slides import tissue_image, write_pyramid_tiff

    from wsi_ncmi.batch import find_temp_files

    slides = tmp_path / "slides"
    slides.mkdir()
    for i in range(6):
        write_pyramid_tiff(slides / f"s{i}.tif", tissue_image(2048, 1536, seed=i))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "wsi_ncmi.cli.tile", str(slides), "--out_dir", str(out)]
    cmd += ["--workers", "2", "--progress", "false"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "locks").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the batch finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert err.strip() == (
        "wsi-tile: interrupted; rerun the same command to resume "
        "(finished slides and cells are skipped)"
    )
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.stem for p in (out / "coords").glob("*.h5")) == [f"s{i}" for i in range(6)]
    assert find_temp_files(out) == []


def _printed_config(main: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main([*argv, "--print_config"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        (
            "tile",
            ["a.tif", "b", "--out_dir", "o", "--grid.target_mpp", "0.25", "--tissue.fill_holes"],
        ),
        ("extract", ["--out_dir", "o", "--encoder", "resnet50-trunc", "--redo", "s1", "s2"]),
    ],
)
def test_print_config_round_trips(
    name: str, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = _module(name).main
    printed = _printed_config(main, argv, capsys)
    assert yaml.safe_load(printed)["out_dir"] == "o"
    saved = tmp_path / "config.yaml"
    saved.write_text(printed)
    assert _printed_config(main, ["--config", str(saved)], capsys) == printed
    module = _module(name)
    parser = module.build_parser()
    direct = vars(parse(parser, argv))
    from_file = vars(parse(parser, ["--config", str(saved)]))
    assert from_file.pop("config")
    assert direct.pop("config") is None
    assert direct == from_file


def test_example_configs_parse(repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsi_ncmi.cli import extract, tile

    for module, path in ((tile, "tile/example.yaml"), (extract, "extract/example.yaml")):
        config = repo_root / "configs" / path
        printed = _printed_config(module.main, ["--config", str(config)], capsys)
        # The example names every option, each with the value the command then uses.
        assert yaml.safe_load(printed) == yaml.safe_load(config.read_text()), path


def test_cli_defaults_are_the_library_defaults(tmp_path: Path) -> None:
    """Flags come from the dataclasses: no copied default can drift."""
    from wsi_ncmi.cli import extract, tile
    from wsi_ncmi.features.config import ExtractConfig
    from wsi_ncmi.tiling.job import TilingConfig
    from wsi_ncmi.tiling.run import run_tiling

    args = parse(tile.build_parser(), ["s.tif", "--out_dir", "o"])
    assert build_from(TilingConfig, args) == TilingConfig(out_dir="o")
    import inspect

    signature = inspect.signature(run_tiling).parameters
    assert {k: signature[k].default for k in fields_of(run_tiling, args)} == fields_of(
        run_tiling, args
    )
    args = parse(extract.build_parser(), ["--out_dir", "o"])
    values = fields_of(ExtractConfig, args)
    library = ExtractConfig(coords_dir=Path("c"), out_dir=Path("o"))
    for field in dataclasses.fields(ExtractConfig):
        if field.name not in ("coords_dir", "out_dir", "skip_errors"):
            assert values[field.name] == getattr(library, field.name), field.name
    # The one deliberate difference: batch commands record a failure and go on.
    assert values["skip_errors"] is True


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("tile", ["--out_dir", "o", "--grid.patch_size_px", "zero"]),
        ("extract", ["--out_dir", "o", "--no-such-flag"]),
        ("train", ["--trainer.max_epochs", "notanint"]),
        ("bench", ["--jobs", "many"]),
        ("import_features", ["src", "--format", "nope", "--out_dir", "o", "--encoder", "e"]),
        ("synth", ["--preset", "huge"]),
        ("tile", ["s.tif", "--out_dir", "o", "--backend", "pillow"]),
        ("extract", ["--out_dir", "o", "--backend", "pillow"]),
    ],
)
def test_bad_arguments_exit_2_everywhere(
    name: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _module(name).main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_config_names_resolve_to_the_packaged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 #12: by name, or by the README's repository path, from any directory."""
    from wsi_ncmi.cli.argv import packaged_configs
    from wsi_ncmi.packaged import PACKAGED, list_packaged, resolve_packaged

    monkeypatch.chdir(tmp_path)
    shipped = str(PACKAGED["configs"] / "camelyon17" / "abmil_ncmi.yaml")
    assert packaged_configs(["--config", "camelyon17/abmil_ncmi.yaml"])[1] == shipped
    assert packaged_configs(["--config=configs/camelyon17/abmil_ncmi.yaml"]) == [
        f"--config={shipped}"
    ]
    assert packaged_configs(["--config", "nothing.yaml"]) == ["--config", "nothing.yaml"]
    (tmp_path / "configs" / "camelyon17").mkdir(parents=True)
    (tmp_path / "configs" / "camelyon17" / "abmil_ncmi.yaml").write_text("seed: 1\n")
    local = "configs/camelyon17/abmil_ncmi.yaml"
    assert packaged_configs(["--config", local]) == ["--config", local]  # a file here wins
    manifest = resolve_packaged("data_manifests/camelyon17.csv", "data_manifests")
    assert manifest == str(PACKAGED["data_manifests"] / "camelyon17.csv")
    assert "camelyon17/abmil_ce.yaml" in list_packaged()
    assert resolve_packaged("../etc/passwd", "configs") == "../etc/passwd"


def test_every_command_refuses_an_out_that_is_a_file(tmp_path: Path) -> None:
    """Issue 24 #5: exit 2 before any work (wsi-train/-bench/-import in test_train_guards)."""
    from wsi_ncmi.cli.import_features import main as import_main
    from wsi_ncmi.cli.synth import main as synth_main

    file = tmp_path / "file"
    file.write_text("x")
    assert synth_main(["--preset", "demo", "--out_dir", str(file)]) == 2
    src = tmp_path / "src"
    src.mkdir()
    assert (
        import_main([str(src), "--format", "trident", "--out_dir", str(file), "--encoder", "u"])
        == 2
    )
