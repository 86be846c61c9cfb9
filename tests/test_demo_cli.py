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
    assert main(["--out", str(out), "--set", "sweep.seedz=[0]"]) == EXIT_USAGE
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
    assert main(["--out", str(tmp_path / "demo"), "--manifest", str(missing)]) == EXIT_USAGE
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"demo: error: ManifestError: {missing}: cannot read the manifest")
    assert not (tmp_path / "demo").exists()


def test_every_demo_flag_has_help() -> None:
    from wsi_ncmi.demo import build_parser

    actions = [a for a in build_parser()._actions if a.option_strings]
    assert all(a.help for a in actions), [a.option_strings for a in actions if not a.help]
