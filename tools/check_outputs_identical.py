"""Prove that a refactor did not change the pipeline's outputs.

Runs the same small, seeded end-to-end pipeline (``python -m wsi_ncmi.demo``: synthetic
cohort -> wsi-tile -> random-cnn features -> CE vs NCMI-MIL benchmark, sized down) with
two revisions' own code, and compares what they wrote.

Usage (from the repository root, with the project's interpreter):

    .venv/bin/python tools/check_outputs_identical.py                  # main vs working tree
    .venv/bin/python tools/check_outputs_identical.py --base 48f5328 --head HEAD
    .venv/bin/python tools/check_outputs_identical.py --base-dir ../a --head-dir ../b

A revision is checked out into a temporary ``git worktree``; without ``--head`` (or
``--head-dir``) the head side is this repository's working tree, uncommitted changes
included. Each run imports its own revision's code: the one interpreter runs with
``PYTHONPATH=<that source folder>``, which comes before the editable install on
``sys.path``; the script prints ``wsi_ncmi.__file__`` of each run and stops (exit 2) if it
is not inside that folder. Both runs write to the same absolute folder, one after the
other (the first is moved aside), so paths recorded in the outputs are equal.

Compared:

* ``results.csv`` of the benchmark, cell by cell, every column except ``seconds``: the
  cell's training wall time, which depends on the machine's load and nothing else.
  ``config_hash`` is compared: a refactor that changes the resolved config changes it, and
  finished cells of an older run would then be refused, a real difference.
* the synthetic cohort: the head revision's generator writes the cohort again, into its
  own folder, and every file (slides, masks, ground truth, manifest, config) must be
  bitwise equal to the base run's.
* every ``*.h5`` file (tiling coordinates and features), bitwise (sha256 of the file
  bytes). The files record each slide file's modification time (``slide_mtime``, the
  cache's staleness check), so the head run tiles *the base run's slide files*, copied
  with their modification times; it checks the head's tiling and extraction on the same
  input bytes. Files that still differ in bytes are compared by content too (the set of
  groups and datasets, each dataset's dtype, shape and bytes, every attribute), to say
  what differs.
* each cell's ``predictions.csv`` (test predictions and probabilities), every column.

Exit status: 0 identical, 1 a difference (listed), 2 a run failed or bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

#: results.csv columns that depend on the run, not on the code (see the docstring).
RUN_DEPENDENT_COLUMNS = frozenset({"seconds"})
#: HDF5 attributes that depend on the run, not on the code (see the docstring).
RUN_DEPENDENT_ATTRS = frozenset({"slide_mtime"})
#: The sized-down demo: 2 slides per hospital, one fixed split, one seed, 2 epochs.
DEMO_ARGS = (
    "--out_dir", "out",
    "--slides_per_center", "2", "--workers", "1", "--progress", "false",
    "--set", "sweep.seeds=[0]",
    "--set", "sweep.split={kind: fixed, preset: c17_train012_test34}",
    "--set", "train.trainer.max_epochs=2",
    "--set", "train.report.max_heatmaps=1",
    "--set", "stats.bootstrap=200",
    "--set", "jobs=1",
)  # fmt: skip


#: The same flags in the demo's spelling before issue 25 (a base commit may have it).
OLD_DEMO_SPELLING = {
    ("--out_dir",): "--out",
    ("--slides_per_center",): "--slides-per-center",
    ("--progress", "false"): "--no-progress",
}


def demo_args(help_text: str) -> list[str]:
    """:data:`DEMO_ARGS` in the spelling of the demo whose ``--help`` is ``help_text``."""
    args = list(DEMO_ARGS)
    if "--out_dir" in help_text:
        return args
    for new, old in OLD_DEMO_SPELLING.items():
        i = next(i for i in range(len(args)) if tuple(args[i : i + len(new)]) == new)
        args[i : i + len(new)] = [old]
    return args


class RunFailed(Exception):
    """A run could not be made (git, the import check or the demo failed): exit 2."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def compare_csv(a: Path, b: Path, ignore: Collection[str] = ()) -> list[str]:
    """Differences between two CSV files, row by row, ignoring the columns ``ignore``."""
    rows_a, rows_b = read_rows(a), read_rows(b)
    cols_a = set(rows_a[0]) if rows_a else set()
    cols_b = set(rows_b[0]) if rows_b else set()
    problems = []
    if cols_a != cols_b:
        problems.append(f"{a.name}: columns differ: only in base {sorted(cols_a - cols_b)}, "
                        f"only in head {sorted(cols_b - cols_a)}")  # fmt: skip
    if len(rows_a) != len(rows_b):
        problems.append(f"{a.name}: {len(rows_a)} rows in base, {len(rows_b)} in head")
    for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b, strict=False)):  # counts checked above
        for column in sorted((cols_a & cols_b) - set(ignore)):
            if row_a[column] != row_b[column]:
                problems.append(
                    f"{a.name} row {i + 1} column {column}: {row_a[column]!r} != {row_b[column]!r}"
                )
    return problems


def _same_value(x: Any, y: Any) -> bool:
    import numpy as np

    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        x, y = np.asarray(x), np.asarray(y)
        return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    return type(x) is type(y) and bool(x == y)


def _h5_items(path: Path) -> dict[str, tuple[str, dict[str, Any], Any]]:
    """``{name: (kind, attrs, (dtype, shape, bytes) or None)}`` of every object, root ``/``."""
    import h5py

    items: dict[str, tuple[str, dict[str, Any], Any]] = {}
    with h5py.File(path, "r") as h5:
        items["/"] = ("group", dict(h5.attrs), None)

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                raw = data.tobytes() if hasattr(data, "tobytes") else repr(data).encode()
                items[name] = ("dataset", dict(obj.attrs), (str(obj.dtype), obj.shape, raw))
            else:
                items[name] = ("group", dict(obj.attrs), None)

        h5.visititems(visit)
    return items


def compare_h5(a: Path, b: Path, ignore_attrs: Collection[str] = ()) -> tuple[bool, list[str]]:
    """``(bitwise equal, content differences)`` of two HDF5 files.

    Bitwise equal files have no differences. Otherwise every group and dataset is compared
    (kind, dtype, shape, bytes) with its attributes, except those named in ``ignore_attrs``.
    """
    if sha256(a) == sha256(b):
        return True, []
    items_a, items_b = _h5_items(a), _h5_items(b)
    problems = [f"{a.name}: {name} only in base" for name in sorted(set(items_a) - set(items_b))]
    problems += [f"{a.name}: {name} only in head" for name in sorted(set(items_b) - set(items_a))]
    for name in sorted(set(items_a) & set(items_b)):
        (kind_a, attrs_a, data_a), (kind_b, attrs_b, data_b) = items_a[name], items_b[name]
        if kind_a != kind_b:
            problems.append(f"{a.name}: {name} is a {kind_a} in base, a {kind_b} in head")
            continue
        if data_a is not None and data_b is not None:
            if data_a[:2] != data_b[:2]:
                problems.append(f"{a.name}: {name} dtype/shape {data_a[:2]} != {data_b[:2]}")
            elif data_a[2] != data_b[2]:
                problems.append(f"{a.name}: {name} values differ")
        for key in sorted((set(attrs_a) | set(attrs_b)) - set(ignore_attrs)):
            if key not in attrs_a or key not in attrs_b:
                side = "base" if key in attrs_a else "head"
                problems.append(f"{a.name}: {name} attribute {key} only in {side}")
            elif not _same_value(attrs_a[key], attrs_b[key]):
                problems.append(
                    f"{a.name}: {name} attribute {key}: {attrs_a[key]!r} != {attrs_b[key]!r}"
                )
    return False, problems


def compare_outputs(
    base: Path, head: Path, *, require_bytes: bool = True
) -> tuple[list[str], list[str]]:
    """``(notes, differences)`` between two demo output folders.

    With ``require_bytes`` an HDF5 file whose bytes differ is a difference even when its
    datasets and attributes (but ``slide_mtime``) are equal: both runs tiled the same slide
    files, so their bytes must agree.
    """
    notes: list[str] = []
    problems: list[str] = []
    bench = Path("bench") / "synthetic_demo"
    for rel in [bench / "results.csv", *_relative(base, head, "cells/*/predictions.csv", bench)]:
        if not (base / rel).is_file() or not (head / rel).is_file():
            problems.append(f"{rel}: missing in {'base' if not (base / rel).is_file() else 'head'}")
            continue
        ignore = RUN_DEPENDENT_COLUMNS if rel.name == "results.csv" else ()
        found = compare_csv(base / rel, head / rel, ignore)
        problems += [f"{rel.parent}/{p}" for p in found]
        if not found:
            notes.append(f"same: {rel} ({len(read_rows(base / rel))} rows)")
    h5_a = {p.relative_to(base) for p in base.rglob("*.h5")}
    h5_b = {p.relative_to(head) for p in head.rglob("*.h5")}
    problems += [f"{rel}: only in base" for rel in sorted(h5_a - h5_b)]
    problems += [f"{rel}: only in head" for rel in sorted(h5_b - h5_a)]
    bitwise = content = 0
    for rel in sorted(h5_a & h5_b):
        same_bytes, found = compare_h5(base / rel, head / rel, RUN_DEPENDENT_ATTRS)
        problems += [f"{rel.parent}/{p}" for p in found]
        bitwise += same_bytes
        content += not same_bytes and not found
        if require_bytes and not same_bytes and not found:
            problems.append(f"{rel}: other bytes, same datasets and attributes but slide_mtime")
    notes.append(
        f"HDF5: {len(h5_a & h5_b)} files in both; {bitwise} bitwise identical, {content} with "
        f"the same datasets and attributes except {sorted(RUN_DEPENDENT_ATTRS)}"
    )
    if not h5_a and not h5_b:
        problems.append("no HDF5 file in either output")
    return notes, problems


def _relative(base: Path, head: Path, pattern: str, under: Path) -> list[Path]:
    found = {p.relative_to(base) for p in (base / under).glob(pattern)}
    found |= {p.relative_to(head) for p in (head / under).glob(pattern)}
    return sorted(found)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RunFailed(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def run_demo(source: Path, run_dir: Path, python: str, extra: Sequence[str]) -> None:
    """The sized-down demo with ``source``'s code, writing ``run_dir/out``."""
    env = os.environ | {"PYTHONPATH": str(source), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    where = subprocess.run(
        [python, "-c", "import wsi_ncmi; print(wsi_ncmi.__file__)"],
        cwd=run_dir, env=env, capture_output=True, text=True,
    )  # fmt: skip
    imported = Path(where.stdout.strip() or "?").resolve()
    print(f"  wsi_ncmi imported from {imported}")
    if where.returncode != 0 or not imported.is_relative_to(source.resolve()):
        raise RunFailed(f"the run would not import {source}'s code: {where.stderr.strip()}")
    demo = [python, "-m", "wsi_ncmi.demo"]
    helped = subprocess.run([*demo, "--help"], cwd=run_dir, env=env, capture_output=True, text=True)
    command = [*demo, *demo_args(helped.stdout), *extra]
    done = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise RunFailed(f"the demo failed with {source}'s code (exit {done.returncode})")
    print("  " + done.stdout.strip().splitlines()[-1])


def regenerate_cohort(source: Path, out: Path, python: str) -> None:
    """The demo's cohort (2 slides per hospital, seed 0) with ``source``'s generator."""
    env = os.environ | {"PYTHONPATH": str(source), "OMP_NUM_THREADS": "1"}
    code = (
        "import sys; from wsi_ncmi.manifest import read_manifest; "
        "from wsi_ncmi.synth import generate_cohort; "
        "generate_cohort(read_manifest(sys.argv[1]), sys.argv[2], preset='demo', subset=2, "
        "workers=1, progress=False)"
    )
    manifest = source / "data_manifests" / "camelyon17.csv"
    done = subprocess.run(
        [python, "-c", code, str(manifest), str(out)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise RunFailed(f"the generator failed with {source}'s code")


def compare_trees(a: Path, b: Path) -> list[str]:
    """Files missing on one side or with other bytes, between two folders."""
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"{n}: only in base" for n in sorted(names_a - names_b)]
    problems += [f"{n}: only in head" for n in sorted(names_b - names_a)]
    problems += [
        f"{n}: other bytes" for n in sorted(names_a & names_b) if sha256(a / n) != sha256(b / n)
    ]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run both revisions, compare, print the verdict; 0 identical, 1 different."""
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=str(here), help="git repository (default: this one)")
    p.add_argument("--base", default="main", help="base revision (default: main)")
    p.add_argument("--head", help="head revision (default: the repository's working tree)")
    p.add_argument("--base-dir", help="use this source folder instead of --base")
    p.add_argument("--head-dir", help="use this source folder instead of --head")
    p.add_argument("--work", help="work folder (default: a temporary one, removed after)")
    p.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra demo config override for both runs")  # fmt: skip
    args = p.parse_args(argv)
    repo = Path(args.repo).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="outputs-identical-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    extra = [x for item in args.set for x in ("--set", item)]
    worktrees: list[Path] = []
    try:
        sources = {}
        for side, rev, folder in (
            ("base", args.base, args.base_dir),
            ("head", args.head, args.head_dir),
        ):
            if folder:
                sources[side] = (Path(folder).resolve(), folder)
            elif rev:
                tree = work / f"src-{side}"
                _git(repo, "worktree", "add", "--detach", str(tree), rev)
                worktrees.append(tree)
                sources[side] = (tree, f"{rev} ({_git(tree, 'rev-parse', '--short', 'HEAD')})")
            else:
                sources[side] = (repo, f"working tree of {repo}")
        run_dir = work / "run"
        for side, (source, label) in sources.items():
            print(f"{side}: {label}")
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir()
            if side == "head":  # the base run's slides, with their modification times
                shutil.copytree(work / "base" / "out" / "cohort", run_dir / "out" / "cohort")
            run_demo(source, run_dir, args.python, extra)
            shutil.rmtree(work / side, ignore_errors=True)
            run_dir.rename(work / side)
        head_source = sources["head"][0]
        regenerated = work / "head-cohort"
        shutil.rmtree(regenerated, ignore_errors=True)
        regenerate_cohort(head_source, regenerated, args.python)
        cohort_problems = compare_trees(work / "base" / "out" / "cohort", regenerated)
        notes, problems = compare_outputs(work / "base" / "out", work / "head" / "out")
        count = sum(1 for p in regenerated.rglob("*") if p.is_file())
        notes.insert(0, f"cohort: {count} files regenerated by the head's generator")
        problems = [f"cohort {x}" for x in cohort_problems] + problems
    except RunFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        for tree in worktrees:
            _git(repo, "worktree", "remove", "--force", str(tree))
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(notes))
    if problems:
        print(f"\nDIFFERENT: {len(problems)} differences")
        print("\n".join(f"  {x}" for x in problems[:50]))
        if len(problems) > 50:
            print(f"  ... and {len(problems) - 50} more")
        return 1
    print("\nIDENTICAL: the cohort's files, results.csv (all columns but seconds), every "
          "predictions.csv and every HDF5 file")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
