"""Why held-out hospital 1 of the ``bench`` cohort is called one class too low.

Five measurements, each a subcommand (BENCHMARKS.md, "Hospital 1", gives the figures):

``stains``
    The generator's acquisition profile of every center (``wsi_ncmi/synth/stain.py``):
    the angle between its hematoxylin and eosin optical-density vectors, the angle of
    each to the fixed Ruifrok-Johnston vectors that ``stain-stats`` deconvolves with, and
    what that deconvolution reads from one unit of the center's hematoxylin.

``profile``
    The patch-level tumour-vs-normal profile after a slide normalisation: per hospital,
    the mean normalised feature of the tumour patches (>= 50 % tumour) minus that of the
    tumour-free patches of the same slides; its length relative to the other hospitals'
    mean profile, its correlation with that profile and the dimensions whose sign flips.

``mil``
    Attention-MIL at the slide level, as the sweep trains it (CE + ABMIL, the sweep's
    ABMIL settings and ``train`` section, ``wsi-train``'s
    :func:`~wsi_ncmi.train.fit.run_training`): leave-one-hospital-out folds for some
    seeds, and per held-out hospital the confusion matrix, macro-F1, the *class shift*
    (mean predicted minus true class index, over negative < ITC < micro < macro; -1 is
    "one class too low" everywhere), the attention mass on true tumour patches and the
    fitted prior-aware rule, under both decision rules. ``--summarise_only`` reads
    finished runs again.

``counterfactual``
    Regenerates one hospital's slides with one part of its acquisition profile replaced
    by another hospital's (same slide seeds, so the same tissue and tumours), tiles and
    extracts them with the bench config's grid and encoder, and builds a feature root in
    which only that hospital's features differ (the others are links to the prepared
    cohort's files). ``mil --features_root`` then trains on it.

``oracle``
    Extracts one hospital's own slides again with ``stain-stats`` deconvolving with that
    hospital's true stain vectors (what a perfect per-slide stain estimate would give),
    in a feature root built the same way.

Outputs go under ``outputs/bench_c17/hosp1/``. Usage, from the repository root, after the
bench cohort is prepared (``wsi-bench --config configs/bench/synthetic_full.yaml`` writes
it under ``outputs/bench_c17/``)::

    python tools/bench/hospital_shift.py stains
    python tools/bench/hospital_shift.py profile --slide_norm robust
    python tools/bench/hospital_shift.py mil --folds 1 --seeds 0 1 2 \
        --out outputs/bench_c17/hosp1/mil_robust
    python tools/bench/hospital_shift.py counterfactual --swap stain_vectors
    python tools/bench/hospital_shift.py mil --folds 1 --seeds 0 1 2 \
        --features_root outputs/bench_c17/hosp1/cf_stain_vectors_from0/features_root \
        --out outputs/bench_c17/hosp1/mil_cf_stain_vectors
    python tools/bench/hospital_shift.py oracle --center 1
    python tools/bench/hospital_shift.py mil --folds 1 --seeds 0 1 2 \
        --features_root outputs/bench_c17/hosp1/oracle_center1/features_root \
        --out outputs/bench_c17/hosp1/mil_oracle
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.manifest import LABELS

BENCH_CONFIG = "configs/bench/synthetic_full.yaml"
COHORT = "outputs/bench_c17/cohort"
FEATURES_ROOT = "outputs/bench_c17/tiles"
ENCODER = "stain-stats"
WORK = "outputs/bench_c17/hosp1"

#: ``stain-stats``'s 24 dimensions (``wsi_ncmi/features/encoders/builtin.py``), in order.
FEATURE_NAMES: tuple[str, ...] = (
    *(f"rgb_mean_{c}" for c in "RGB"),
    *(f"rgb_std_{c}" for c in "RGB"),
    *(f"od_mean_{c}" for c in "RGB"),
    *(f"od_std_{c}" for c in "RGB"),
    *(f"{s}_mean" for s in ("H", "E", "DAB")),
    *(f"{s}_std" for s in ("H", "E", "DAB")),
    "H_q25",
    "H_q75",
    "tissue_fraction",
    "grad_mean",
    "grad_std",
    "laplacian_var",
)

#: The parts of a :class:`~wsi_ncmi.synth.stain.CenterProfile` that ``counterfactual``
#: can take from another center (``full_mpp`` is never swapped: the slide geometry stays).
SWAPS: dict[str, tuple[str, ...]] = {
    "stain_vectors": ("hematoxylin_od", "eosin_od"),
    "hematoxylin_od": ("hematoxylin_od",),
    "stain_gains": ("hematoxylin_gain", "eosin_gain"),
    "optics": ("background_rgb", "blur_sigma_um", "noise_sigma", "jpeg_quality"),
    "all": (
        "hematoxylin_od",
        "eosin_od",
        "hematoxylin_gain",
        "eosin_gain",
        "background_rgb",
        "blur_sigma_um",
        "noise_sigma",
        "jpeg_quality",
    ),
}

#: Ruifrok & Johnston's H, E and DAB optical-density vectors (the rows ``stain-stats``
#: inverts, ``wsi_ncmi/features/encoders/builtin.py``).
RUIFROK_H = (0.65, 0.70, 0.29)
RUIFROK_E = (0.07, 0.99, 0.11)
RUIFROK_DAB = (0.27, 0.57, 0.78)
#: The H and E reference vectors of Macenko et al.'s stain normalisation, as commonly used
#: (``HERef``): a real-slide pair, for scale.
MACENKO_H = (0.5626, 0.7201, 0.4062)
MACENKO_E = (0.2159, 0.8012, 0.5581)


def _angle(a: Sequence[float], b: Sequence[float]) -> float:
    u = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    v = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    return float(np.degrees(np.arccos(np.clip(u @ v, -1.0, 1.0))))


# ---------------------------------------------------------------------------- stains


def stain_lines() -> list[str]:
    """One line per center: the stain geometry, and what ``stain-stats`` reads from it.

    "H read as" is Ruifrok-Johnston colour deconvolution (what ``stain-stats`` computes)
    of one unit of the center's hematoxylin optical density: the share that lands in the
    H, E and DAB channels. For a center whose hematoxylin is Ruifrok's it is (1, 0, 0).
    """
    from wsi_ncmi.synth.stain import CENTER_PROFILES

    unmix = np.linalg.inv(np.asarray([RUIFROK_H, RUIFROK_E, RUIFROK_DAB], dtype=np.float64))
    lines = [
        "center  H-E angle  H vs Ruifrok H  E vs Ruifrok E  H read as (H, E, DAB)   "
        "H gain  E gain  blur um  noise  jpeg"
    ]
    for p in CENTER_PROFILES:
        h, e, dab = np.asarray(p.hematoxylin_od, dtype=np.float64) @ unmix
        lines.append(
            f"{p.center:>6}  {_angle(p.hematoxylin_od, p.eosin_od):>8.1f}°  "
            f"{_angle(p.hematoxylin_od, RUIFROK_H):>13.1f}°  "
            f"{_angle(p.eosin_od, RUIFROK_E):>13.1f}°  ({h:+.2f}, {e:+.2f}, {dab:+.2f})  "
            f"{p.hematoxylin_gain:>8.2f}  {p.eosin_gain:>6.2f}  {p.blur_sigma_um:>7.2f}  "
            f"{p.noise_sigma:>5.1f}  {p.jpeg_quality:>4}"
        )
    ruifrok = _angle(RUIFROK_H, RUIFROK_E)
    lines.append(f"Ruifrok H-E angle (what stain-stats deconvolves with): {ruifrok:.1f}°")
    macenko = _angle(MACENKO_H, MACENKO_E)
    lines.append(
        f"Macenko reference pair: H-E angle {macenko:.1f}°, H {_angle(MACENKO_H, RUIFROK_H):.1f}° "
        f"from Ruifrok's H"
    )
    return lines


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class HospitalProfile:
    """The tumour-vs-normal profile of one hospital against the other hospitals'.

    Attributes:
        center: The hospital.
        tumour_patches: Patches >= 50 % tumour of its slides.
        normal_patches: Tumour-free patches of its tumour slides.
        difference: Mean normalised tumour patch minus mean normalised normal patch.
        others: The other hospitals' mean ``difference``.
        strength_ratio: ``|difference|`` over the other hospitals' mean ``|difference|``.
        correlation: Pearson correlation with the other hospitals' mean difference.
        flipped: Dimensions whose sign differs from the other hospitals' mean, where that
            mean is at least 0.1 in normalised units.
    """

    center: int
    tumour_patches: int
    normal_patches: int
    difference: list[float]
    others: list[float]
    strength_ratio: float
    correlation: float
    flipped: list[str]


def hospital_profiles(
    cohort: Path, features_dir: Path, slide_norm: str
) -> tuple[list[HospitalProfile], int]:
    """Every hospital's tumour-vs-normal profile (see :class:`HospitalProfile`).

    Returns:
        The profiles, and the number of slides read.
    """
    from wsi_ncmi.synth.separability import TUMOUR_MIN, load_cohort

    slides = load_cohort(cohort, features_dir, slide_norm=slide_norm)
    diffs: dict[int, NDArray[np.float64]] = {}
    counts: dict[int, tuple[int, int]] = {}
    for center in sorted({s.center for s in slides}):
        mine = [s for s in slides if s.center == center and s.label != "negative"]
        tumour = np.concatenate([s.features[s.tumour_fraction >= TUMOUR_MIN] for s in mine])
        normal = np.concatenate([s.features[s.tumour_fraction == 0] for s in mine])
        diffs[center] = tumour.mean(axis=0) - normal.mean(axis=0)
        counts[center] = (len(tumour), len(normal))
    names = FEATURE_NAMES if len(next(iter(diffs.values()))) == len(FEATURE_NAMES) else None
    out = []
    for center, diff in diffs.items():
        others = np.mean([d for c, d in diffs.items() if c != center], axis=0)
        strength = float(
            np.linalg.norm(diff)
            / np.mean([np.linalg.norm(d) for c, d in diffs.items() if c != center])
        )
        flips = np.flatnonzero((np.sign(diff) != np.sign(others)) & (np.abs(others) >= 0.1))
        out.append(
            HospitalProfile(
                center=center,
                tumour_patches=counts[center][0],
                normal_patches=counts[center][1],
                difference=[float(v) for v in diff],
                others=[float(v) for v in others],
                strength_ratio=strength,
                correlation=float(np.corrcoef(diff, others)[0, 1]),
                flipped=[names[i] if names else str(i) for i in flips],
            )
        )
    return out, len(slides)


def profile_lines(profiles: Sequence[HospitalProfile]) -> list[str]:
    """The profiles as text lines."""
    lines = [
        "center  tumour/normal patches  strength vs others  correlation  "
        "flipped dims: this hospital's difference (the others' mean)"
    ]
    for p in profiles:
        names = list(FEATURE_NAMES) if len(p.difference) == len(FEATURE_NAMES) else None
        flips = [
            f"{name} {p.difference[i]:+.2f} ({p.others[i]:+.2f})"
            for name in p.flipped
            for i in [names.index(name) if names else int(name)]
        ]
        lines.append(
            f"{p.center:>6}  {p.tumour_patches:>7} / {p.normal_patches:<11}  "
            f"{p.strength_ratio:>17.2f}x  {p.correlation:>11.2f}  "
            f"{len(p.flipped)}: {', '.join(flips)}"
        )
    return lines


# ------------------------------------------------------------------------------- mil


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
    from wsi_ncmi.bench.config import load_config
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
    from wsi_ncmi.bench.config import load_config
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


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("stains", help="the generator's stain geometry per center")
    p_prof = sub.add_parser("profile", help="patch-level tumour-vs-normal profile per hospital")
    p_prof.add_argument("--cohort", default=COHORT)
    p_prof.add_argument("--features_root", default=FEATURES_ROOT)
    p_prof.add_argument("--slide_norm", default="robust")
    p_prof.add_argument("--json", type=Path)
    p_mil = sub.add_parser("mil", help="CE + ABMIL leave-one-hospital-out, per hospital")
    p_mil.add_argument("--features_root", default=FEATURES_ROOT)
    p_mil.add_argument("--slide_norm", default="robust")
    p_mil.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p_mil.add_argument("--folds", type=int, nargs="+", default=[1], help="loho fold = center")
    p_mil.add_argument("--split", choices=("loho", "kfold"), default="loho")
    p_mil.add_argument(
        "--drop", nargs="*", default=[], choices=FEATURE_NAMES, help="dimensions set to 0"
    )
    p_mil.add_argument("--lr", type=float, default=1e-3)
    p_mil.add_argument("--weight_decay", type=float, default=1e-4)
    p_mil.add_argument("--out", type=Path, required=True)
    p_mil.add_argument(
        "--summarise_only", action="store_true", help="read the runs under --out, train nothing"
    )
    p_cf = sub.add_parser("counterfactual", help="regenerate one hospital with a swapped part")
    p_cf.add_argument("--swap", choices=sorted(SWAPS), required=True)
    p_cf.add_argument("--center", type=int, default=1)
    p_cf.add_argument("--donor", type=int, default=0)
    p_cf.add_argument("--out", type=Path)
    p_or = sub.add_parser("oracle", help="re-extract one hospital with its own stain vectors")
    p_or.add_argument("--center", type=int, default=1)
    p_or.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "stains":
        print("\n".join(stain_lines()))
    elif args.command == "profile":
        features = Path(args.features_root) / "features" / ENCODER
        profiles, n = hospital_profiles(Path(args.cohort), features, args.slide_norm)
        print(f"{n} slides, slide_norm {args.slide_norm}")
        print("\n".join(profile_lines(profiles)))
        if args.json:
            args.json.write_text(json.dumps([asdict(p) for p in profiles], indent=1) + "\n")
    elif args.command == "mil":
        if args.summarise_only:
            records = read_mil(args.out, args.seeds)
        else:
            records = run_mil(
                args.out,
                args.seeds,
                args.folds,
                features_root=args.features_root,
                slide_norm=args.slide_norm,
                lr=args.lr,
                weight_decay=args.weight_decay,
                split=args.split,
                drop=args.drop,
            )
        summary = mil_summary(records)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "hospital_shift.json").write_text(
            json.dumps({"args": vars(args) | {"out": str(args.out)}, "summary": summary}, indent=1)
            + "\n"
        )
        print("\n".join(mil_lines(summary)))
        print("\n".join(mil_lines(summary, "default")))
    elif args.command == "oracle":
        out = args.out or Path(WORK) / f"oracle_center{args.center}"
        print(f"feature root: {build_oracle(args.center, out)}")
    else:
        out = args.out or Path(WORK) / f"cf_{args.swap}_from{args.donor}"
        root = build_counterfactual(args.swap, args.center, args.donor, out)
        print(f"feature root: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
