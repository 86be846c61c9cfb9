"""Split logic on the real CAMELYON-17 manifest: no patient leak, loho coverage, strata."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.manifest import ManifestRow, read_manifest
from wsi_ncmi.train.splits import (
    PRESETS,
    load_splits,
    make_splits,
    patient_strata,
    save_splits,
)


@pytest.fixture(scope="module")
def rows(camelyon_manifest_path: Path) -> list[ManifestRow]:
    return read_manifest(camelyon_manifest_path)


def _patients(rows: list[ManifestRow], slides: tuple[str, ...]) -> set[str]:
    wanted = set(slides)
    return {r.patient_id for r in rows if r.slide_id in wanted}


def _check_partition(rows: list[ManifestRow], fold, expect_all: bool = True) -> None:
    parts = [set(fold.train), set(fold.val), set(fold.test)]
    assert all(parts), fold.name
    assert not parts[0] & parts[1]
    assert not parts[0] & parts[2]
    assert not parts[1] & parts[2]
    patients = [_patients(rows, p) for p in (fold.train, fold.val, fold.test)]
    assert not (patients[0] & patients[1]), "patient leak train/val"
    assert not (patients[0] & patients[2]), "patient leak train/test"
    assert not (patients[1] & patients[2]), "patient leak val/test"
    by_patient = Counter(r.patient_id for r in rows)
    for part, members in zip((fold.train, fold.val, fold.test), patients, strict=True):
        assert len(part) == sum(by_patient[p] for p in members)  # whole patients only
    if expect_all:
        assert set().union(*parts) == {r.slide_id for r in rows}


def test_nested_loho_validates_on_a_whole_training_hospital(rows) -> None:
    splits = make_splits(rows, "loho", seed=0, val_scheme="hospital")
    center_of = {r.slide_id: r.center for r in rows}
    val_centers = []
    for fold in splits.folds:
        _check_partition(rows, fold)
        (held,) = fold.test_centers
        (val_center,) = {center_of[s] for s in fold.val}
        assert val_center == (held + 1) % 5
        assert {center_of[s] for s in fold.val} | {center_of[s] for s in fold.train} == (
            set(range(5)) - {held}
        )
        assert val_center not in {center_of[s] for s in fold.train}
        val_centers.append(val_center)
    assert sorted(val_centers) == [0, 1, 2, 3, 4]  # every hospital validates once
    assert splits.params["val_scheme"] == "hospital"
    with pytest.raises(ConfigError, match="val_scheme 'hospital' applies to loho"):
        make_splits(rows, "kfold", val_scheme="hospital")
    with pytest.raises(ConfigError, match="val_scheme must be"):
        make_splits(rows, "loho", val_scheme=cast(Any, "patient"))  # not a scheme, on purpose


@pytest.mark.parametrize("seed", [0, 1])
def test_loho_holds_out_every_hospital_once_without_leaks(rows, seed: int) -> None:
    splits = make_splits(rows, "loho", seed=seed)
    assert len(splits.folds) == 5
    assert sorted(c for f in splits.folds for c in f.test_centers) == [0, 1, 2, 3, 4]
    center_of = {r.slide_id: r.center for r in rows}
    for fold in splits.folds:
        _check_partition(rows, fold)
        (held,) = fold.test_centers
        assert {center_of[s] for s in fold.test} == {held}
        assert held not in {center_of[s] for s in (*fold.train, *fold.val)}
    tested = [s for f in splits.folds for s in f.test]
    assert sorted(tested) == sorted(r.slide_id for r in rows)


def test_validation_part_is_stratified_by_pn_stage(rows) -> None:
    strata = patient_strata(rows)
    for fold in make_splits(rows, "loho", val_fraction=0.2).folds:
        val = Counter(strata[p] for p in _patients(rows, fold.val))
        pool = Counter(strata[p] for p in _patients(rows, fold.val + fold.train))
        for stage, n in pool.items():
            expected = max(1, round(0.2 * n)) if n >= 2 else 0
            assert val[stage] == expected, (fold.name, stage, val, pool)


def test_kfold_tests_every_patient_once_and_is_stratified(rows) -> None:
    splits = make_splits(rows, "kfold", num_folds=5, seed=3)
    strata = patient_strata(rows)
    tested = [p for f in splits.folds for p in _patients(rows, f.test)]
    assert sorted(tested) == sorted(strata)
    totals = Counter(strata.values())
    for fold in splits.folds:
        _check_partition(rows, fold)
        counts = Counter(strata[p] for p in _patients(rows, fold.test))
        for stage, n in totals.items():
            assert abs(counts[stage] - n / 5) <= 1, (fold.name, stage)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_fixed_presets(rows, preset: str) -> None:
    (fold,) = make_splits(rows, "fixed", preset=preset).folds
    train_c, val_c, test_c = PRESETS[preset]
    center_of = {r.slide_id: r.center for r in rows}
    assert {center_of[s] for s in fold.test} == set(test_c)
    assert {center_of[s] for s in fold.train} == set(train_c)
    assert {center_of[s] for s in fold.val} == set(val_c or train_c)
    _check_partition(rows, fold)


def test_wilds_preset_is_train_034_val_1_test_2() -> None:
    assert PRESETS["wilds"] == ((0, 3, 4), (1,), (2,))
    assert PRESETS["c17_train012_test34"] == ((0, 1, 2), (), (3, 4))


def test_splits_roundtrip_through_json(rows, tmp_path: Path) -> None:
    splits = make_splits(rows, "loho", seed=7)
    path = save_splits(splits, tmp_path / "splits.json")
    again = load_splits(path, rows)
    assert again == splits
    assert make_splits(rows, "loho", seed=7) == splits  # deterministic


def test_bad_split_configs_raise_config_errors(rows, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="preset must be one of"):
        make_splits(rows, "fixed", preset="nope")
    with pytest.raises(ConfigError, match="overlap"):
        make_splits(rows, "fixed", train_centers=[0, 1], test_centers=[1])
    with pytest.raises(ConfigError, match="not in the manifest"):
        make_splits(rows, "fixed", train_centers=[0], test_centers=[9])
    with pytest.raises(ConfigError, match=r"split\.kind must be one of"):
        make_splits(rows, cast(Any, "random"))  # not a split kind, on purpose
    save_splits(make_splits(rows, "loho"), tmp_path / "s.json")
    with pytest.raises(ConfigError, match="not in the manifest"):
        load_splits(tmp_path / "s.json", rows[:100])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="is not a"):
        load_splits(tmp_path / "bad.json")
