"""Patient-grouped, stratified splits of a slide manifest: ``loho``, ``fixed`` and ``kfold``.

Every split is a list of :class:`Fold` objects, each naming the slides of its ``train``,
``val`` and ``test`` parts. A patient's slides always land in one part (CAMELYON-17 has
five lymph-node slides per patient), so no patient leaks across parts.

* ``loho`` (leave one hospital out): fold ``k`` tests on center ``k`` and trains on the
  others, with a stratified, patient-grouped validation part taken from the training
  centers (``val_fraction`` of each stratum). With ``val_scheme="hospital"`` (nested
  leave-one-hospital-out) the validation part is instead a whole training hospital, the
  next center after ``k`` (cyclically), so that checkpoint selection and the decision rule
  see a hospital shift, as the test does.
* ``fixed``: named center lists (:data:`PRESETS`: ``"c17_train012_test34"`` is train 0–2 /
  test 3–4; ``"wilds"`` is the WILDS split, train 0, 3, 4 / val 1 / test 2). Without
  validation centers the validation part is carved out of the training centers.
* ``kfold``: ``k`` folds of patients, stratified; fold ``i`` tests on part ``i``.
* ``none``: one fold, ``all``, for the final model: every labelled slide trains, except a
  stratified, patient-grouped validation part (``val_fraction``) that selects the
  checkpoint and fits the decision rule; there is no test part.

Patients are stratified by their ``pN_stage`` column when the manifest has one, else by
their largest slide label. Splits are written to JSON (:func:`save_splits`) and reloaded
with :func:`load_splits`, which checks them against the manifest.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.manifest import LABELS, ManifestRow
from wsi_ncmi.train.config import SPLIT_PRESETS, SplitConfig, SplitKind, ValScheme

SPLITS_SCHEMA = "wsi-ncmi/splits/1"

#: Named center lists of the ``fixed`` split (:data:`wsi_ncmi.train.config.SPLIT_PRESETS`).
PRESETS = SPLIT_PRESETS


@dataclass(frozen=True)
class Fold:
    """One train/val/test partition, by slide id.

    Attributes:
        name: e.g. ``"loho_center2"``, ``"fixed_wilds"``, ``"kfold_3"``.
        train: Training slide ids.
        val: Validation slide ids.
        test: Test slide ids.
        test_centers: Centers of the test part.
    """

    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    test_centers: tuple[int, ...] = ()

    def part_of(self) -> dict[str, str]:
        """Map each slide id to ``"train"``, ``"val"`` or ``"test"``."""
        return {slide: part for part in ("train", "val", "test") for slide in getattr(self, part)}


@dataclass
class SplitSet:
    """A split specification and its folds (what the JSON file holds).

    Attributes:
        kind: ``"loho"``, ``"fixed"`` or ``"kfold"``.
        seed: Seed of the patient shuffles.
        params: The other arguments of :func:`make_splits`.
        folds: The folds.
    """

    kind: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    folds: list[Fold] = field(default_factory=list)


def patient_strata(rows: Sequence[ManifestRow]) -> dict[str, str]:
    """Stratum of each patient: its ``pN_stage`` if present, else its largest slide label.

    Args:
        rows: Manifest rows.

    Returns:
        ``{patient_id: stratum}``.
    """
    strata: dict[str, str] = {}
    for row in rows:
        stage = row.get("pN_stage")
        if stage:
            strata[row.patient_id] = stage
        else:
            current = strata.get(row.patient_id)
            if current is None or LABELS.index(row.label) > LABELS.index(current):
                strata[row.patient_id] = row.label
    return strata


def _patients_by_stratum(
    patients: Sequence[str], strata: dict[str, str], rng: np.random.Generator
) -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for patient in sorted(patients):
        groups[strata[patient]].append(patient)
    out = []
    for key in sorted(groups):
        members = groups[key]
        out.append([members[i] for i in rng.permutation(len(members))])
    return out


def stratified_patient_split(
    patients: Sequence[str], strata: dict[str, str], fraction: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Split patients into ``(rest, held)`` with ``fraction`` of each stratum held out.

    Each stratum with at least two patients contributes ``max(1, round(fraction · n))``
    patients (never all of them). The held part is never empty when there are at least
    two patients.

    Args:
        patients: Patient ids.
        strata: ``{patient_id: stratum}``.
        fraction: In ``(0, 1)``.
        rng: Random generator.

    Returns:
        ``(rest, held)`` patient lists, sorted.
    """
    rest: list[str] = []
    held: list[str] = []
    for members in _patients_by_stratum(patients, strata, rng):
        n_held = (
            0 if len(members) < 2 else min(len(members) - 1, max(1, round(fraction * len(members))))
        )
        held += members[:n_held]
        rest += members[n_held:]
    if not held and len(rest) >= 2:
        held.append(rest.pop(int(rng.integers(len(rest)))))
    return sorted(rest), sorted(held)


def _slides(rows: Sequence[ManifestRow], patients: set[str]) -> tuple[str, ...]:
    return tuple(row.slide_id for row in rows if row.patient_id in patients)


def _center_patients(rows: Sequence[ManifestRow], centers: Sequence[int]) -> list[str]:
    wanted = set(centers)
    return sorted({row.patient_id for row in rows if row.center in wanted})


def _fold(
    rows: Sequence[ManifestRow],
    name: str,
    train: Sequence[str],
    val: Sequence[str],
    test: Sequence[str],
) -> Fold:
    test_set = set(test)
    centers = sorted({row.center for row in rows if row.patient_id in test_set})
    return Fold(
        name,
        _slides(rows, set(train)),
        _slides(rows, set(val)),
        _slides(rows, test_set),
        tuple(centers),
    )


def splits_for(rows: Sequence[ManifestRow], split: SplitConfig, seed: int) -> SplitSet:
    """:func:`make_splits` of a ``split`` section's fields (``ConfigError`` if they misfit)."""
    return make_splits(
        rows,
        split.kind,
        seed=seed,
        val_fraction=split.val_fraction,
        preset=split.preset,
        train_centers=split.train_centers,
        val_centers=split.val_centers,
        test_centers=split.test_centers,
        num_folds=split.num_folds,
        val_scheme=split.val_scheme,
    )


def make_splits(
    rows: Sequence[ManifestRow],
    kind: SplitKind,
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    preset: str | None = None,
    train_centers: Sequence[int] | None = None,
    val_centers: Sequence[int] | None = None,
    test_centers: Sequence[int] | None = None,
    num_folds: int = 5,
    val_scheme: ValScheme = "patients",
) -> SplitSet:
    """Build the folds of a split.

    Args:
        rows: Manifest rows.
        kind: ``"loho"``, ``"fixed"``, ``"kfold"`` or ``"none"`` (no test part).
        seed: Seed of the patient shuffles.
        val_fraction: Share of each stratum's training patients used for validation.
        preset: ``fixed`` only: a :data:`PRESETS` name (or give the center lists).
        train_centers: ``fixed`` only: training centers.
        val_centers: ``fixed`` only: validation centers (empty: carve from training).
        test_centers: ``fixed`` only: test centers.
        num_folds: ``kfold`` only: number of folds ``≥ 2``.
        val_scheme: ``loho`` only: ``"patients"`` (validation patients carved from every
            training center) or ``"hospital"`` (the whole next training center).

    Returns:
        The split set.

    Raises:
        ConfigError: Unknown kind or preset, overlapping or empty center lists, or too
            few patients.
    """
    SplitConfig(  # the checks that need no manifest
        kind=kind,
        preset=preset,
        train_centers=None if train_centers is None else list(train_centers),
        val_centers=None if val_centers is None else list(val_centers),
        test_centers=None if test_centers is None else list(test_centers),
        num_folds=num_folds,
        val_fraction=val_fraction,
        val_scheme=val_scheme,
    )
    rng = np.random.default_rng(seed)
    strata = patient_strata(rows)
    centers = sorted({row.center for row in rows})
    params: dict[str, Any] = {"val_fraction": val_fraction}
    folds: list[Fold] = []
    if kind == "loho":
        minimum = 3 if val_scheme == "hospital" else 2
        if len(centers) < minimum:
            raise ConfigError(
                f"loho with val_scheme {val_scheme!r} needs at least {minimum} centers, the "
                f"manifest has {centers}"
            )
        if val_scheme == "hospital":
            params["val_scheme"] = val_scheme
        for i, center in enumerate(centers):
            if val_scheme == "hospital":
                val_center = centers[(i + 1) % len(centers)]
                train = _center_patients(
                    rows, [c for c in centers if c not in (center, val_center)]
                )
                val = _center_patients(rows, [val_center])
            else:
                pool = _center_patients(rows, [c for c in centers if c != center])
                train, val = stratified_patient_split(pool, strata, val_fraction, rng)
            folds.append(
                _fold(rows, f"loho_center{center}", train, val, _center_patients(rows, [center]))
            )
    elif kind == "fixed":
        if preset is not None:
            train_centers, val_centers, test_centers = PRESETS[preset]
        lists = [list(train_centers or []), list(val_centers or []), list(test_centers or [])]
        flat = [c for group in lists for c in group]
        unknown = sorted(set(flat) - set(centers))
        if unknown:
            raise ConfigError(f"centers {unknown} are not in the manifest (it has {centers})")
        params |= {"preset": preset, "centers": lists}
        pool = _center_patients(rows, lists[0])
        if lists[1]:
            train, val = pool, _center_patients(rows, lists[1])
        else:
            train, val = stratified_patient_split(pool, strata, val_fraction, rng)
        name = f"fixed_{preset}" if preset else "fixed"
        folds.append(_fold(rows, name, train, val, _center_patients(rows, lists[2])))
    elif kind == "kfold":
        patients = sorted(strata)
        if num_folds > len(patients):
            raise ConfigError(
                f"num_folds must be in [2, {len(patients)}] (patients), got {num_folds!r}"
            )
        params["num_folds"] = num_folds
        parts: list[list[str]] = [[] for _ in range(num_folds)]
        offset = 0
        for members in _patients_by_stratum(patients, strata, rng):
            for i, patient in enumerate(members):
                parts[(offset + i) % num_folds].append(patient)
            offset += len(members)
        for k in range(num_folds):
            pool = [p for j, part in enumerate(parts) if j != k for p in part]
            train, val = stratified_patient_split(pool, strata, val_fraction, rng)
            folds.append(_fold(rows, f"kfold_{k}", train, val, parts[k]))
    else:  # "none" (SplitConfig refused any other kind)
        train, val = stratified_patient_split(sorted(strata), strata, val_fraction, rng)
        if not train or not val:
            raise ConfigError(
                f"split kind 'none' needs at least 2 patients to carve a validation part, "
                f"the manifest has {len(strata)}"
            )
        folds.append(_fold(rows, "all", train, val, []))
    return SplitSet(kind, seed, params, folds)


def save_splits(splits: SplitSet, path: str | Path) -> Path:
    """Write a split set as JSON (atomically).

    Args:
        splits: The split set.
        path: Output file.

    Returns:
        The path written.
    """
    from wsi_ncmi.batch import write_text_atomic

    record = {"schema": SPLITS_SCHEMA, **asdict(splits)}
    path = Path(path)
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def load_splits(path: str | Path, rows: Sequence[ManifestRow] | None = None) -> SplitSet:
    """Read a split set written by :func:`save_splits`.

    Args:
        path: JSON file.
        rows: If given, every slide id must be in this manifest.

    Returns:
        The split set.

    Raises:
        ConfigError: Unreadable file, wrong schema, slide ids not in the manifest, or a
            patient whose slides fall in more than one part of a fold (a leak).
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read splits file {str(path)!r}: {err}") from err
    if not isinstance(record, dict) or record.get("schema") != SPLITS_SCHEMA:
        raise ConfigError(f"{str(path)!r} is not a {SPLITS_SCHEMA} file")
    folds = [
        Fold(
            f["name"],
            tuple(f["train"]),
            tuple(f["val"]),
            tuple(f["test"]),
            tuple(f.get("test_centers", ())),
        )
        for f in record["folds"]
    ]
    if rows is not None:
        known = {row.slide_id for row in rows}
        unknown = sorted({s for f in folds for s in (*f.train, *f.val, *f.test)} - known)
        if unknown:
            raise ConfigError(
                f"{str(path)!r} names {len(unknown)} slides not in the manifest, e.g. {unknown[:3]}"
            )
        patient_of = {row.slide_id: row.patient_id for row in rows}
        for fold in folds:
            parts: dict[str, set[str]] = {}
            for part in ("train", "val", "test"):
                for slide_id in getattr(fold, part):
                    parts.setdefault(patient_of[slide_id], set()).add(part)
            leaks = sorted(p for p, seen in parts.items() if len(seen) > 1)
            if leaks:
                raise ConfigError(
                    f"{str(path)!r}, fold {fold.name!r}: patient {leaks[0]} has slides in "
                    f"{' and '.join(sorted(parts[leaks[0]]))} ({len(leaks)} patients leak in "
                    "all); every patient must sit in one part. Regenerate the splits "
                    "(omit --split.file) or fix the file."
                )
    return SplitSet(record["kind"], int(record["seed"]), dict(record.get("params", {})), folds)
