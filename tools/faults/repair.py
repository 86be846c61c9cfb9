"""Poisoned caches and their repair, end to end: tile, extract, break a file, train, fix.

Each trial breaks one features file of a real ``wsi-tile`` + ``wsi-extract`` run the way
a lab breaks it (a NaN written into it, a truncated copy, a file of another schema), then
checks that ``wsi-train`` refuses it with a message that names the fix, that the fix
(rerunning ``wsi-extract`` on the same ``--out_dir``) redoes exactly that slide and says why,
and that ``wsi-train`` then runs. ``--redo SLIDE`` and ``--force`` are checked too.
Runs in the calling process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from faults.badinputs import Outcome
from faults.common import TILE_ARGS_1UM, Tally
from faults.training import cli

ENCODER = "random-cnn"
TILE_ARGS = TILE_ARGS_1UM
EXTRACT_ARGS = ("--encoder", ENCODER, "--random_init", "--device", "cpu", "--workers", "0")
EXTRACT_ARGS += ("--progress=false", "--allow_mpp_mismatch", "--batch_size", "32")


def small_slide(path: Path, seed: int, width: int = 1536, height: int = 1024) -> Path:
    """A small JPEG-tiled pyramid with two tissue blobs (0.5 µm/px), deterministic."""
    from wsi_ncmi.synth.blob_slide import BlobSlideSpec, write_blob_slide

    dx = 80 * (seed % 5)
    spec = BlobSlideSpec(
        width=width,
        height=height,
        mpp=0.5,
        centers=((width // 4 + dx, height // 2), (3 * width // 4 - dx, height // 2)),
        semi_axes=(width // 6, height // 4),
        downsamples=(1, 2, 4),
    )
    return write_blob_slide(path, spec)


def pipeline_cohort(root: Path, *, centers: int = 4, per_center: int = 2) -> dict[str, Path]:
    """Slides, manifest, ``wsi-tile`` and ``wsi-extract`` outputs and a train config.

    Returns the paths: ``manifest``, ``slides``, ``out`` (tile and extract output root)
    and ``config`` (a ``wsi-train`` YAML).
    """
    from wsi_ncmi.cli.extract import main as extract_main
    from wsi_ncmi.cli.tile import main as tile_main
    from wsi_ncmi.manifest import ManifestRow, write_manifest

    rows, slides, out = [], root / "slides", root / "out"
    for center in range(centers):
        for k in range(per_center):
            slide_id = f"patient_{center}{k}_node_0"
            small_slide(slides / f"center_{center}" / f"{slide_id}.tif", seed=center + k)
            label = ("negative", "macro")[k % 2]
            rows.append(ManifestRow(slide_id, f"patient_{center}{k}", center, label))
    write_manifest(rows, root / "manifest.csv")
    code, err = cli(tile_main, ["--manifest", str(root / "manifest.csv"), "--slide_dir",
                                str(slides), "--out_dir", str(out), *TILE_ARGS])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"wsi-tile failed: {err[-2000:]}")
    code, err = cli(extract_main, ["--out_dir", str(out), *EXTRACT_ARGS])
    if code != 0:
        raise RuntimeError(f"wsi-extract failed: {err[-2000:]}")
    config = {
        "seed": 0,
        "data": {"manifest": str(root / "manifest.csv"), "features_root": str(out),
                 "encoder": ENCODER, "max_patches_train": 30},
        "split": {"kind": "fixed", "train_centers": [0, 1], "val_centers": [2],
                  "test_centers": [3]},
        "model": {"name": "abmil", "kwargs": {"hidden_dim": 16, "attention_dim": 8}},
        "loss": {"name": "ce", "kwargs": {}},
        "optim": {"lr": 0.01},
        "trainer": {"max_epochs": 1, "patience": 0, "accelerator": "cpu"},
        "report": {"bootstrap": 5, "attention_top_k": 2, "max_heatmaps": 0},
    }  # fmt: skip
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    return {"manifest": root / "manifest.csv", "slides": slides, "out": out,
            "config": root / "train.yaml"}  # fmt: skip


def last_results(out: Path, stage: str = "wsi-extract") -> dict[str, dict[str, Any]]:
    """``{slide id: result}`` of the latest run report of ``stage`` under ``out``."""
    path = sorted((out / "reports").glob(f"{stage}_*.json"))[-1]
    return {r["item_id"]: r for r in json.loads(path.read_text())["results"]}


def _train(paths: dict[str, Path], run: Path) -> tuple[int, str]:
    from wsi_ncmi.cli.train import main as train_main

    shutil.rmtree(run, ignore_errors=True)
    return cli(train_main, ["--config", str(paths["config"]), "--out_dir", str(run)])


def _extract(paths: dict[str, Path], *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    from wsi_ncmi.cli.extract import main as extract_main

    code, _ = cli(extract_main, ["--out_dir", str(paths["out"]), *EXTRACT_ARGS, *extra])
    return code, last_results(paths["out"])


def poison_nan(path: Path) -> None:
    """Write one NaN into a features file in place (attributes untouched)."""
    import h5py
    import numpy as np

    with h5py.File(path, "a") as h5:
        row = h5["features"][2]
        row[1] = np.nan
        h5["features"][2] = row


def truncate_half(path: Path) -> None:
    """Cut a file to half its size, as an interrupted copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def other_schema(path: Path) -> None:
    """Mark a features file as another schema version."""
    import h5py

    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = 99


BREAKS = {
    "NaN in a features file": (poison_nan, "NaN/inf"),
    "truncated features file": (truncate_half, "truncated or damaged"),
    "features file of another schema": (other_schema, "schema version 99"),
}


def repair_round_trips(work: Path) -> tuple[Tally, list[Outcome]]:
    """Every break of :data:`BREAKS`, then ``--redo`` and ``--force``; one outcome each."""
    from wsi_ncmi.features.store import feature_path

    tally = Tally("poisoned cache repaired (round trip)", command="tile+extract+train")
    outcomes: list[Outcome] = []
    paths = pipeline_cohort(work / "repair")
    victim = "patient_00_node_0"  # a training slide
    target = feature_path(paths["out"], ENCODER, victim)
    for name, (breaker, needle) in BREAKS.items():
        tally.injected += 1
        breaker(target)
        code, err = _train(paths, work / "repair_run")
        said = code != 0 and str(target) in err and needle in err and "wsi-extract" in err
        fixed, results = _extract(paths)
        redone = results[victim]["status"] == "ok" and results[victim]["reason"].startswith(
            "redone"
        )
        others = {r["status"] for k, r in results.items() if k != victim} == {"skipped"}
        code2, err2 = _train(paths, work / "repair_run")
        ok = said and fixed == 0 and redone and others and code2 == 0
        result = results[victim]
        got = (
            f"train exit {code}; extract exit {fixed}, {victim}: {result['status']} "
            f"{result['reason']!r}; train exit {code2}"
        )
        message = err.strip().splitlines()[-1] if err.strip() else err2
        outcomes.append(Outcome(name, "refused with the fix named; fix works", got, message, ok))
        tally.recovered += int(ok)
    for flag in (["--redo", victim], ["--force"]):
        tally.injected += 1
        code, results = _extract(paths, *flag)
        want = {k: "ok" if flag[0] == "--force" or k == victim else "skipped" for k in results}
        got_statuses = {k: r["status"] for k, r in results.items()}
        ok = code == 0 and got_statuses == want
        outcomes.append(Outcome(f"wsi-extract {' '.join(flag)}", str(want), str(got_statuses),
                                "", ok))  # fmt: skip
        tally.recovered += int(ok)
    for outcome in outcomes:
        if not outcome.ok:
            tally.fail(f"{outcome.name}: {outcome.got}")
    return tally, outcomes
