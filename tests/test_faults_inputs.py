"""Issue 8's bad inputs, one test each: the specific status or error class, a message that
names the file and the fix, and the batch going on with the good input.

The inputs come from the fault harness (``tools/faults``), which runs the same checks in
``tools/faults/run_all``. Slide-level cases go through one real ``wsi-tile`` batch; the
cache cases through one real ``wsi-extract`` batch; the training cases through the
``wsi-train`` / ``wsi-bench`` / ``wsi-tile`` entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import _faults  # noqa: F401  (tools/ on sys.path)
import numpy as np
import pytest
from faults.badinputs import SLIDE_CASES, SlideCase, slide_folder
from faults.caches import mismatched_features, old_schema_coords, overflow_encoder
from faults.cohorts import bag_cohort, train_config
from faults.training import MANIFEST_CASES, bad_manifest, cli, leaky_splits, poison_bag

from wsi_ncmi.errors import CacheSchemaError, ManifestError
from wsi_ncmi.features import load_bag, read_features
from wsi_ncmi.features.config import ExtractConfig
from wsi_ncmi.features.run import run_extraction
from wsi_ncmi.tiling import TilingConfig, make_tasks, run_tiling
from wsi_ncmi.tiling.run import discover_slides

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One wsi-tile batch over every bad slide plus a good one."""
    root = tmp_path_factory.mktemp("bad")
    folder = slide_folder(root / "slides")
    out = root / "out"
    report = run_tiling(
        make_tasks(discover_slides([folder])), TilingConfig(out_dir=str(out)), workers=1,
        progress=False,
    )  # fmt: skip
    return out, {r.item_id: r for r in report.results}


@pytest.mark.parametrize("case", SLIDE_CASES, ids=[c.name for c in SLIDE_CASES])
def test_bad_slide_gets_its_status_and_the_batch_goes_on(
    tiled: tuple[Path, dict[str, Any]], case: SlideCase
) -> None:
    out, results = tiled
    result = results[Path(case.file).stem]
    assert (result.status, result.error_type) == (case.status, case.error_type), result.reason
    for fragment in case.fragments:  # names the file and the fix
        assert fragment in result.reason
    if case.status == "ok":
        assert result.count >= 1
        assert (out / "coords" / f"{Path(case.file).stem}.h5").is_file()
    assert results["good"].status == "ok"  # the batch went on


def _extract(coords: Path, out: Path, **kw: Any) -> dict[str, Any]:
    config = ExtractConfig(
        coords_dir=coords, out_dir=out, random_init=True, device="cpu", batch_size=16,
        workers=0, progress=False, skip_errors=True, **kw,
    )  # fmt: skip
    return {r.item_id: r for r in run_extraction(config).results}


@pytest.fixture(scope="module")
def extracted(
    tiled: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, dict[str, Any]]:
    """One wsi-extract batch over the tiled slides plus an old-schema coords file."""
    out, _ = tiled
    root = tmp_path_factory.mktemp("extract")
    coords = root / "coords"
    coords.mkdir()
    for path in (out / "coords").glob("*.h5"):
        (coords / path.name).write_bytes(path.read_bytes())
    old_schema_coords(coords / "good.h5", coords / "old.h5")
    # 1 bad tile of 8 patches: tolerated under a 0.5 limit (the strict case is tested below)
    return coords, root / "out", _extract(coords, root / "out", max_bad_fraction=0.5)


def test_coords_of_another_schema_version(extracted: tuple[Path, Path, dict[str, Any]]) -> None:
    coords, _, results = extracted
    old = results["old"]
    assert (old.status, old.error_type) == ("failed", "CacheSchemaError")
    assert str(coords / "old.h5") in old.reason
    assert "schema version 0" in old.reason
    assert "re-run wsi-tile into a fresh --out_dir" in old.reason
    assert {results[k].status for k in ("good", "one", "node 3 ñ 標本")} == {"ok"}


def test_unreadable_tile_is_an_invalid_row_then_a_corrupt_tile_error(
    extracted: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    coords, out, results = extracted
    assert results["badtile"].status == "ok"
    assert results["badtile"].extra["bad_tiles"] >= 1
    bag = read_features(out / "features" / "random-cnn" / "badtile.h5")
    assert (~bag.valid).sum() == results["badtile"].extra["bad_tiles"]
    assert not bag.features[~bag.valid].any()  # invalid rows are zeros, never garbage
    strict = _extract(coords, tmp_path / "strict", max_bad_fraction=0.0)
    assert (strict["badtile"].status, strict["badtile"].error_type) == (
        "failed",
        "CorruptTileError",
    )
    assert "failed to decode" in strict["badtile"].reason
    assert "re-export the slide" in strict["badtile"].reason
    assert strict["good"].status == "ok"


def test_features_whose_rows_do_not_match_the_coords(
    extracted: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, out, _ = extracted
    bad = mismatched_features(out / "features" / "random-cnn" / "good.h5", tmp_path / "m.h5")
    with pytest.raises(CacheSchemaError) as info:
        load_bag(bad)
    assert str(bad) in str(info.value)
    assert "different lengths" in str(info.value)
    assert "re-run wsi-extract" in str(info.value)


def test_features_made_from_other_coords_are_redone(
    extracted: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    import h5py

    coords, out, _ = extracted
    local = tmp_path / "coords"
    local.mkdir()
    (local / "good.h5").write_bytes((coords / "good.h5").read_bytes())
    feat = tmp_path / "out" / "features" / "random-cnn"
    feat.mkdir(parents=True)
    (feat / "good.h5").write_bytes((out / "features" / "random-cnn" / "good.h5").read_bytes())
    assert _extract(local, tmp_path / "out", max_bad_fraction=0.5)["good"].status == "skipped"
    with h5py.File(local / "good.h5", "a") as h5:  # re-tiled with other parameters
        h5.attrs["params_hash"] = "0123456789abcdef"
    assert _extract(local, tmp_path / "out", max_bad_fraction=0.5)["good"].status == "ok"


def test_nan_or_inf_features_from_the_encoder(
    extracted: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    coords, _, _ = extracted
    config = ExtractConfig(
        coords_dir=coords, out_dir=tmp_path, device="cpu", batch_size=16, workers=0,
        progress=False, skip_errors=True,
    )  # fmt: skip
    report = run_extraction(config, encoder=overflow_encoder())
    result = {r.item_id: r for r in report.results}["good"]
    assert (result.status, result.error_type) == ("failed", "NonFiniteFeaturesError")
    assert "overflow-cnn/good.h5" in result.reason
    assert "non-finite features (NaN/inf)" in result.reason
    assert "--dtype float32" in result.reason
    assert not list(tmp_path.rglob(".*.tmp-*"))


# -- training-side inputs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("bags")
    bag_cohort(root)
    config = train_config(root, root / "train.yaml", epochs=1)
    return root, ["--config", str(config), "--out_dir", str(root / "run")]


@pytest.mark.parametrize("name", list(MANIFEST_CASES))
def test_bad_manifest(bags: tuple[Path, list[str]], tmp_path: Path, name: str) -> None:
    from wsi_ncmi.cli.train import main
    from wsi_ncmi.manifest import read_manifest

    root, base = bags
    row, needle = MANIFEST_CASES[name]
    path = bad_manifest(root / "manifest.csv", tmp_path / "m.csv", row)
    with pytest.raises(ManifestError, match=needle.replace("(", r"\(")):
        read_manifest(path)
    code, err = cli(main, [*base, "--data.manifest", str(path)])
    assert code == 2
    for fragment in (str(path), ", line ", needle, "Fix:"):
        assert fragment in err


def test_splits_with_a_patient_in_two_parts(bags: tuple[Path, list[str]], tmp_path: Path) -> None:
    from wsi_ncmi.cli.train import main

    root, base = bags
    splits = leaky_splits(root, tmp_path / "splits.json")
    code, err = cli(main, [*base, "--split.file", str(splits)])
    assert code == 2
    assert str(splits) in err
    assert "patient_000" in err


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_nan_or_inf_in_features_stops_training(tmp_path: Path, value: float) -> None:
    from wsi_ncmi.cli.train import main

    bag_cohort(tmp_path)
    config = train_config(tmp_path, tmp_path / "train.yaml", epochs=1)
    bag = poison_bag(tmp_path, "patient_000_node_0", value)
    code, err = cli(main, ["--config", str(config), "--out_dir", str(tmp_path / "run")])
    assert code == 1
    for fragment in (str(bag), "NaN/inf features in 1 of 36 rows", "re-run wsi-extract"):
        assert fragment in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--trainer.max_epochs", "many"], 'key "trainer.max_epochs"'),
        (["--optim.lr", "-1"], "lr must be > 0, got -1.0"),
        (["--data.max_patches_train", "0"], "max_patches_train must be >= 1"),
        (["--split.val_fraction", "1.5"], "val_fraction must be in (0, 1)"),
    ],
    ids=["train-wrong-type", "train-lr", "train-max-patches", "train-val-fraction"],
)
def test_train_config_wrong_type_or_out_of_range(
    bags: tuple[Path, list[str]], args: list[str], needle: str
) -> None:
    from wsi_ncmi.cli.train import main

    _, base = bags
    code, err = cli(main, [*base, *args])
    assert code == 2
    assert needle in err


def test_tile_and_extract_config_out_of_range(tmp_path: Path) -> None:
    from wsi_ncmi.cli.extract import main as extract
    from wsi_ncmi.cli.tile import main as tile

    args = [str(tmp_path), "--out_dir", str(tmp_path / "o"), "--grid.min_tissue", "2"]
    code, err = cli(tile, args)
    assert code == 2
    assert "min_tissue must be a fraction in [0, 1], got 2.0" in err
    args = ["--out_dir", str(tmp_path), "--max_bad_fraction", "3", "--device", "cpu"]
    code, err = cli(extract, args)
    assert code == 2
    assert "--max_bad_fraction must be in [0, 1], got 3.0" in err


@pytest.mark.parametrize(
    ("override", "needle"),
    [("train.trainer.max_epochs=many", "max_epochs"), ("train.optim.lr=-1", "lr")],
    ids=["wrong-type", "out-of-range"],
)
def test_bench_config_wrong_type_or_out_of_range(
    bags: tuple[Path, list[str]], tmp_path: Path, override: str, needle: str
) -> None:
    from faults.cohorts import BAG_ENCODER

    from wsi_ncmi.cli.bench import main

    root, _ = bags
    args = ["--data.manifest", str(root / "manifest.csv"), "--data.features_root", str(root),
            "--data.encoder", BAG_ENCODER, "--output_root", str(tmp_path),
            "--set", override]  # fmt: skip
    code, err = cli(main, args)
    assert code == 2
    assert needle in err
