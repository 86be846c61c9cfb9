"""Issue 24's findings, one harness row each: reproduced, and shown fixed.

Every check runs the real commands (``python -m wsi_ncmi.cli.*`` in child processes,
often from a directory other than the repository) on small inputs: generated slides
(:func:`faults.repair.small_slide`) or feature bags (:mod:`faults.cohorts`). A check
*recovers* when the command gives the fixed behaviour: the specific error and exit code,
no traceback, no file outside ``--out_dir``, no truncated file under a final name, nothing
left behind. The data and import findings are here; the process, disk and CLI findings
in :mod:`faults.findings_runs`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from faults.cohorts import BAG_ENCODER, bag_cohort, train_config
from faults.common import PYTHON, TILE_ARGS_1UM, Tally, lock_files, quiet_env, temp_files
from faults.kill import EXTRACT, TILE, extract_args
from faults.repair import small_slide

TRAIN = "wsi_ncmi.cli.train"
IMPORT = "wsi_ncmi.cli.import_features"


def run(
    module: str, args: list[str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args`` from ``cwd`` (the repository only on ``PYTHONPATH``)."""
    return subprocess.run(
        [PYTHON, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, env=quiet_env(None), check=False,
    )  # fmt: skip


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    """The run's error line (``wsi-…: error: …``), else the last stderr line."""
    lines = done.stderr.strip().splitlines()
    errors = [x for x in lines if x.startswith("wsi-") and (": error:" in x or ": failed:" in x)]
    return (errors or lines or [""])[-1]


def check(tally: Tally, name: str, ok: bool, got: str) -> None:
    """Count one trial of ``tally``: recovered if ``ok``, else a problem naming ``got``."""
    tally.injected += 1
    tally.recovered += int(ok)
    tally.notes.append(f"{name}: {got[:220]}")
    if not ok:
        tally.fail(f"{name}: {got[:600]}")


def clean_exit(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> bool:
    """Exit ``code``, no traceback, and every needle in stderr."""
    return (
        done.returncode == code
        and "Traceback" not in done.stderr
        and all(n in done.stderr for n in needles)
    )


def bag_config(root: Path, name: str, *, epochs: int = 2) -> Path:
    """A bag cohort under ``root`` and its ``wsi-train`` config (no ``out_dir``)."""
    if not (root / "manifest.csv").is_file():
        bag_cohort(root)
    return train_config(root, root.parent / f"{name}.yaml", epochs=epochs)


# -- 1: the features-vs-coords check and the working directory ----------------------------
def _two_scans(slides: Path) -> None:
    for center in range(3):
        for i in range(2):
            small_slide(slides / f"center_{center}" / f"s{center}_{i}.tif", seed=2 * center + i)


def cwd_independence(work: Path) -> Tally:
    """Tile, extract, train from one directory; train again from ``/``; then re-scan.

    The run from ``/`` must give the same predictions; after a slide is replaced and
    re-tiled, ``wsi-train`` from ``/`` must stop with ``SlideChangedError`` (before the
    fix: the check was skipped without a word and training ran, rc 0).
    """
    tally = Tally("#1 coords check from another cwd", command="cd / && wsi-train --config ...")
    root = work / "cwd"
    shutil.rmtree(root, ignore_errors=True)
    _two_scans(root / "slides")
    rows = ["slide_id,patient_id,center,label"]
    labels = ("negative", "macro")
    rows += [f"s{c}_{i},p{c}_{i},{c},{labels[i]}" for c in range(3) for i in range(2)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    tile = [str(Path("slides")), "--out_dir", "out", *TILE_ARGS_1UM]
    extract = extract_args(Path("out/coords"), Path("out"))
    steps = [run(TILE, tile, root), run(EXTRACT, extract, root)]
    if any(s.returncode != 0 for s in steps):
        tally.fail(f"tile/extract failed: {[last_line(s) for s in steps]}")
        return tally
    config = yaml.safe_load(train_config(root, root / "t.yaml", epochs=2).read_text())
    config["data"] |= {"features_root": str(root / "out"), "encoder": "random-cnn"}
    config["split"] = {"kind": "fixed", "train_centers": [0], "val_centers": [1],
                       "test_centers": [2]}  # fmt: skip
    (root / "t.yaml").write_text(yaml.safe_dump(config))
    here = run(TRAIN, ["--config", "t.yaml", "--out_dir", "train_here"], root)
    there = run(TRAIN, ["--config", str(root / "t.yaml"), "--out_dir", str(root / "train_root")],
                Path("/"))  # fmt: skip
    same = (
        (root / "train_here" / "predictions.csv").read_bytes()
        == (root / "train_root" / "predictions.csv").read_bytes()
        if here.returncode == there.returncode == 0
        else False
    )
    check(tally, "train from the outputs' directory and from /: same predictions.csv",
          same, f"exit {here.returncode}/{there.returncode}")  # fmt: skip
    if same:
        tally.outputs_compared += 1
        tally.bytes_compared += (root / "train_here" / "predictions.csv").stat().st_size
    features = sorted((root / "out" / "features" / "random-cnn").glob("*.h5"))
    before = [p.read_bytes() for p in features]
    again = run(EXTRACT, extract_args(root / "out" / "coords", root / "out"), Path("/"))
    same = again.returncode == 0 and [p.read_bytes() for p in features] == before
    check(tally, "wsi-extract rerun from /: every slide done, files unchanged", same,
          f"exit {again.returncode}, {len(features)} files unchanged: {same}")  # fmt: skip
    small_slide(root / "slides" / "center_2" / "s2_0.tif", seed=11, width=1792)  # re-scan
    retile = run(TILE, tile, root)
    after = run(TRAIN, ["--config", str(root / "t.yaml"), "--out_dir", str(root / "train_new")],
                Path("/"))  # fmt: skip
    ok = retile.returncode == 0 and clean_exit(after, 1, "SlideChangedError", "s2_0")
    check(tally, "re-scanned slide, wsi-train from /", ok, last_line(after))
    written = (root / "train_new" / "metrics.json").exists()
    check(tally, "metrics of the refused run", not written,
          "metrics.json written" if written else "none written")  # fmt: skip
    return tally


# -- 2: slide ids --------------------------------------------------------------------------
def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def slide_ids(work: Path) -> Tally:
    """A manifest id ``../../evil2`` and ``center_1/x``: rc 2, every bad row, 0 files out."""
    tally = Tally("#2 slide ids outside --out_dir", command="wsi-tile --manifest <ids ../..>")
    root = work / "ids"
    shutil.rmtree(root, ignore_errors=True)
    data = root / "data"
    small_slide(data / "evil2.tif", seed=1)
    small_slide(data / "slides" / "center_0" / "good.tif", seed=2)
    small_slide(data / "slides" / "center_0" / "center_1" / "x.tif", seed=3)
    manifest = root / "m.csv"
    manifest.write_text("slide_id,patient_id,center,label\ngood,p0,0,negative\n"
                        "../../evil2,p1,0,macro\ncenter_1/x,p2,0,macro\n")  # fmt: skip
    out = data / "out"
    before = _files(root)
    done = run(TILE, ["--manifest", str(manifest), "--slide_dir", str(data / "slides"),
                      "--out_dir", str(out), *TILE_ARGS_1UM], root)  # fmt: skip
    outside = {p for p in _files(root) - before if not p.is_relative_to(out)}
    ok = clean_exit(done, 2, "line 3", "line 4", "2 slide id(s)") and not outside
    check(tally, "manifest ids with '..' and '/'", ok, last_line(done))
    check(tally, "files written outside --out_dir", not outside, f"{sorted(map(str, outside))}")
    folder = root / "scan"
    small_slide(folder / "a\x07b.tif", seed=4)
    scanned = run(TILE, [str(folder), "--out_dir", str(root / "out2"), *TILE_ARGS_1UM], root)
    check(tally, "folder scan: a control character in a file name",
          clean_exit(scanned, 2, "control character"), last_line(scanned))  # fmt: skip
    return tally


# -- 6: a header that claims far more than the file holds ---------------------------------
def huge_header(work: Path) -> Tally:
    """A 1 KB tiled TIFF that claims 100,000 x 100,000 px: refused before any pixel read."""
    import tifffile

    tally = Tally("#6 TIFF claims 100k x 100k px", command="wsi-tile <1 KB TIFF>")
    root = work / "huge"
    shutil.rmtree(root, ignore_errors=True)
    (root / "slides").mkdir(parents=True)
    path = root / "slides" / "huge.tif"
    pixels = np.full((512, 512, 3), 200, np.uint8)
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="zlib",
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")  # fmt: skip
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(100_000)
        tif.pages[0].tags["ImageLength"].overwrite(100_000)
    small_slide(root / "slides" / "ok.tif", seed=0)
    try:
        done = run(TILE, [str(root / "slides"), "--out_dir", str(root / "out"), *TILE_ARGS_1UM],
                   root, timeout=120)  # fmt: skip
    except subprocess.TimeoutExpired:
        check(tally, "wsi-tile", False, "still running after 120 s")
        return tally
    report = sorted((root / "out" / "reports").glob("wsi-tile_*.json"))
    results = {r["item_id"]: r for r in json.loads(report[-1].read_text())["results"]}
    bad, good = results.get("huge", {}), results.get("ok", {})
    ok = done.returncode == 1 and bad.get("error_type") == "SlideOpenError"
    ok = ok and "lists only 4" in str(bad.get("reason")) and good.get("status") == "ok"
    check(tally, "refused at open, the batch goes on", ok, str(bad.get("reason")))
    tally.temp_left += len(temp_files(root / "out"))
    tally.locks_left += len(lock_files(root / "out"))
    return tally


# -- 7 and 11: imported features -----------------------------------------------------------
def trident_file(path: Path, rows: int, nan: bool = False) -> Path:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(rows)
    features = rng.normal(size=(rows, 16)).astype(np.float32)
    if nan:
        features[3, 0] = np.nan
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=features)
        ds = h5.create_dataset("coords", data=np.arange(2 * rows).reshape(rows, 2) * 256)
        ds.attrs.update({"patch_size": 256, "patch_size_level0": 512,
                         "target_magnification": 20, "level0_magnification": 40})  # fmt: skip
    return path


def _clam(path: Path, rows: int) -> Path:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("features", data=np.ones((rows, 16), np.float32))
        h5.create_dataset("coords", data=np.zeros((rows, 2), np.int64)).attrs.update(
            {"patch_level": 0, "patch_size": 256}
        )
    return path


def imported_features(work: Path) -> Tally:
    """NaN in a TRIDENT source, and a source replaced after the import."""
    tally = Tally("#7 imported features: fix", command="wsi-import-features; load_bag")
    root = work / "imports"
    shutil.rmtree(root, ignore_errors=True)
    src = root / "job" / "20x_256px_0px_overlap" / "features_uni"
    trident_file(src / "bad.h5", 167, nan=True)
    args = ["--format", "trident", "--out_dir", str(root / "out"), "--encoder", "uni"]
    done = run(IMPORT, [str(src), *args], root)
    ok = clean_exit(done, 1, "NonFiniteFeaturesError", "bad.h5", "wsi-import-features again")
    check(tally, "NaN in the source at registration", ok, last_line(done))
    (src / "bad.h5").unlink()
    trident_file(src / "s.h5", 167)
    done = run(IMPORT, [str(src), *args], root)
    trident_file(src / "s.h5", 50)  # the source replaced after the import: 50 rows, not 167
    probe = (
        "from wsi_ncmi.features.store import load_bag\n"
        f"load_bag({str(root / 'out' / 'features' / 'uni' / 's.h5')!r})\n"
    )
    loaded = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True,
                            env=quiet_env(None), check=False)  # fmt: skip
    text = last_line(loaded)
    ok = done.returncode == 0 and str((src / "s.h5").resolve()) in text
    ok = ok and "changed since the import" in text and "wsi-import-features again" in text
    check(tally, "source replaced after the import", ok and "wsi-extract on" not in text, text)
    return tally


def clam_strictness(work: Path) -> Tally:
    """CLAM without --mpp, CLAM files as --format trident, a TRIDENT job folder."""
    tally = Tally("#11 CLAM/TRIDENT import mistakes", command="wsi-import-features ...")
    root = work / "clam"
    shutil.rmtree(root, ignore_errors=True)
    h5_files = root / "clam" / "h5_files"
    _clam(h5_files / "s1.h5", 20)
    job = root / "trident_job"
    trident_file(job / "20x_256px_0px_overlap" / "features_uni" / "s2.h5", 20)
    out = ["--out_dir", str(root / "out"), "--encoder", "x"]
    cases = [
        ("clam without --mpp", [str(h5_files), "--format", "clam", *out], "give --mpp"),
        ("CLAM files as --format trident", [str(h5_files), "--format", "trident", *out],
         "use --format clam"),
        ("a TRIDENT job folder", [str(job), "--format", "trident", *out], "features_uni"),
    ]  # fmt: skip
    for name, args, needle in cases:
        done = run(IMPORT, args, root)
        check(tally, name, clean_exit(done, 2, needle), last_line(done))
    return tally


# -- 8 and 10: what the reports say --------------------------------------------------------
def _empty_bag(root: Path, center: int) -> str:
    """Replace the first bag of ``center`` by a 0-patch one (a slide tiled ``no_tissue``)."""
    from wsi_ncmi.batch import atomic_output
    from wsi_ncmi.features.store import FeatureFileWriter, feature_path
    from wsi_ncmi.manifest import read_manifest
    from wsi_ncmi.synth.bags import bag_attrs

    slide_id = next(r.slide_id for r in read_manifest(root / "manifest.csv") if r.center == center)
    with atomic_output(feature_path(root, BAG_ENCODER, slide_id)) as tmp:
        attrs = bag_attrs(slide_id, BAG_ENCODER, 16)
        FeatureFileWriter(tmp, np.zeros((0, 2), np.int64), 16, "float16", attrs).finish()
    return slide_id


def blank_slide(work: Path) -> Tally:
    """A blank (0-patch) test slide: excluded before the fold trains, counted, rc 0."""
    tally = Tally("#8 blank slide in the test set", command="wsi-train (one 0-patch bag)")
    root = work / "blank"
    shutil.rmtree(root, ignore_errors=True)
    config = bag_config(root / "bags", "blank")
    blank = _empty_bag(root / "bags", center=3)
    done = run(TRAIN, ["--config", str(config), "--out_dir", str(root / "run")], root)
    metrics: dict[str, Any] = {}
    if (root / "run" / "metrics.json").is_file():
        metrics = json.loads((root / "run" / "metrics.json").read_text())
    ok = done.returncode == 0 and metrics.get("no_tissue_excluded") == [blank]
    ok = ok and "1 blank slide(s)" in (root / "run" / "summary.txt").read_text()
    excluded = metrics.get("no_tissue_excluded")
    check(tally, "excluded and counted", ok, f"exit {done.returncode}, excluded {excluded}")
    kept = run(TRAIN, ["--config", str(config), "--out_dir", str(root / "old"),
                       "--data.include_empty"], root)  # fmt: skip
    check(tally, "--data.include_empty keeps the old error", clean_exit(kept, 1, blank),
          last_line(kept))  # fmt: skip
    return tally


def one_class_group(work: Path) -> Tally:
    """A test hospital whose slides are all one class: macro-F1 and kappa n/a, with why."""
    tally = Tally("#10 one-class test hospital", command="wsi-train (center 3 all negative)")
    root = work / "oneclass"
    shutil.rmtree(root, ignore_errors=True)
    config = bag_config(root / "bags", "oneclass")
    manifest = root / "bags" / "manifest.csv"
    lines = manifest.read_text().splitlines()
    fixed = [lines[0]] + [
        ",".join([*f.split(",")[:3], "negative"]) if f.split(",")[2] == "3" else f
        for f in lines[1:]
    ]
    manifest.write_text("\n".join(fixed) + "\n")
    done = run(TRAIN, ["--config", str(config), "--out_dir", str(root / "run")], root)
    if done.returncode != 0:
        check(tally, "wsi-train", False, last_line(done))
        return tally
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    group = metrics["per_center"]["3"]
    summary = (root / "run" / "summary.txt").read_text()
    line = next(x for x in summary.splitlines() if x.startswith("center3"))
    ok = group["macro_f1"] is None and group["kappa_quadratic"] is None
    ok = ok and "fewer than 2 true classes" in summary and "1.000" not in line.split()[2:3]
    check(tally, "n/a with the reason, never 1.000", ok, line)
    return tally


__all__ = [
    "blank_slide",
    "clam_strictness",
    "cwd_independence",
    "huge_header",
    "imported_features",
    "one_class_group",
    "slide_ids",
]
