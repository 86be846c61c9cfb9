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
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hospital_mil import (
    build_counterfactual,
    build_oracle,
    mil_lines,
    mil_summary,
    read_mil,
    run_mil,
)
from hospital_stains import (
    COHORT,
    ENCODER,
    FEATURE_NAMES,
    FEATURES_ROOT,
    SWAPS,
    WORK,
    hospital_profiles,
    profile_lines,
    stain_lines,
)


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
