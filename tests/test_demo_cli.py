"""``python -m wsi_ncmi.demo`` goes through the commands' shared exit table."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsi_ncmi.cli.common import EXIT_USAGE
from wsi_ncmi.demo import main


def test_a_bad_override_is_a_usage_error_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["--out_dir", str(out), "--set", "sweep.seedz=[0]"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "demo: error: ConfigError: sweep has unknown keys ['seedz']; allowed: ['losses', "
        "'models', 'seeds', 'split', 'baseline', 'treatment', 'treatments', 'splits', "
        "'tuning', 'baselines']"
    ]
    assert not out.exists()  # checked before the cohort is generated


def test_a_missing_manifest_is_one_line_and_rc_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["--out_dir", str(tmp_path / "demo"), "--manifest", str(missing)]) == EXIT_USAGE
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"demo: error: ManifestError: {missing}: cannot read the manifest")
    assert not (tmp_path / "demo").exists()


def test_every_demo_flag_has_help() -> None:
    from wsi_ncmi.demo import build_parser

    actions = [a for a in build_parser()._actions if a.option_strings]
    assert all(a.help for a in actions), [a.option_strings for a in actions if not a.help]


@pytest.mark.slow
def test_the_demo_prints_no_python_warnings(tmp_path: Path) -> None:
    """``make demo``'s command on a tiny cohort: its progress and table, no warning lines.

    Run in a child process with every warning shown once per place (``-W default``, which
    also shows the deprecation warnings Python hides by default), so that a warning removed
    only by a filter in the test process would still be counted.
    """
    import os
    import re
    import subprocess
    import sys

    env = {**os.environ, "PYTHONWARNINGS": "default"}
    command = [
        sys.executable,
        "-m",
        "wsi_ncmi.demo",
        "--out_dir",
        str(tmp_path / "demo"),
        "--slides_per_center",
        "2",
        "--progress",
        "false",
        "--set",
        "train.trainer.max_steps=10",
        "--set",
        "sweep.seeds=[0]",
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "| **pooled (n=10)** |" in output  # the table is there
    # Python's format ("path.py:12: UserWarning: ...") and Lightning's, which drops the
    # category ("path.py:21: `isinstance(treespec, LeafSpec)` is deprecated ...").
    warning_lines = [
        line for line in output.splitlines() if re.search(r"\b\w*Warning\b|\.py:\d+: ", line)
    ]
    assert warning_lines == []
    # Nor Lightning's device banner, which says nothing about the demo.
    assert "GPU available" not in output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--slides-per-center", "2"], "--slides-per-center was renamed to --slides_per_center"),
        (["--no-progress"], "--no-progress was renamed to --progress false"),
        (["--out", "o"], "--out was renamed to --out_dir"),
        (["--outdir", "o"], None),  # not a spelling of any demo flag: argparse refuses it
    ],
)
def test_old_spellings_are_one_line_errors_naming_the_flag(
    argv: list[str], message: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo spells its flags as the ``wsi-*`` commands do, refusing the dashed ones."""
    assert main(argv) == EXIT_USAGE
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"demo: error: ConfigError: {message}" if message else "unrecognized" in line
