"""``wsi-bench``'s configuration through jsonargparse: the same configs as before, layers, errors.

The oracle of the first two tests is ``tests/data/bench_configs.json``: what the
hand-rolled loader that ``wsi-bench`` used before made of every shipped bench YAML and of
a few command lines (the resolved config, and the cell hash of each loss's first cells,
which decides whether a finished cell is reused). After an intended change of a shipped
YAML or of a default, rewrite it with ``python tests/test_bench_config.py --regenerate``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from wsi_ncmi.bench.parser import load_config
from wsi_ncmi.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BENCH_CONFIGS = REPO / "wsi_ncmi" / "configs" / "bench"
EXPECTED = Path(__file__).parent / "data" / "bench_configs.json"
SPLITS_TEXT = '{"folds": []}\n'


def _cell_hashes(config: Any, splits_file: Path) -> dict[str, str]:
    """The cell hash of every loss variant's first cell, for the first two seeds."""
    from wsi_ncmi.bench.plan import Cell, cell_hash, train_config_for
    from wsi_ncmi.bench.suite import expand_grid

    hashes = {}
    for entry in config.sweep.losses:
        for variant in expand_grid(entry):
            for seed in config.sweep.seeds[:2]:
                cell = Cell(variant, config.sweep.models[0], seed, 0, "f0", (0,), str(splits_file))
                train = train_config_for(config, cell, Path("cells/x"))
                hashes[f"{variant.label}/seed{seed}"] = cell_hash(train, cell)
    return hashes


def _file_entry(name: str, splits_file: Path) -> dict[str, Any]:
    """``{"config": ..., "cell_hashes": ...}`` of a shipped ``"<file>.yaml"``."""
    config = load_config(BENCH_CONFIGS / name)
    return {"config": dataclasses.asdict(config), "cell_hashes": _cell_hashes(config, splits_file)}


def _printed(argv: list[str]) -> dict[str, Any]:
    """The config ``wsi-bench ... --print_config`` prints."""
    from wsi_ncmi.cli.bench import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--print_config"]) == 0
    return yaml.safe_load(out.getvalue())


def _same(got: Any, expected: Any) -> None:
    """Equal, and equal in JSON (so ``1`` and ``1.0`` differ, and so does the key order)."""
    assert got == expected
    assert json.dumps(got) == json.dumps(expected)


def _expected() -> dict[str, Any]:
    return json.loads(EXPECTED.read_text())


def test_every_shipped_bench_yaml_has_expectations() -> None:
    assert {p.name for p in BENCH_CONFIGS.glob("*.yaml")} <= set(_expected()["files"])


@pytest.mark.parametrize("name", sorted(_expected()["files"]))
def test_shipped_bench_yamls_load_as_before(name: str, tmp_path: Path) -> None:
    splits = tmp_path / "splits.json"
    splits.write_text(SPLITS_TEXT)
    expected = _expected()["files"][name]
    got = _file_entry(name, splits)
    _same(got["config"], expected["config"])
    assert got["cell_hashes"] == expected["cell_hashes"]


@pytest.mark.parametrize("index", range(len(_expected()["command_lines"])))
def test_command_lines_mean_what_they_meant(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dotted flags, ``--set`` on sections and inside mappings, several config files."""
    monkeypatch.chdir(REPO)
    case = _expected()["command_lines"][index]
    _same(_printed(case["argv"]), case["config"])


def test_set_replaces_a_section_and_edits_one_entry_of_a_mapping() -> None:
    path = BENCH_CONFIGS / "synthetic_demo.yaml"
    config = load_config(
        path,
        {
            "sweep.split": {"kind": "fixed", "preset": "c17_train012_test34"},
            "train.trainer.max_epochs": 4,
            "prepare.extract.device": "cuda",
            "sweep.splits.a.kind": "kfold",
        },
    )
    split = config.sweep.split
    assert (split.kind, split.preset, split.val_fraction) == ("fixed", "c17_train012_test34", 0.2)
    assert config.train["trainer"] == {
        "max_epochs": 4,
        "patience": 6,
        "accelerator": "cpu",
        "monitor": "val/macro_f1_calibrated",
    }
    assert config.prepare.extract == {"device": "cuda", "batch_size": 64, "workers": 0}
    assert (config.sweep.splits["a"].kind, config.sweep.splits["a"].val_fraction) == ("kfold", 0.2)
    later = load_config(path, {"jobs": 3, "stats": {"alpha": 0.1}, "stats.seed": 7})
    assert (later.jobs, later.stats.alpha, later.stats.seed, later.stats.bootstrap) == (
        3,
        0.1,
        7,
        2000,
    )


def test_nested_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    argv = ["--config", "configs/bench/synthetic_demo.yaml", "--sweep.seeds", "[0, 1]",
            "--jobs", "3", "--stats.bootstrap", "100", "--prepare.grid.target_mpp", "2.0",
            "--sweep.split.val_fraction", "0.3", "--prepare.grid.patch_size_px", "32",
            "--data.encoder", "e", "--output_root", "o", "--progress", "false",
            "--set", "train.data.batch_size=2"]  # fmt: skip
    printed = _printed(argv)
    assert printed["sweep"]["seeds"] == [0, 1]
    assert (printed["jobs"], printed["stats"]["bootstrap"]) == (3, 100)
    assert printed["prepare"]["grid"] == {
        "target_mpp": 2.0,
        "patch_size_px": 32,
        "overlap_px": 0,
        "min_tissue": 0.25,
    }
    assert printed["sweep"]["split"]["val_fraction"] == 0.3
    assert (printed["data"]["encoder"], printed["output_root"], printed["progress"]) == (
        "e",
        "o",
        False,
    )
    assert printed["train"]["data"]["batch_size"] == 2
    assert printed["train"]["data"]["cache_in_ram"] is True  # the rest of the section stays
    assert _printed([*argv, "--sweep.seeds", "4", "5"])["sweep"]["seeds"] == [4, 5]


def test_options_win_over_the_config_files_wherever_they_stand(tmp_path: Path) -> None:
    path, later = tmp_path / "b.yaml", tmp_path / "later.yaml"
    path.write_text("name: full\njobs: 4\nsweep: {seeds: [0, 1, 2], baseline: ce}\n")
    later.write_text("name: q\njobs: 3\nsweep: {seeds: [0]}\n")
    printed = _printed(["--jobs", "2", "--config", str(path), "--config", str(later)])
    assert (printed["name"], printed["jobs"], printed["sweep"]["seeds"]) == ("q", 2, [0])
    assert _printed(["--config", str(later), "--config", str(path)])["name"] == "full"
    assert _printed(["--set", "name=n", "--config", str(path)])["name"] == "n"


def test_a_new_list_of_losses_or_models_replaces_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No entry keeps the settings of the entry it replaces (jsonargparse merges by index)."""
    monkeypatch.chdir(REPO)
    demo = ["--config", "configs/bench/synthetic_demo.yaml"]  # abmil(hidden_dim 64, ...)
    fresh = [{"name": "transmil", "kwargs": {}, "label": "transmil", "train": {}}]
    assert _printed([*demo, "--sweep.models", "[{name: transmil}]"])["sweep"]["models"] == fresh
    assert _printed([*demo, "--sweep.models=[{name: transmil}]"])["sweep"]["models"] == fresh
    assert _printed([*demo, "--set", "sweep.models=[{name: transmil}]"])["sweep"]["models"] == fresh
    second = tmp_path / "second.yaml"
    second.write_text("sweep: {models: [{name: transmil}]}\n")
    assert _printed([*demo, "--config", str(second)])["sweep"]["models"] == fresh
    losses = "[{name: ce}, {name: ncmi}]"  # ncmi_mil had kwargs {temperature: 0.2}
    printed = _printed([*demo, "--sweep.losses", losses, "--sweep.treatment", "ncmi"])
    assert [e["kwargs"] for e in printed["sweep"]["losses"]] == [{}, {}]
    appended = _printed([*demo, "--sweep.models+", "{name: transmil}"])["sweep"]["models"]
    assert [m["name"] for m in appended] == ["abmil", "transmil"]
    assert appended[0]["kwargs"] == {"hidden_dim": 64, "attention_dim": 32, "dropout": 0.1}


@pytest.mark.parametrize("name", sorted(p.name for p in BENCH_CONFIGS.glob("*.yaml")))
def test_print_config_round_trips(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--print_config`` prints YAML that ``--config`` reads back to the same config."""
    monkeypatch.chdir(REPO)
    argv = ["--config", f"configs/bench/{name}", "--jobs", "3", "--name", "printed"]
    printed = _printed(argv)
    saved = tmp_path / "printed.yaml"
    saved.write_text(yaml.safe_dump(printed, sort_keys=False))
    _same(_printed(["--config", str(saved)]), printed)
    _same(dataclasses.asdict(load_config(saved)), printed)
    assert (printed["jobs"], printed["name"]) == (3, "printed")


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from wsi_ncmi.cli.bench import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--stats.alpha", "high"], "stats.alpha: Expected a <class 'float'>. Got value: high"),
        (["--set", "stats.alpha=high"], "stats.alpha: Expected a <class 'float'>"),
        (["--set", "stats=3"], "stats must be a mapping, got 3"),
        (["--set", "sweep.split.kind=nope"], "sweep.split.kind: Expected a typing.Literal"),
        (["--set", "sweep.split.bogus=1"], "sweep.split has unknown keys ['bogus']; allowed:"),
        (["--set", "bogus.x=1"], "config has unknown keys ['bogus']; allowed: ['name',"),
        (
            ["--set", "sweep.losses=[{name: ce}, {name: ce, labl: x}]"],
            "sweep.losses[1] has unknown keys ['labl']; allowed: ['name', 'kwargs',",
        ),
        (["--set", "sweep.losses=[{name: ce}, {label: x}]"], "sweep.losses[1]: "),
        (["--set", "sweep.splits={a: {kind: loho}, b: {kind: x}}"], "sweep.splits.b.kind:"),
        (["--set", "data.synth.seed=x"], "data.synth.seed: Expected a <class 'int'>"),
        (["--set", "sweep.seeds.0=1"], "cannot set 'sweep.seeds.0': 'sweep.seeds' is [0, 1, 2]"),
        (["--set", "jobs"], "--set expects KEY=VALUE"),
        (["--set", "jobs=0"], "jobs must be >= 1, got 0"),
        (
            ["--set", "sweep.models=[{name: abmil, kwargs: {hidden_dm: 64}}]"],
            "sweep.models[abmil].kwargs: invalid arguments for aggregator 'abmil': unknown "
            "'hidden_dm' (did you mean 'hidden_dim'?)",
        ),
        (["--sweep.split.preset", "nope"], "sweep.split: split.preset must be one of"),
        (["--sweep.tuning.metric", "macro_f1_calbrated"], "sweep.tuning.metric: Expected a"),
        (["--sweep.tuning.metric", "loss"], "sweep.tuning.metric: Expected a typing.Literal"),
        (["--prepare.grid.min_tissue", "2"], "min_tissue must be a fraction in [0, 1], got 2.0"),
        (["--quick"], "--quick was renamed to --config configs/bench/synthetic_quick.yaml"),
        (["--set", "quick={jobs: 1}"], "config has unknown keys ['quick']; allowed: ['name',"),
        (["--config", "nowhere.yaml"], "nowhere.yaml"),
        (
            ["--set", "sweep.losses=[{name: ce}, {name: ncmi_mil, kwargs: {tempreature: 0.2}}]"],
            "sweep.losses[ncmi_mil].kwargs: invalid arguments for loss 'ncmi_mil': unknown "
            "'tempreature' (did you mean 'temperature'?)",
        ),
        (
            [
                "--set",
                "sweep.losses=[{name: ce}, {name: ncmi_mil, kwargs: {schedule: {dampin: 1}}}]",
            ],
            "sweep.losses[ncmi_mil].kwargs: schedule has no field 'dampin' (did you mean "
            "'damping'?)",
        ),
        (
            ["--set", "sweep.losses=[{name: ce, grid: {kwargs.wieght: [1]}}, {name: ncmi_mil}]"],
            "sweep.losses[ce_wieght1].kwargs: invalid arguments for loss 'ce': unknown 'wieght'",
        ),
    ],
)
def test_bad_values_name_their_key(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert needle in _error(argv, capsys)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bogus: 1\n", "config has unknown keys ['bogus']"),
        ("prepare: {target_mpp: 1.0}\n", "prepare has unknown keys ['target_mpp']"),
        ("sweep: {splits: {x: {kind: nope}}}\n", "sweep.splits.x.kind: Expected a typing.Literal"),
        ("sweep: {losses: [{name: ce}, {name: focal, kwargs: 3}]}\n", "sweep.losses[1].kwargs:"),
        ("data: {synth: {presett: bench}}\n", "data.synth has unknown keys ['presett']"),
        ("[1, 2]\n", "config must be a mapping, got [1, 2]"),
    ],
)
def test_a_bad_config_file_is_named_with_the_key(
    text: str, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    err = _error(["--config", str(path)], capsys)
    assert f"{path}: {needle}" in err
    with pytest.raises(ConfigError, match=r"bad\.yaml: "):
        load_config(path)


def _regenerate() -> None:
    """Rewrite the expectations with the current loader (after an intended change)."""
    import os
    import tempfile

    os.chdir(REPO)
    doc = _expected()
    with tempfile.TemporaryDirectory() as tmp:
        splits = Path(tmp) / "splits.json"
        splits.write_text(SPLITS_TEXT)
        names = [p.name for p in sorted(BENCH_CONFIGS.glob("*.yaml"))]
        doc["files"] = {name: _file_entry(name, splits) for name in names}
    for case in doc["command_lines"]:
        case["config"] = _printed(case["argv"])
    EXPECTED.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__" and "--regenerate" in sys.argv:
    _regenerate()


def test_synthetic_quick_is_synthetic_full_cut_down(tmp_path: Path) -> None:
    """``synthetic_quick.yaml`` is ``synthetic_full.yaml`` with ABMIL only, seeds 0-1, the
    leave-one-hospital-out split only and without the ``ncmi_logit`` reference; every other
    key is the same, so its cells are the full sweep's first cells (same hashes)."""
    full = dataclasses.asdict(load_config(BENCH_CONFIGS / "synthetic_full.yaml"))
    quick = dataclasses.asdict(load_config(BENCH_CONFIGS / "synthetic_quick.yaml"))
    sweep, cut = full["sweep"], quick["sweep"]
    assert cut["losses"] == [e for e in sweep["losses"] if e["label"] != "ncmi_logit"]
    assert {"ncmi_mil", "ncmi_authors"} <= {e["label"] for e in cut["losses"]}
    assert cut["models"] == [m for m in sweep["models"] if m["name"] == "abmil"]
    assert (cut["seeds"], list(cut["splits"])) == (sweep["seeds"][:2], ["loho"])
    assert cut["splits"]["loho"] == sweep["splits"]["loho"]
    for key in ("losses", "models", "seeds", "splits"):
        del sweep[key], cut[key]
    assert quick == full
    splits = tmp_path / "splits.json"
    splits.write_text(SPLITS_TEXT)
    hashes = _file_entry("synthetic_full.yaml", splits)["cell_hashes"]
    quick_hashes = _file_entry("synthetic_quick.yaml", splits)["cell_hashes"]
    assert quick_hashes == {k: v for k, v in hashes.items() if k in quick_hashes}
    assert not any(k.startswith("ncmi_logit") for k in quick_hashes)


def test_run_bench_checks_a_config_built_in_python(tmp_path: Path) -> None:
    """``run_bench`` runs ``load_config``'s checks itself, before any work, so that a
    config built from the dataclasses cannot skip them; it fills default labels too."""
    from wsi_ncmi.bench.config import BenchConfig, LossEntry, SweepConfig
    from wsi_ncmi.bench.parser import validate
    from wsi_ncmi.bench.pipeline import run_bench

    out = tmp_path / "bench"
    with pytest.raises(ConfigError, match="jobs must be >= 1, got 0"):
        run_bench(BenchConfig(output_root=str(out), jobs=0))
    sweep = SweepConfig(losses=[LossEntry("ce"), LossEntry("ncmi_mil", {"tempreature": 0.2})])
    with pytest.raises(ConfigError, match="unknown 'tempreature'"):
        run_bench(BenchConfig(output_root=str(out), sweep=sweep))
    assert not out.exists()  # nothing was written
    config = BenchConfig()
    validate(config)
    assert [e.label for e in config.sweep.losses] == ["ce", "ncmi_mil"]
