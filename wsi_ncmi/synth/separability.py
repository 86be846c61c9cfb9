"""Can the slide labels of a synthetic cohort be read from its patch features?

A diagnostic for the demo (``python -m wsi_ncmi.synth.separability``). With the ground
truth that the generator writes beside every slide (``<slide>.gt.json``: tumour polygons
in level-0 pixels) and the patch features of one encoder, it reports:

1. per slide label, how many patches are mostly tumour (≥ 50 % of the patch inside a
   tumour polygon) and how many touch tumour at all: whether the label is visible at the
   tiling's resolution and patch size;
2. a linear tumour-vs-normal patch probe (logistic regression on standardised features,
   patches with 0 % or ≥ 50 % tumour): AUROC on a random half of the patches, and
   leave-one-hospital-out, i.e. trained on four hospitals and scored on the fifth;
3. the slide-level consequence of (2): per held-out hospital, the number of patches of
   each slide that the probe calls tumour (probability > 0.5), and the AUROC of that count
   for negative vs macro slides. A probe that ranks patches well inside a hospital but
   whose threshold does not transfer calls whole slides tumour (or none): the hospital
   shift that attention-MIL must also overcome.

The probe uses the patch ground truth, which MIL training never sees: it bounds what the
features allow, it is not a slide classifier.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.manifest import LABELS
from wsi_ncmi.synth.geometry import points_in_polygon

TUMOUR_MIN = 0.5
_GRID = 8


@dataclass(frozen=True)
class SlidePatches:
    """The patches of one slide: features and tumour fraction (from the ground truth)."""

    slide_id: str
    label: str
    center: int
    features: NDArray[np.float64]
    tumour_fraction: NDArray[np.float64]


def tumour_fraction(
    coords: NDArray[np.int64], size_level0: float, polygons: Sequence[NDArray[np.float64]]
) -> NDArray[np.float64]:
    """Fraction of each patch inside the polygons, on an 8 × 8 grid of sample points.

    Args:
        coords: ``(N, 2)`` level-0 top-left corners.
        size_level0: Patch side in level-0 pixels.
        polygons: Tumour polygons in level-0 pixels.

    Returns:
        ``(N,)`` fractions in ``[0, 1]``.
    """
    if not polygons or len(coords) == 0:
        return np.zeros(len(coords))
    steps = (np.arange(_GRID) + 0.5) / _GRID * size_level0
    offsets = np.stack(np.meshgrid(steps, steps), axis=-1).reshape(-1, 2)
    points = (coords[:, None, :] + offsets[None]).reshape(-1, 2).astype(np.float64)
    inside = np.zeros(len(points), dtype=bool)
    for poly in polygons:
        inside |= points_in_polygon(points, poly)
    return np.asarray(inside.reshape(len(coords), -1).mean(axis=1), dtype=np.float64)


def load_cohort(
    cohort: Path, features_dir: Path, *, slide_norm: str = "none"
) -> list[SlidePatches]:
    """Read the features and ground truth of every slide that has both.

    Args:
        cohort: Cohort folder (with ``*.gt.json``).
        features_dir: ``features/<encoder>/`` folder.
        slide_norm: Per-slide normalisation of the features, as ``wsi-train``'s
            ``data.slide_norm`` applies it (:mod:`wsi_ncmi.train.slide_norm`), so the probe
            sees what the MIL model sees.
    """
    import torch

    from wsi_ncmi.features.store import read_features
    from wsi_ncmi.train.slide_norm import apply_slide_norm

    slides = []
    for gt_path in sorted(cohort.rglob("*.gt.json")):
        gt = json.loads(gt_path.read_text())
        feat_path = features_dir / f"{gt['slide_id']}.h5"
        if not feat_path.exists():
            continue
        bag = read_features(feat_path)
        # Patch side in level-0 pixels: patch_size_px at target_mpp, over the slide's µm/px.
        size0 = float(bag.attrs["patch_size_px"]) * float(bag.attrs["target_mpp"]) / gt["mpp"][0]
        polygons = [np.asarray(p, dtype=np.float64) for p in gt["tumour_polygons"]]
        valid = np.asarray(bag.valid, dtype=bool)
        fraction = tumour_fraction(bag.coords[valid], size0, polygons)
        features = apply_slide_norm(torch.from_numpy(np.asarray(bag.features[valid])), slide_norm)
        slides.append(
            SlidePatches(
                gt["slide_id"],
                gt["label"],
                int(gt["center"]),
                features.numpy().astype(np.float64),
                fraction,
            )
        )
    return slides


def _probe(x: NDArray[np.float64], y: NDArray[np.bool_]) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced")
    )
    return model.fit(x, y)


@dataclass(frozen=True)
class Separability:
    """The numbers of the three diagnostics (see the module docstring).

    Attributes:
        n_slides: Slides read.
        n_patches: Patches over all slides.
        feature_dim: Feature dimension.
        mostly_tumour: Per label, patches ``>= TUMOUR_MIN`` tumour of each slide.
        touching_tumour: Per label, patches touching tumour of each slide.
        top_fraction: Per label, the largest tumour fraction of any patch.
        tumour_patches: Patches ``>= TUMOUR_MIN`` tumour (the probe's positives).
        normal_patches: Tumour-free patches the probes saw (their negatives).
        random_half_auroc: Probe AUROC, trained on a random half of the patches.
        class_auroc: Per label, the random-half probe's AUROC of that label's tumour
            patches against every tumour-free patch of the held-out half.
        held_out_auroc: Per held-out center with tumour patches, the probe's AUROC.
        tumour_calls: Per slide, patches the held-out-hospital probe calls tumour.
        calls_by_label: Per label, ``tumour_calls`` of its slides.
        negative_vs_macro_auroc: AUROC of ``tumour_calls`` for negative vs macro slides
            (``None`` without both labels).
    """

    n_slides: int
    n_patches: int
    feature_dim: int
    mostly_tumour: dict[str, list[int]]
    touching_tumour: dict[str, list[int]]
    top_fraction: dict[str, float]
    tumour_patches: int
    normal_patches: int
    random_half_auroc: float
    class_auroc: dict[str, float]
    held_out_auroc: dict[int, float]
    tumour_calls: dict[str, int]
    calls_by_label: dict[str, list[int]]
    negative_vs_macro_auroc: float | None


def _normal_subsample(
    slides: Sequence[SlidePatches], per_slide: int | None, seed: int = 0
) -> list[SlidePatches]:
    """Keep every tumour-touching patch and at most ``per_slide`` tumour-free ones."""
    if per_slide is None:
        return list(slides)
    rng = np.random.default_rng(seed)
    out = []
    for s in slides:
        normal = np.flatnonzero(s.tumour_fraction == 0)
        drop = normal[rng.permutation(len(normal))[per_slide:]]
        keep = np.setdiff1d(np.arange(len(s.features)), drop)
        out.append(
            SlidePatches(s.slide_id, s.label, s.center, s.features[keep], s.tumour_fraction[keep])
        )
    return out


def diagnose(
    slides: Sequence[SlidePatches], *, normal_per_slide: int | None = None
) -> Separability:
    """Run the three diagnostics (see the module docstring).

    Args:
        slides: Every slide's patches (features and tumour fraction).
        normal_per_slide: Fit and score the patch probes on every tumour-touching patch
            and at most this many tumour-free patches per slide (``None``: all patches;
            a 500-slide cohort needs a bound). Per-slide counts always use every patch.

    Returns:
        The numbers.
    """
    from sklearn.metrics import roc_auc_score

    mostly: dict[str, list[int]] = {}
    touch: dict[str, list[int]] = {}
    top: dict[str, float] = {}
    for label in LABELS:
        group = [s for s in slides if s.label == label]
        if group:
            mostly[label] = [int((s.tumour_fraction >= TUMOUR_MIN).sum()) for s in group]
            touch[label] = [int((s.tumour_fraction > 0).sum()) for s in group]
            top[label] = max(float(s.tumour_fraction.max(initial=0.0)) for s in group)
    probed = _normal_subsample(slides, normal_per_slide)
    x = np.concatenate([s.features for s in probed])
    frac = np.concatenate([s.tumour_fraction for s in probed])
    center = np.concatenate([np.full(len(s.features), s.center) for s in probed])
    label_of = np.concatenate([np.full(len(s.features), s.label) for s in probed])
    clear = (frac == 0) | (frac >= TUMOUR_MIN)
    y = frac >= TUMOUR_MIN
    rng = np.random.default_rng(0)
    half = rng.random(len(x)) < 0.5
    model = _probe(x[clear & half], y[clear & half])
    held = clear & ~half
    scores = model.decision_function(x[held])  # type: ignore[attr-defined]
    random_half = float(roc_auc_score(y[held], scores))
    class_auroc: dict[str, float] = {}
    for label in mostly:
        mine = ~y[held] | (label_of[held] == label)
        if y[held][mine].any() and (~y[held][mine]).any():
            class_auroc[label] = float(roc_auc_score(y[held][mine], scores[mine]))
    held_out: dict[int, float] = {}
    calls: dict[str, int] = {}
    for hospital in sorted(set(center.tolist())):
        train, test = center != hospital, center == hospital
        model = _probe(x[train & clear], y[train & clear])
        if y[test & clear].any():
            auc = roc_auc_score(y[test & clear], model.decision_function(x[test & clear]))  # type: ignore[attr-defined]
            held_out[int(hospital)] = float(auc)
        for s in slides:
            if s.center == hospital:
                proba = model.predict_proba(s.features)[:, 1]  # type: ignore[attr-defined]
                calls[s.slide_id] = int((proba > 0.5).sum())
    by_label = {
        label: [calls[s.slide_id] for s in slides if s.label == label]
        for label in LABELS
        if any(s.label == label for s in slides)
    }
    neg_mac = [s for s in slides if s.label in ("negative", "macro")]
    slide_auc = None
    if {s.label for s in neg_mac} == {"negative", "macro"}:
        slide_auc = float(
            roc_auc_score(
                [s.label == "macro" for s in neg_mac], [calls[s.slide_id] for s in neg_mac]
            )
        )
    return Separability(
        n_slides=len(slides),
        n_patches=int(sum(len(s.features) for s in slides)),
        feature_dim=int(slides[0].features.shape[1]),
        mostly_tumour=mostly,
        touching_tumour=touch,
        top_fraction=top,
        tumour_patches=int(y[clear].sum()),
        normal_patches=int((~y[clear]).sum()),
        random_half_auroc=random_half,
        class_auroc=class_auroc,
        held_out_auroc=held_out,
        tumour_calls=calls,
        calls_by_label=by_label,
        negative_vs_macro_auroc=slide_auc,
    )


def report_lines(result: Separability) -> list[str]:
    """The diagnostics as text lines."""
    lines = [
        f"{result.n_slides} slides, {result.n_patches} patches, feature dim {result.feature_dim}",
        f"label: slides; patches >= {TUMOUR_MIN:.0%} tumour per slide (mean, median, "
        "min-max); patches touching tumour (mean); largest tumour fraction of any patch; "
        "patch-probe AUROC of the label's tumour patches vs tumour-free patches",
    ]
    for label, mostly in result.mostly_tumour.items():
        touch = result.touching_tumour[label]
        auc = result.class_auroc.get(label)
        lines.append(
            f"  {label}: {len(mostly)}; {np.mean(mostly):.1f}, {np.median(mostly):.0f} "
            f"({min(mostly)}-{max(mostly)}); {np.mean(touch):.1f}; "
            f"{result.top_fraction[label]:.2f}; " + ("-" if auc is None else f"{auc:.3f}")
        )
    lines.append(
        f"patch probe, random half: AUROC {result.random_half_auroc:.3f} "
        f"({result.tumour_patches} tumour / {result.normal_patches} normal patches)"
    )
    loco = [f"center {c} {auc:.3f}" for c, auc in result.held_out_auroc.items()]
    lines.append("patch probe, leave-one-hospital-out AUROC: " + ", ".join(loco))
    lines.append(
        "patches called tumour per slide by the held-out-hospital probe (median, min-max):"
    )
    for label, counts in result.calls_by_label.items():
        lines.append(f"  {label}: {np.median(counts):.0f} ({min(counts)}-{max(counts)})")
    if result.negative_vs_macro_auroc is not None:
        lines.append(
            f"negative vs macro slides, AUROC of that count: {result.negative_vs_macro_auroc:.3f}"
        )
    return lines


def report(slides: Sequence[SlidePatches], *, normal_per_slide: int | None = None) -> list[str]:
    """The three diagnostics as text lines (see the module docstring)."""
    return report_lines(diagnose(slides, normal_per_slide=normal_per_slide))


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the report for one cohort and one encoder's features."""
    p = argparse.ArgumentParser(
        prog="python -m wsi_ncmi.synth.separability",
        description="Tumour-vs-normal separability of patch features on a synthetic cohort.",
    )
    p.add_argument("--cohort", required=True, help="cohort folder (with *.gt.json)")
    p.add_argument("--features", required=True, help="features/<encoder>/ folder of .h5 files")
    p.add_argument(
        "--normal-per-slide",
        type=int,
        metavar="N",
        help="fit and score the probes on every tumour patch and at most N tumour-free "
        "patches per slide (default: all; e.g. 64 on the 500-slide bench cohort)",
    )
    p.add_argument(
        "--slide_norm",
        choices=("none", "robust"),
        default="none",
        help="per-slide feature normalisation, as wsi-train's data.slide_norm (default: none)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    slides = load_cohort(Path(args.cohort), Path(args.features), slide_norm=args.slide_norm)
    if not slides:
        print("no slide has both ground truth and features")
        return 1
    result = diagnose(slides, normal_per_slide=args.normal_per_slide)
    print("\n".join(report_lines(result)))
    if args.json is not None:
        import dataclasses

        from wsi_ncmi.batch import write_text_atomic

        write_text_atomic(args.json, json.dumps(dataclasses.asdict(result), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
