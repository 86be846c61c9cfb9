"""The SLURM array scripts in configs/slurm call the CLIs with flags they accept."""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _commands(script: Path) -> list[list[str]]:
    text = script.read_text().replace("\\\n", " ")
    # VAR=${VAR:-default} lines: $VAR is the default (a config file the parser reads)
    defaults = dict(re.findall(r"^([A-Z_]+)=\$\{\1:-([^}]*)\}$", text, flags=re.MULTILINE))
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") or ".venv/bin/wsi-" not in line:
            continue
        for name, default in defaults.items():
            line = re.sub(rf"\$\{{?{name}\}}?(?![A-Z_])", default, line)
        # ${VAR:-default} -> default, ${VAR} / $VAR -> 1 (task numbers, counts)
        line = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", line)
        line = re.sub(r"\$\{?[A-Z_]+\}?", "1", line)
        commands.append(shlex.split(line))
    return commands


@pytest.mark.parametrize("name", ["tile", "extract", "bench"])
def test_array_script_flags_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the scripts run from the repository root
    from wsi_ncmi.cli import bench, extract, tile
    from wsi_ncmi.cli.common import parse

    modules = {"wsi-tile": tile, "wsi-extract": extract, "wsi-bench": bench}
    commands = _commands(ROOT / "configs" / "slurm" / f"{name}.sbatch")
    assert commands, "the script runs no wsi command"
    for argv in commands:
        module = modules[Path(argv[0]).name]
        args = parse(module.build_parser(), argv[1:], instantiate=False)
        assert getattr(args, "shard", None) == "1/1" or "--num_nodes" in argv
