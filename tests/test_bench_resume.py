"""``wsi-bench`` resumes after SIGKILL without recomputing finished cells.

The sweep runs in a child process on generated feature bags (``_train_bags``) with the
real trainer; it is killed (SIGKILL, whole process group) as soon as its first cell has
written ``result.json``. The rerun must leave every finished cell's result untouched (same
file, same mtime, same writer pid), finish the others and write the reports.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _train_bags import ENCODER, make_cohort

from wsi_ncmi.bench.parser import load_config
from wsi_ncmi.cli.bench import main
from wsi_ncmi.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _args(root: Path, out: Path) -> list[str]:
    return [
        "--name",
        "resume",
        "--output_root",
        str(out),
        "--data.manifest",
        str(root / "manifest.csv"),
        "--data.features_root",
        str(root),
        "--data.encoder",
        ENCODER,
        "--sweep.seeds",
        "0",
        "--progress=false",
        "--set",
        "sweep.models=[{name: abmil, kwargs: {hidden_dim: 16, attention_dim: 8}}]",
        "--set",
        "train={trainer: {max_epochs: 3, patience: 0, accelerator: cpu}, optim: {lr: 0.02},"
        " report: {bootstrap: 100, max_heatmaps: 0}}",
        "--set",
        "stats.bootstrap=200",
        "--set",
        "torch_threads=1",
        "--set",
        "sweep.split.folds=[0, 1, 2]",
    ]


def _finished(out: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for path in sorted(out.glob("resume/cells/*/result.json")):
        found[path.parent.name] = (path.stat().st_mtime_ns, json.loads(path.read_text())["pid"])
    return found


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    """``wsi-bench`` in a child process of its own session (stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", "wsi_ncmi.cli.bench", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # As from a shell: SIGINT at its default, so Python turns it into KeyboardInterrupt.
        # An ignored SIGINT would be inherited, and earlier tests in this process may leave
        # it ignored (Lightning's DDP teardown sets SIG_IGN while it destroys the group).
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_resume_after_sigkill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "bags"
    make_cohort(root, centers=5, patients_per_center=2)
    out = tmp_path / "bench"
    child = _spawn(_args(root, out), tmp_path)
    deadline = time.monotonic() + 300
    try:
        while not _finished(out):
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.1)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    before = _finished(out)
    assert 1 <= len(before) < 6, "the kill must land mid-sweep"

    assert main(_args(root, out)) == 0
    after = _finished(out)
    assert len(after) == 6  # 2 losses x 3 folds
    for cell_id, stamp in before.items():
        assert after[cell_id] == stamp, f"{cell_id} was recomputed"
    assert all(after[c][1] == os.getpid() for c in after if c not in before)
    printed = capsys.readouterr().out
    assert f"{6 - len(before)} trained, {len(before)} already done, 0 failed" in printed
    with (out / "resume" / "results.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6


@pytest.mark.slow  # 4 s: two bench runs
def test_changed_settings_are_refused_not_reused(tmp_path: Path) -> None:
    """Finished cells made with other settings are never silently reused."""
    root = tmp_path / "bags"
    make_cohort(root, centers=5, patients_per_center=2)
    out = tmp_path / "bench"
    args = [
        *_args(root, out),
        "--set",
        "sweep.losses=[{name: ce}]",
        "--set",
        "sweep.treatment=ce",
        "--set",
        "sweep.split.folds=[0]",
    ]
    assert main(args) == 0
    assert main([*args, "--set", "train.optim.lr=0.01"]) == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sweep.losses": [{"name": "nope"}]}, "sweep.losses: name must be one of"),
        ({"sweep.treatment": "focal"}, "sweep.treatment must be one of the loss labels"),
        ({"jobs": 0}, "jobs must be >= 1"),
        ({"sweep.seeds": "0"}, "sweep.seeds: Expected a <class 'list'>. Got value: 0"),
        ({"train.trainer.max_epoch": 3}, "train.trainer has unknown keys ['max_epoch']"),
        ({"bogus": 1}, "config has unknown keys ['bogus']"),
        ({"train.data.manifest": "x.csv"}, "train.data must not set ['manifest']"),
        (
            {"sweep.losses": [{"name": "ce", "train": {"optimiser": {}}}], "sweep.treatment": "ce"},
            "sweep.losses[0].train has unknown sections ['optimiser']",
        ),
    ],
)
def test_config_validation(override: dict[str, object], message: str) -> None:
    """Checked when loaded, wsi-train's sections included (every cell's, but seed and fold)."""
    with pytest.raises(ConfigError) as info:
        load_config(None, override)
    assert message in str(info.value)


def test_a_loss_entry_overrides_the_train_sections_for_that_loss_only() -> None:
    from wsi_ncmi.bench.plan import Cell, train_config_for

    config = load_config(
        None,
        {
            "sweep.losses": [
                {"name": "ce", "train": {"optim": {"lr": 0.003}, "data": {"batch_size": 1}}},
                {"name": "ncmi_mil"},
            ],
            "sweep.treatment": "ncmi_mil",
            "train.optim.lr": 0.001,
        },
    )
    cells = [
        Cell(loss, config.sweep.models[0], 0, 0, "f", (0,), "s.json")
        for loss in config.sweep.losses
    ]
    ce, mil = (train_config_for(config, cell, Path("x")) for cell in cells)
    assert (ce.optim.lr, ce.data.batch_size) == (0.003, 1)
    assert (mil.optim.lr, mil.data.batch_size) == (0.001, 8)
    bad = {
        "sweep.losses": [{"name": "ce", "train": {"optim": {"lrr": 1}}}],
        "sweep.treatment": "ce",
    }
    with pytest.raises(ConfigError, match=r"sweep\.losses\[ce\]\.train\.optim has unknown keys"):
        load_config(None, bad)


def test_an_aggregator_entry_overrides_the_train_sections_under_the_loss_entry() -> None:
    """Layering: defaults < ``train`` < ``sweep.models[].train`` < ``sweep.losses[].train``."""
    from wsi_ncmi.bench.plan import Cell, cell_hash, train_config_for

    overrides: dict[str, object] = {
        "sweep.losses": [
            {"name": "ce", "train": {"data": {"batch_size": 2}}},
            {"name": "ncmi_mil"},
        ],
        "sweep.models": [
            {"name": "abmil"},
            {"name": "transmil", "train": {"data": {"max_patches_train": 64, "batch_size": 4}}},
        ],
        "train.data.max_patches_train": 512,
    }
    config = load_config(None, overrides)
    abmil, transmil = config.sweep.models
    ce, mil = config.sweep.losses
    made = {
        (m.label, loss.label): train_config_for(
            config, Cell(loss, m, 0, 0, "f", (0,), "s.json"), Path("x")
        )
        for m in (abmil, transmil)
        for loss in (ce, mil)
    }
    got = {k: (t.data.max_patches_train, t.data.batch_size) for k, t in made.items()}
    assert got == {
        ("abmil", "ce"): (512, 2),
        ("abmil", "ncmi_mil"): (512, 8),
        ("transmil", "ce"): (64, 2),  # the loss's own batch size wins over the aggregator's
        ("transmil", "ncmi_mil"): (64, 4),
    }
    # An aggregator without overrides keeps the digest it had before the option existed.
    splits = Path(__file__).parent / "data" / "bench_configs.json"
    plain = load_config(None, {**overrides, "sweep.models": [{"name": "abmil"}]})
    cell = Cell(plain.sweep.losses[0], plain.sweep.models[0], 0, 0, "f", (0,), str(splits))
    same = Cell(ce, abmil, 0, 0, "f", (0,), str(splits))
    assert cell_hash(train_config_for(plain, cell, Path("x")), cell) == cell_hash(
        train_config_for(config, same, Path("x")), same
    )
    with pytest.raises(ConfigError, match=r"sweep\.models\[abmil\]\.train\.optim has unknown keys"):
        load_config(None, {"sweep.models": [{"name": "abmil", "train": {"optim": {"lrr": 1}}}]})
    with pytest.raises(ConfigError, match=r"sweep\.models\[0\]\.train has unknown sections"):
        load_config(None, {"sweep.models": [{"name": "abmil", "train": {"optimiser": {}}}]})
    with pytest.raises(ConfigError, match=r"sweep\.models\[0\]\.train\.data must not set"):
        load_config(
            None, {"sweep.models": [{"name": "abmil", "train": {"data": {"encoder": "x"}}}]}
        )


@pytest.mark.slow  # wsi-* in child processes, each importing Lightning
def test_ctrl_c_stops_a_parallel_sweep_and_the_rerun_resumes(tmp_path: Path) -> None:
    """SIGINT to the main process only (``kill -INT``) while two cells train at once.

    The cells' processes do not see it: the sweep must stop starting queued cells, let
    the two running ones end, and exit 130, instead of draining the whole queue.
    """
    root = tmp_path / "bags"
    make_cohort(root, centers=5, patients_per_center=2)
    out = tmp_path / "bench"
    args = [*_args(root, out), "--jobs", "2"]
    child = _spawn(args, tmp_path)
    deadline = time.monotonic() + 300
    # Interrupt once both job processes have started a cell: four cells are still queued.
    while (
        len(list(out.glob("resume/cells/*/run"))) < 2
        and child.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    if child.poll() is not None:  # only on a starved machine: nothing left to interrupt
        pytest.skip("the sweep ended before two of its cells were seen running")
    os.kill(child.pid, signal.SIGINT)
    try:
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    stopped = _finished(out)
    assert child.returncode == 130, err.decode()
    assert "interrupted; rerun the same command to resume" in err.decode()
    assert len(stopped) < 6, "the interrupt must stop the sweep, not drain every queued cell"
    assert main([*args, "--jobs", "1"]) == 0  # the job count is not a setting of any cell
    assert len(_finished(out)) == 6  # 2 losses x 3 folds
