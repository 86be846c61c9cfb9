"""Training-side bad inputs and numerical faults, through ``wsi-train`` / ``run_training``.

Manifest errors, a patient in two split parts, NaN/inf features, wrong config types and
values (``wsi-train``, ``wsi-bench``, ``wsi-tile``), and a NaN loss step. Runs in the
calling process.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faults.badinputs import Outcome
from faults.cohorts import BAG_ENCODER, bag_cohort, train_config

MANIFEST_CASES: dict[str, tuple[str, str]] = {
    # name: (the bad row appended to a good manifest, text the message must contain)
    "manifest: unknown label": ("patient_900_node_0,patient_900,0,tumor", "unknown label 'tumor'"),
    "manifest: duplicate slide id": ("patient_000_node_0,patient_000,0,itc", "duplicate slide_id"),
    "manifest: missing center": ("patient_901_node_0,patient_901,,itc", "has no center"),
    "manifest: patient in two centers": (
        "patient_000_node_9,patient_000,3,itc", "all slides of a patient must come from one center"
    ),
}  # fmt: skip


def cli(main: Callable[[list[str]], int], argv: Sequence[str]) -> tuple[int, str]:
    """Run a CLI ``main`` in this process; return ``(exit code, stderr)``."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


def _outcome(name: str, code: int, want: int, message: str, *fragments: str) -> Outcome:
    ok = code == want and all(f in message for f in fragments)
    return Outcome(name, f"exit {want}: {' / '.join(fragments)}", f"exit {code}", message, ok)


def bad_manifest(good: Path, dst: Path, row: str) -> Path:
    """``good`` with one bad row appended."""
    dst.write_text(good.read_text().rstrip("\n") + "\n" + row + "\n")
    return dst


def leaky_splits(root: Path, out: Path) -> Path:
    """A splits file whose patient ``patient_000`` is in both train and test."""
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.train.splits import make_splits, save_splits

    rows = read_manifest(root / "manifest.csv")
    splits = make_splits(rows, "fixed", seed=0, train_centers=[0, 1], val_centers=[2],
                         test_centers=[3])  # fmt: skip
    record = json.loads(save_splits(splits, out).read_text())
    fold = record["folds"][0]
    moved = next(s for s in fold["train"] if s.startswith("patient_000_"))
    fold["test"].append(moved)
    fold["train"].remove(moved)
    # the patient's other slides stay in train: the patient now spans train and test
    out.write_text(json.dumps(record))
    return out


def poison_bag(root: Path, slide_id: str, value: float) -> Path:
    """Set one feature of ``slide_id``'s bag to ``value`` (NaN or inf) in place."""
    import h5py

    from wsi_ncmi.features.store import feature_path

    path = feature_path(root, BAG_ENCODER, slide_id)
    with h5py.File(path, "a") as h5:
        row = h5["features"][3]
        row[2] = np.float16(value)
        h5["features"][3] = row
    return path


def training_outcomes(work: Path) -> list[Outcome]:
    """Every training-side bad input; one :class:`Outcome` each."""
    from wsi_ncmi.cli.bench import main as bench_main
    from wsi_ncmi.cli.tile import main as tile_main
    from wsi_ncmi.cli.train import main as train_main

    root = work / "bad_bags"
    shutil.rmtree(root, ignore_errors=True)
    manifest = bag_cohort(root)
    config = train_config(root, work / "bad_train.yaml", epochs=1)
    base = ["--config", str(config), "--out_dir", str(work / "bad_run")]
    rows = []
    for name, (row, needle) in MANIFEST_CASES.items():
        path = bad_manifest(manifest, work / f"manifest_{len(rows)}.csv", row)
        code, err = cli(train_main, [*base, "--data.manifest", str(path)])
        rows.append(_outcome(name, code, 2, err, str(path), needle, "Fix:"))
    splits = leaky_splits(root, work / "leaky_splits.json")
    code, err = cli(train_main, [*base, "--split.file", str(splits)])
    rows.append(_outcome("splits: a patient in train and test", code, 2, err, str(splits),
                         "patient_000"))  # fmt: skip
    for label, value in (("NaN", float("nan")), ("inf", float("inf"))):
        bag = poison_bag(root, "patient_000_node_0", value)
        code, err = cli(train_main, base)
        rows.append(_outcome(f"{label} in features (wsi-train)", code, 1, err, str(bag),
                             "NaN/inf features", "re-run wsi-extract"))  # fmt: skip
        shutil.rmtree(root)
        bag_cohort(root)
    for name, args, needle in (
        ("train config: wrong type", ["--trainer.max_epochs", "many"], "max_epochs"),
        ("train config: out of range", ["--optim.lr", "-1"], "lr must be > 0"),
        ("train config: out of range", ["--data.max_patches_train", "0"], "max_patches_train"),
    ):
        code, err = cli(train_main, [*base, *args])
        rows.append(_outcome(name, code, 2, err, needle))
    bench = ["--data.manifest", str(manifest), "--data.features_root", str(root),
             "--data.encoder", BAG_ENCODER, "--output_root", str(work / "bad_bench")]  # fmt: skip
    for name, args, needle in (
        ("bench config: wrong type", ["--set", "train.trainer.max_epochs=many"], "max_epochs"),
        ("bench config: out of range", ["--set", "train.optim.lr=-1"], "lr"),
    ):
        code, err = cli(bench_main, [*bench, *args])
        rows.append(_outcome(name, code, 2, err, needle))
    code, err = cli(
        tile_main, [str(work), "--out_dir", str(work / "bad_tile"), "--grid.min_tissue", "2"]
    )
    rows.append(_outcome("tile config: out of range", code, 2, err, "min_tissue", "[0, 1]"))
    return rows


def nan_loss_step(work: Path, at_step: int = 15) -> tuple[Outcome, dict[str, Any]]:
    """Poison the aggregator's weights before training step ``at_step`` (epoch 1); train.

    The loss of that step is NaN. The run must stop with :class:`NonFiniteError` naming the
    slide of that step, and leave the last checkpoint loadable.
    """
    import lightning as L
    import torch

    from wsi_ncmi.errors import NonFiniteError
    from wsi_ncmi.train.config import TrainConfig
    from wsi_ncmi.train.fit import run_training

    root = work / "nan_bags"
    shutil.rmtree(root, ignore_errors=True)
    bag_cohort(root)
    from wsi_ncmi.cli.train import build_parser

    train_config(root, work / "nan.yaml", epochs=3)
    parser = build_parser()
    cfg = parser.parse_args(["--config", str(work / "nan.yaml"), "--out_dir", str(work / "nan")])
    from wsi_ncmi.cli.common import build_from

    config = build_from(TrainConfig, parser.instantiate(cfg))
    seen: dict[str, Any] = {}

    class Poison(L.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            if trainer.global_step == at_step:
                seen["index"] = batch["index"].tolist()
                seen["slide_ids"] = [
                    trainer.datamodule.rows["train"][i].slide_id for i in seen["index"]
                ]
                with torch.no_grad():
                    next(module.aggregator.parameters()).fill_(float("nan"))

    message = ""
    try:
        run_training(config, callbacks=[Poison()])
        got = "finished"
    except NonFiniteError as err:
        got, message = "NonFiniteError", str(err)
    last = work / "nan" / "fixed" / "checkpoints" / "last.ckpt"
    intact = False
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=False)
        intact = all(bool(torch.isfinite(v).all()) for v in state["state_dict"].values()
                     if v.is_floating_point())  # fmt: skip
    seen.update(message=message, checkpoint_intact=intact, got=got)
    ids = seen.get("slide_ids", ["?"])
    ok = got == "NonFiniteError" and intact and all(i in message for i in ids)
    return Outcome("NaN loss step", "NonFiniteError naming the slide id, checkpoint intact",
                   f"{got}, checkpoint intact={intact}", message, ok), seen  # fmt: skip
