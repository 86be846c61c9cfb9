"""``wsi-bench`` stages: named splits, tuning grids chosen on validation.

The end-to-end test runs the real sweep (real Lightning Trainer) on generated feature bags
with two named splits and a grid for two losses, then checks from the files that every
variant trained on the tuning seed, that only the chosen variant trained on the other
seed, that the choice is the best mean *validation* score, and that the report shows the
paper-form tables.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from _results import cell_result
from _train_bags import ENCODER, make_cohort

from wsi_ncmi.bench.cell_result import CellResult
from wsi_ncmi.bench.config import LossEntry
from wsi_ncmi.bench.parser import load_config
from wsi_ncmi.bench.suite import expand_grid, select_variants, split_configs
from wsi_ncmi.cli.bench import main
from wsi_ncmi.errors import ConfigError


def test_expand_grid_makes_every_combination_in_order() -> None:
    entry = LossEntry(
        "focal",
        kwargs={"gamma": 2.0},
        label="focal",
        train={"optim": {"weight_decay": 0.1}},
        grid={"optim.lr": [0.001, 0.003], "kwargs.gamma": [1.0, 2.0]},
    )
    variants = expand_grid(entry)
    assert [v.label for v in variants] == [
        "focal_lr0.001_gamma1",
        "focal_lr0.001_gamma2",
        "focal_lr0.003_gamma1",
        "focal_lr0.003_gamma2",
    ]
    assert variants[2].kwargs == {"gamma": 1.0}
    assert variants[2].train == {"optim": {"weight_decay": 0.1, "lr": 0.003}}
    assert entry.train == {"optim": {"weight_decay": 0.1}}  # the entry itself is untouched
    assert all(not v.grid for v in variants)
    assert expand_grid(LossEntry("ce", label="ce")) == [LossEntry("ce", label="ce")]


def test_selection_uses_validation_scores_only() -> None:
    config = load_config(
        None,
        {
            "sweep.losses": [
                {"name": "ce", "grid": {"optim.lr": [0.001, 0.01]}},
                {"name": "ncmi_mil"},
            ],
            "sweep.models": [{"name": "abmil"}],
        },
    )

    def result(loss: str, fold: int, val: float, test: float) -> CellResult:
        return cell_result(loss, fold_index=fold, val={"macro_f1_calibrated": val}, test_f1=test)

    results = [
        result("ce_lr0.001", 0, 0.60, 0.90),  # fold 0: best on test, worse on validation
        result("ce_lr0.001", 0, 0.50, 0.90),
        result("ce_lr0.01", 0, 0.70, 0.10),
        result("ce_lr0.01", 0, 0.60, 0.10),
        result("ce_lr0.001", 1, 0.90, 0.10),  # fold 1 chooses on its own validation
        result("ce_lr0.01", 1, 0.20, 0.90),
        result("ncmi_mil", 0, 0.4, 0.5),
        result("ncmi_mil", 1, 0.4, 0.5),
    ]
    choices = {(c.loss, c.fold_index): c for c in select_variants(config, results)}
    assert choices[("ce", 0)].variant.label == "ce_lr0.01"
    assert choices[("ce", 0)].scores == {
        "ce_lr0.001": pytest.approx((0.55, 2)),
        "ce_lr0.01": pytest.approx((0.65, 2)),
    }
    assert choices[("ce", 1)].variant.label == "ce_lr0.001"
    assert choices[("ncmi_mil", 1)].variant.label == "ncmi_mil"


def test_untuned_aggregators_take_the_tuned_ones_choice_per_loss_and_fold() -> None:
    from wsi_ncmi.bench.suite import tuning_config, tuning_table

    config = load_config(
        None,
        {
            "sweep.losses": [{"name": "ce", "grid": {"optim.lr": [0.001, 0.01]}}],
            "sweep.treatment": "ce",
            "sweep.models": [{"name": "abmil"}, {"name": "dsmil"}, {"name": "transmil"}],
            "sweep.tuning.models": ["dsmil"],
        },
    )
    tune = tuning_config(config)
    assert tune is not None
    assert [m.label for m in tune.sweep.models] == ["dsmil"]  # the grid trains on dsmil only

    def result(loss: str, model: str, fold: int, val: float) -> CellResult:
        return cell_result(loss, model, fold_index=fold, val={"macro_f1_calibrated": val})

    results = [
        result("ce_lr0.001", "dsmil", 0, 0.3),
        result("ce_lr0.01", "dsmil", 0, 0.8),
        result("ce_lr0.001", "dsmil", 1, 0.9),
        result("ce_lr0.01", "dsmil", 1, 0.1),
        # A stray score of an untuned aggregator (e.g. left by an earlier sweep) is ignored.
        result("ce_lr0.001", "abmil", 0, 1.0),
    ]
    choices = select_variants(config, results, [(0, "loho_center0"), (1, "loho_center1")])
    chosen = {(c.model, c.fold_index): (c.variant.label, c.tuned_on) for c in choices}
    assert chosen == {
        ("abmil", 0): ("ce_lr0.01", "dsmil"),
        ("abmil", 1): ("ce_lr0.001", "dsmil"),
        ("dsmil", 0): ("ce_lr0.01", "dsmil"),
        ("dsmil", 1): ("ce_lr0.001", "dsmil"),
        ("transmil", 0): ("ce_lr0.01", "dsmil"),
        ("transmil", 1): ("ce_lr0.001", "dsmil"),
    }
    table = tuning_table(config, choices)
    assert sum("| dsmil |" in line for line in table) == 4  # 2 folds x 2 variants
    assert not any("| abmil |" in line or "| transmil |" in line for line in table)
    assert "Not tuned on their own (`sweep.tuning.models`): abmil, transmil." in table[-1]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sweep.losses": [{"name": "ce", "grid": {"lr": [1]}}]}, "must be 'kwargs.<arg>'"),
        ({"sweep.losses": [{"name": "ce", "grid": {"optim.lr": []}}]}, "non-empty list"),
        (
            {
                "sweep.losses": [{"name": "ce", "grid": {"optim.lr": [1]}}],
                "sweep.tuning.seeds": [7],
            },
            "subset of sweep.seeds",
        ),
        ({"sweep.splits": {"a/b": {"kind": "loho"}}}, "a name must be like"),
        ({"sweep.splits": {"x": {"kind": "nope"}}}, "sweep.splits.x.kind"),
        ({"sweep.baselines": ["ncmi_mil"]}, "sweep.baselines"),
        ({"data.synth": {"preset": "bench"}}, "data.synth: data.manifest must be"),
        ({"data.synth": {"preset": "huge"}}, "data.synth.preset"),
        ({"prepare.extract": {"coords_dir": "x"}}, "prepare.extract has unknown keys"),
        ({"prepare.grid.min_tissue": 2.0}, "min_tissue must be a fraction"),
        ({"prepare.target_mpp": 1.0}, "unknown keys"),
        ({"sweep.split.file": "x.json"}, "sweep.split.file must be null"),
        ({"sweep.tuning.models": ["transmil"]}, "sweep.tuning.models must be null or"),
        ({"sweep.tuning.models": []}, "sweep.tuning.models must be null or"),
    ],
)
def test_suite_settings_are_checked(override: dict[str, object], message: str) -> None:
    if "sweep.losses" in override:
        override = {**override, "sweep.treatment": "ce"}
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)


def test_prepare_embeds_the_stage_configs() -> None:
    from wsi_ncmi.features.config import ExtractConfig
    from wsi_ncmi.tiling import GridParams
    from wsi_ncmi.train.config import SplitConfig

    config = load_config(
        None, {"prepare.extract": {"device": "cpu", "workers": 0}, "data.encoder": "random-cnn"}
    )
    assert config.prepare.grid == GridParams()  # wsi-tile's own defaults
    assert isinstance(config.sweep.split, SplitConfig)
    from wsi_ncmi.bench.pipeline import extract_config

    extract = extract_config(config)
    assert isinstance(extract, ExtractConfig)
    assert (extract.device, extract.workers, extract.encoder) == ("cpu", 0, "random-cnn")
    assert extract.skip_errors  # the benchmark's default: a bad slide does not stop it


def test_split_configs_run_in_subfolders() -> None:
    config = load_config(
        None,
        {
            "name": "full",
            "output_root": "out",
            "sweep.splits": {
                "loho": {"kind": "loho"},
                "fixed": {"kind": "fixed", "preset": "wilds"},
            },
        },
    )
    parts = split_configs(config)
    assert list(parts) == ["loho", "fixed"]
    assert parts["fixed"].out_dir == Path("out/full/fixed")
    assert parts["fixed"].sweep.split.kind == "fixed"
    assert not parts["fixed"].sweep.splits


def _cells(out: Path) -> set[str]:
    return {p.parent.name for p in out.glob("cells/*/result.json")}


def _suite_args(root: Path, out: Path, jobs: int) -> list[str]:
    return [
        "--name", "suite", "--output_root", str(out),
        "--data.manifest", str(root / "manifest.csv"), "--data.features_root", str(root),
        "--data.encoder", ENCODER, "--sweep.seeds", "0", "1", "--progress", "false",
        "--set", "sweep.models=[{name: abmil, kwargs: {hidden_dim: 16, attention_dim: 8}}]",
        "--set", "sweep.losses=[{name: ce, grid: {optim.lr: [0.002, 0.02]}},"
        " {name: focal}, {name: ncmi_mil}]",
        "--set", "sweep.treatment=ncmi_mil",
        "--set", "sweep.splits={loho: {kind: loho, folds: [0]},"
        " fixed: {kind: fixed, preset: c17_train012_test34}}",
        "--set", "train={trainer: {max_epochs: 1, patience: 0, accelerator: cpu},"
        " optim: {lr: 0.01}, report: {bootstrap: 100, max_heatmaps: 0}}",
        "--set", "stats.bootstrap=200", "--set", "torch_threads=1", "--jobs", str(jobs),
    ]  # fmt: skip


def _cell_pids(out: Path) -> set[int]:
    return {json.loads(p.read_text())["pid"] for p in out.glob("suite/*/cells/*/result.json")}


@pytest.mark.slow  # two job processes, each importing Lightning; 14 cells
def test_tuned_two_split_sweep_end_to_end(tmp_path: Path) -> None:
    """Both splits' tuning and final stages, in one pool of two job processes."""
    root = tmp_path / "bags"
    make_cohort(root, centers=5, patients_per_center=2)
    out = tmp_path / "bench"
    assert main(_suite_args(root, out, jobs=2)) == 0
    pids = _cell_pids(out)
    assert 1 <= len(pids) <= 2
    assert os.getpid() not in pids
    assert len(list(out.glob("suite/*/cells/*/result.json"))) == 14  # 2 splits x (4 + 3)
    for split, folds in (("loho", ["loho_center0"]), ("fixed", None)):
        base = out / "suite" / split
        cells = _cells(base)
        fold_names = folds or sorted({c.split("__")[-1] for c in cells})
        assert len(fold_names) == 1
        variants = ["ce_lr0.002", "ce_lr0.02", "focal", "ncmi_mil"]
        for variant in variants:  # every variant on the tuning seed, every fold
            for fold in fold_names:
                assert f"{variant}__abmil__seed0__{fold}" in cells
        summary = json.loads((base / "summary.json").read_text())
        assert {t["fold"] for t in summary["tuning"]} == set(fold_names)
        chosen = {t["loss"]: t["chosen"] for t in summary["tuning"]}  # one fold: one choice
        for record in summary["tuning"]:
            best = max(record["scores"], key=lambda k: record["scores"][k][0])
            assert record["scores"][record["chosen"]][0] == record["scores"][best][0]
        seed1 = {c.split("__")[0] for c in cells if "__seed1__" in c}
        assert seed1 == {chosen["ce"], "focal", "ncmi_mil"}  # only the chosen variants
        with (base / "results.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert {r["loss"] for r in rows} == {"ce", "focal", "ncmi_mil"}
        assert {r["variant"] for r in rows if r["loss"] == "ce"} == {chosen["ce"]}
        assert {r["seed"] for r in rows} == {"0", "1"}
        best = summary["best_baseline"]["ncmi_mil"]["abmil"]
        scores = best["validation_scores"]
        assert best["baseline"] == max(scores, key=lambda k: scores[k])
        assert set(scores) == {"ce", "focal"}
        assert "pooled" in best["groups"]
        assert "p_holm" in best["wilcoxon"]
        text = (base / "summary.md").read_text()
        for heading in ("every loss × aggregator", "Best baseline vs ncmi_mil", "Tuning on"):
            assert heading in text
