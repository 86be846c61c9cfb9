"""Slide-level (MIL) runs and regenerated cohorts for the hospital-1 diagnosis.

The ``mil``, ``counterfactual`` and ``oracle`` measurements of
``tools/bench/hospital_shift.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from hospital_stains import (
    BENCH_CONFIG,
    COHORT,
    ENCODER,
    FEATURE_NAMES,
    FEATURES_ROOT,
    RUIFROK_DAB,
    SWAPS,
)

from wsi_ncmi.manifest import LABELS


def bench_train_config(
    out_dir: Path,
    seed: int,
    folds: Sequence[int],
    *,
    features_root: str,
    slide_norm: str,
    lr: float,
    weight_decay: float,
    split: str = "loho",
) -> Any:
    """``wsi-train``'s configuration of one CE + ABMIL leave-one-hospital-out sweep cell.

    The data, trainer and report settings are the bench config's ``train`` section; the
    model is its ABMIL; the split is its ``loho`` split (``split="kfold"``: five
    patient-grouped folds over every hospital instead, so each hospital is also trained on).
    """
    import yaml

    from wsi_ncmi.train.config import (
        DataConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        ReportConfig,
        SplitConfig,
        TrainConfig,
        TrainerConfig,
    )

    bench = yaml.safe_load(Path(BENCH_CONFIG).read_text())
    train = bench["train"]
    abmil = next(m for m in bench["sweep"]["models"] if m["name"] == "abmil")
    data = DataConfig(
        manifest=bench["data"]["manifest"],
        features_root=features_root,
        encoder=bench["data"]["encoder"],
        slide_dir=bench["data"]["slide_dir"],  # the ground truth, for the tumour attention
        **{**train["data"], "slide_norm": slide_norm},
    )
    # No heatmaps; a few bootstrap resamples (the report needs at least one; CIs unused).
    report = {**train["report"], "max_heatmaps": 0, "bootstrap": 10}
    config = TrainConfig(
        out_dir=str(out_dir),
        seed=seed,
        resume=True,  # a fold killed after training resumes from its last checkpoint
        data=data,
        split=SplitConfig(
            kind="kfold" if split == "kfold" else "loho",
            val_fraction=float(bench["sweep"]["splits"]["loho"]["val_fraction"]),
            folds=list(folds),
        ),
        model=ModelConfig(name="abmil", kwargs=dict(abmil["kwargs"])),
        loss=LossConfig(name="ce"),
        optim=OptimConfig(**{**train["optim"], "lr": lr, "weight_decay": weight_decay}),
        trainer=TrainerConfig(**train["trainer"]),
        report=ReportConfig(**report),
    )
    return config


def class_shift(true: Sequence[str], pred: Sequence[str]) -> float:
    """Mean of predicted minus true class index (negative < ITC < micro < macro)."""
    order = {label: i for i, label in enumerate(LABELS)}
    return float(np.mean([order[p] - order[t] for t, p in zip(true, pred, strict=True)]))


def confusion(true: Sequence[str], pred: Sequence[str]) -> list[list[int]]:
    """``[true][pred]`` counts over :data:`~wsi_ncmi.manifest.LABELS`."""
    order = {label: i for i, label in enumerate(LABELS)}
    matrix = [[0] * len(LABELS) for _ in LABELS]
    for t, p in zip(true, pred, strict=True):
        matrix[order[t]][order[p]] += 1
    return matrix


def macro_f1(true: Sequence[str], pred: Sequence[str]) -> float:
    """Macro-F1 over the labels present in ``true`` or ``pred`` (as scikit-learn)."""
    from sklearn.metrics import f1_score

    return float(f1_score(list(true), list(pred), average="macro", zero_division=0))


def run_mil(
    out: Path,
    seeds: Sequence[int],
    folds: Sequence[int],
    *,
    features_root: str,
    slide_norm: str,
    lr: float,
    weight_decay: float,
    split: str = "loho",
    drop: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Train the folds for every seed; one record per test slide.

    Each record holds the seed, the slide's hospital, its true label, its predicted label
    under both decision rules, and the fold's mean attention mass on true tumour patches
    (over its test slides with tumour). ``drop``: feature dimensions (names of
    :data:`FEATURE_NAMES`) set to 0 in every bag after the slide normalisation, the same
    for training, validation and test (an ablation: the model cannot use them).
    """
    import torch

    import wsi_ncmi.train.data as train_data
    from wsi_ncmi.bench.cells import quiet_lightning
    from wsi_ncmi.train.fit import run_training

    quiet_lightning()
    torch.set_num_threads(1)  # as the sweep's cells (one thread per job)
    columns = [FEATURE_NAMES.index(name) for name in drop]
    original = train_data.apply_slide_norm

    def normalise_and_drop(bag: torch.Tensor, mode: str) -> torch.Tensor:
        out = original(bag, mode)
        if columns:
            out = out.clone()
            out[:, columns] = 0
        return out

    for seed in seeds:
        config = bench_train_config(
            out / f"seed{seed}",
            seed,
            folds,
            features_root=features_root,
            slide_norm=slide_norm,
            lr=lr,
            weight_decay=weight_decay,
            split=split,
        )
        train_data.apply_slide_norm = normalise_and_drop  # the data module's name for it
        try:
            run_training(config)
        finally:
            train_data.apply_slide_norm = original
    return read_mil(out, seeds)


def read_mil(out: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The records of :func:`run_mil` from the files its runs wrote (no training).

    Reads each seed's ``predictions.csv`` (every test slide, both decision rules) and
    each fold's ``metrics.json`` (the fitted prior-aware rule and the attention summary).
    """
    import csv

    records: list[dict[str, Any]] = []
    for seed in seeds:
        run = out / f"seed{seed}"
        with (run / "predictions.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        folds: dict[str, dict[str, Any]] = {}
        for r in rows:
            name = r["split"].split("/", 1)[0]
            if name not in folds:
                folds[name] = json.loads((run / name / "metrics.json").read_text())
            fold = folds[name]
            records.append(
                {
                    "seed": seed,
                    "center": int(r["center"]),
                    "slide_id": r["slide_id"],
                    "true": r["true_label"],
                    "calibrated": r.get("pred_label_calibrated") or r["pred_label"],
                    "default": r.get("pred_label_default") or r["pred_label"],
                    "tumour_attention": fold["attention"].get("mean_tumour_attention"),
                    "rule_scale": fold["decision_rule"].get("scale"),
                }
            )
    return records


def mil_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per held-out hospital and decision rule: macro-F1 and class shift over seeds,
    the confusion matrix summed over seeds."""
    summary: dict[str, Any] = {}
    for center in sorted({r["center"] for r in records}):
        mine = [r for r in records if r["center"] == center]
        seeds = sorted({r["seed"] for r in mine})
        per_rule: dict[str, Any] = {}
        for rule in ("calibrated", "default"):
            f1s = []
            shifts = []
            for seed in seeds:
                rs = [r for r in mine if r["seed"] == seed]
                true, pred = [r["true"] for r in rs], [r[rule] for r in rs]
                f1s.append(macro_f1(true, pred))
                shifts.append(class_shift(true, pred))
            true_all = [r["true"] for r in mine]
            pred_all = [r[rule] for r in mine]
            below = sum(
                LABELS.index(p) < LABELS.index(t) for t, p in zip(true_all, pred_all, strict=True)
            )
            above = sum(
                LABELS.index(p) > LABELS.index(t) for t, p in zip(true_all, pred_all, strict=True)
            )
            per_rule[rule] = {
                "macro_f1": f1s,
                "macro_f1_mean": float(np.mean(f1s)),
                "class_shift": shifts,
                "class_shift_mean": float(np.mean(shifts)),
                "errors_too_low": int(below),
                "errors_too_high": int(above),
                "confusion": confusion(true_all, pred_all),
            }
        attention = [
            next(r["tumour_attention"] for r in mine if r["seed"] == seed) for seed in seeds
        ]
        scale = [next(r["rule_scale"] for r in mine if r["seed"] == seed) for seed in seeds]
        summary[str(center)] = {
            "seeds": seeds,
            "slides": len(mine) // len(seeds),
            "tumour_attention": attention,
            "rule_scale": scale,
        } | per_rule
    return summary


def mil_lines(summary: dict[str, Any], rule: str = "calibrated") -> list[str]:
    """The summary as text lines (one decision rule)."""
    lines = [
        f"decision rule: {rule}; confusion rows = true, columns = predicted "
        f"({' / '.join(LABELS)}), summed over seeds",
        "held-out  macro-F1 (mean; per seed)          class shift (mean; per seed)    "
        "errors too low / too high",
    ]
    for center, s in summary.items():
        r = s[rule]
        f1 = ", ".join(f"{v:.3f}" for v in r["macro_f1"])
        shift = ", ".join(f"{v:+.2f}" for v in r["class_shift"])
        lines.append(
            f"center {center}  {r['macro_f1_mean']:.3f} ({f1})   "
            f"{r['class_shift_mean']:+.2f} ({shift})   {r['errors_too_low']} / "
            f"{r['errors_too_high']}"
        )
        attention = [a for a in s["tumour_attention"] if a is not None]
        mass = f"{np.mean(attention):.3f}" if attention else "-"
        lines.append(f"          confusion {r['confusion']}; tumour attention {mass}")
        scales = ", ".join("-" if v is None else f"{v:g}" for v in s["rule_scale"])
        lines.append(f"          prior-aware rule's fitted scale per seed (0 = argmax): {scales}")
    return lines


# -------------------------------------------------------------------- counterfactual


def build_counterfactual(swap: str, center: int, donor: int, out: Path, *, seed: int = 0) -> Path:
    """Regenerate ``center``'s slides with ``SWAPS[swap]`` taken from ``donor``'s profile.

    Tiles and extracts them with the bench config's grid and encoder, and returns a
    feature root where ``center``'s features are the new ones and every other slide's
    are links to the prepared cohort's (:data:`FEATURES_ROOT`).
    """
    import wsi_ncmi.synth.generate as generate
    from wsi_ncmi.bench.parser import load_config
    from wsi_ncmi.bench.pipeline import prepare_features
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth import generate_cohort
    from wsi_ncmi.synth.stain import CenterProfile, center_profile

    recipient, giver = center_profile(center), center_profile(donor)
    changed = replace(recipient, **{name: getattr(giver, name) for name in SWAPS[swap]})

    target = center

    def patched(center: int) -> CenterProfile:  # the signature of center_profile
        return changed if center == target else center_profile(center)

    bench = load_config(BENCH_CONFIG)
    cohort = out / "cohort"
    original = generate.center_profile
    generate.center_profile = patched  # the generator looks the profile up here
    try:
        generate_cohort(
            read_manifest(bench.data.synth.manifest),  # type: ignore[union-attr]
            cohort,
            preset=bench.data.synth.preset,  # type: ignore[union-attr]
            seed=seed,
            use_preset_subset=False,
            centers=[center],
            workers=1,  # in this process: spawned workers would not see the patch
            progress=False,
        )
    finally:
        generate.center_profile = original
    (out / "profile.json").write_text(
        json.dumps({"swap": swap, "donor": donor, "profile": asdict(changed)}, indent=1) + "\n"
    )
    tiles = out / "tiles"
    config = load_config(
        BENCH_CONFIG,
        {
            "data.manifest": str(cohort / "manifest.csv"),
            "data.slide_dir": str(cohort),
            "data.features_root": str(tiles),
            "progress": False,
        },
    )
    prepare_features(config, {})
    return _link_feature_root(out / "features_root", center, tiles)


def _link_feature_root(root: Path, center: int, own: Path) -> Path:
    """A feature root whose ``center`` features come from ``own``, the rest from the cohort's."""
    from wsi_ncmi.features.schema import feature_path
    from wsi_ncmi.manifest import read_manifest

    for row in read_manifest(Path(COHORT) / "manifest.csv"):
        link = feature_path(root, ENCODER, row.slide_id)
        link.parent.mkdir(parents=True, exist_ok=True)
        source = feature_path(own if row.center == center else FEATURES_ROOT, ENCODER, row.slide_id)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(source.resolve(), link.parent.resolve()))
    return root


def build_oracle(center: int, out: Path) -> Path:
    """Extract ``center``'s slides again, deconvolving with its own stain vectors.

    ``stain-stats`` turns optical density into H, E and DAB with Ruifrok and Johnston's
    fixed vectors. Here the H and E rows are the generator's vectors of ``center``
    (:mod:`wsi_ncmi.synth.stain`, without the per-slide jitter of the gains, which the
    per-slide normalisation cancels); the DAB row stays Ruifrok's. The slides, tiles and
    every other feature are the prepared cohort's. Returns a feature root as
    :func:`build_counterfactual` does.
    """
    import torch

    import wsi_ncmi.features.encoders.builtin as builtin
    from wsi_ncmi.bench.parser import load_config
    from wsi_ncmi.bench.pipeline import extract_config
    from wsi_ncmi.features.run import run_extraction
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth.stain import center_profile

    profile = center_profile(center)
    stains = torch.tensor(
        [profile.hematoxylin_od, profile.eosin_od, RUIFROK_DAB], dtype=torch.float64
    )
    coords = out / "coords"
    coords.mkdir(parents=True, exist_ok=True)
    for row in read_manifest(Path(COHORT) / "manifest.csv"):
        if row.center == center:
            link = coords / f"{row.slide_id}.h5"
            if not link.is_symlink():
                source = (Path(FEATURES_ROOT) / "coords" / link.name).resolve()
                link.symlink_to(os.path.relpath(source, coords.resolve()))
    tiles = out / "tiles"
    bench = load_config(BENCH_CONFIG, {"data.features_root": str(tiles), "progress": False})
    config = replace(extract_config(bench), coords_dir=coords)
    original = builtin._HED_FROM_RGB
    builtin._HED_FROM_RGB = torch.linalg.inv(stains).float()  # read at every forward call
    try:
        run_extraction(config)
    finally:
        builtin._HED_FROM_RGB = original
    return _link_feature_root(out / "features_root", center, tiles)


# ------------------------------------------------------------------------------ main
