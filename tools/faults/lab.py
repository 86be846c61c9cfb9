"""A lab's weekly events: a slide re-scanned under the same name, slides behind symlinks.

Re-scan: a cohort is tiled and extracted; one slide file is replaced by another scan
(same size in pixels but other content, or another size). ``wsi-extract`` must refuse
the old coords (``SlideChangedError`` naming both scans) and leave the old features as
they are; ``wsi-tile`` must redo that slide, saying ``redone: slide changed``; then
``wsi-extract`` redoes its features. Every coords and features dataset is compared
bitwise with a fresh run on the new files: an old grid or old features that survive
count as lost bytes (wrong outputs).

Symlinks: slides reached through links (``CASE_A.tif -> scanner_name.tif``) keep the
manifest's id (or the link's name without a manifest) in every output; a dangling link
fails with ``DanglingLinkError`` naming the link, and the batch goes on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from faults.badinputs import Outcome
from faults.common import TILE_ARGS_1UM, Tally, compare_h5, run_cli, temp_files
from faults.kill import EXTRACT, TILE, extract_args
from faults.repair import small_slide

TILE_ARGS = TILE_ARGS_1UM


def _results(out: Path, stage: str) -> dict[str, dict[str, Any]]:
    paths = sorted((out / "reports").glob(f"{stage}_*.json"))
    if not paths:
        return {}
    return {r["item_id"]: r for r in json.loads(paths[-1].read_text())["results"]}


def _pipeline(slides: Path, out: Path) -> tuple[int, int]:
    tiled = run_cli(TILE, [str(slides), "--out_dir", str(out), *TILE_ARGS]).returncode
    extracted = run_cli(EXTRACT, extract_args(out / "coords", out)).returncode
    return tiled, extracted


def _rescan_trial(work: Path, name: str, size: tuple[int, int], tally: Tally) -> None:
    slides, out = work / name / "slides", work / name / "out"
    for i in range(3):
        small_slide(slides / f"slide_{i}.tif", seed=i)
    if _pipeline(slides, out) != (0, 0):
        tally.fail(f"{name}: the first tile/extract run failed")
        return
    tally.injected += 1
    victim = slides / "slide_1.tif"
    victim.unlink()
    small_slide(victim, seed=7, width=size[0], height=size[1])  # the re-scan
    feature = out / "features" / "random-cnn" / "slide_1.h5"
    old_features = feature.read_bytes()
    refused = run_cli(EXTRACT, [*extract_args(out / "coords", out), "--skip_errors"])
    first = _results(out, "wsi-extract").get("slide_1", {})
    ok = (
        refused.returncode == 1
        and first.get("error_type") == "SlideChangedError"
        and str(victim) in str(first.get("reason"))
        and feature.read_bytes() == old_features
    )
    if not ok:
        tally.fail(f"{name}: wsi-extract on stale coords: exit {refused.returncode}, {first}")
    tiled, extracted = _pipeline(slides, out)
    redo = _results(out, "wsi-tile").get("slide_1", {})
    redone = str(redo.get("reason", "")).startswith("redone: slide changed")
    if not redone:
        tally.fail(f"{name}: wsi-tile did not say 'redone: slide changed': {redo}")
    tally.notes.append(f"{name}: wsi-extract refused with {first.get('error_type')}; "
                       f"wsi-tile said {str(redo.get('reason'))[:80]!r}")  # fmt: skip
    fresh = work / name / "fresh"
    if _pipeline(slides, fresh) != (0, 0):
        tally.fail(f"{name}: the fresh reference run failed")
        return
    lost = 0
    for sub in ("coords", "features/random-cnn"):
        for ref in sorted((fresh / sub).glob("*.h5")):
            compared, missing = compare_h5(out / sub / ref.name, ref)
            tally.outputs_compared += 1
            tally.bytes_compared += compared
            lost += missing
    tally.bytes_lost += lost
    tally.temp_left += len(temp_files(out))
    tally.recovered += int(ok and redone and (tiled, extracted) == (0, 0) and lost == 0)


def rescan_trials(work: Path) -> Tally:
    """Two re-scans (same pixel size, other size); see the module docstring."""
    tally = Tally("re-scanned slide (tile+extract)", command="replace a slide; rerun")
    work = work.absolute()
    _rescan_trial(work / "rescan", "same-size", (1536, 1024), tally)
    _rescan_trial(work / "rescan", "other-size", (1792, 1280), tally)
    return tally


def symlink_trials(work: Path) -> tuple[Tally, list[Outcome]]:
    """Manifest ids through links, link names without one, a dangling link."""
    from wsi_ncmi.manifest import ManifestRow, write_manifest

    tally = Tally("symlinked slides (tile+extract)", command="links in --slide_dir")
    root = work.absolute() / "symlinks"  # a relative link target would dangle
    shutil.rmtree(root, ignore_errors=True)
    (root / "links").mkdir(parents=True)
    for i, case in enumerate(("CASE_A", "CASE_B")):
        target = small_slide(root / "scanner" / f"patient_00{i}_node_0.tif", seed=i)
        (root / "links" / f"{case}.tif").symlink_to(target)
    rows = [ManifestRow(c, f"p{i}", 0, "negative") for i, c in enumerate(("CASE_A", "CASE_B"))]
    write_manifest(rows, root / "manifest.csv")
    outcomes = []
    out = root / "out_manifest"
    run_cli(TILE, ["--manifest", str(root / "manifest.csv"), "--slide_dir",
                   str(root / "links"), "--out_dir", str(out), *TILE_ARGS])  # fmt: skip
    run_cli(EXTRACT, extract_args(out / "coords", out))
    names = sorted(p.stem for p in (out / "features" / "random-cnn").glob("*.h5"))
    outcomes.append(Outcome("manifest ids through symlinks", "['CASE_A', 'CASE_B']",
                            str(names), "", names == ["CASE_A", "CASE_B"]))  # fmt: skip
    out = root / "out_links"
    run_cli(TILE, [str(root / "links"), "--out_dir", str(out), *TILE_ARGS])
    names = sorted(_results(out, "wsi-tile"))
    outcomes.append(Outcome("link names without a manifest", "['CASE_A', 'CASE_B']",
                            str(names), "", names == ["CASE_A", "CASE_B"]))  # fmt: skip
    (root / "links" / "dangling.svs").symlink_to(root / "gone" / "slide.svs")
    out = root / "out_dangling"
    done = run_cli(TILE, [str(root / "links"), "--out_dir", str(out), *TILE_ARGS])
    got = _results(out, "wsi-tile")
    bad = got.get("dangling", {})
    ok = (
        done.returncode == 1
        and bad.get("error_type") == "DanglingLinkError"
        and str(root / "links" / "dangling.svs") in str(bad.get("reason"))
        and {got.get(c, {}).get("status") for c in ("CASE_A", "CASE_B")} == {"ok"}
    )
    outcomes.append(Outcome("dangling link", "failed DanglingLinkError naming the link",
                            f"exit {done.returncode}: {bad.get('error_type')}",
                            str(bad.get("reason", ""))[:200], ok))  # fmt: skip
    tally.injected = len(outcomes)
    tally.recovered = sum(o.ok for o in outcomes)
    for outcome in outcomes:
        if not outcome.ok:
            tally.fail(f"{outcome.name}: {outcome.got}")
    return tally, outcomes
