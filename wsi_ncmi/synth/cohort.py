"""Generate a synthetic cohort from a manifest: slide selection, workers, resumability.

Slides go to ``<out>/center_K/<slide_id>.tif`` (the CAMELYON layout) with their ground truth
beside them (see :mod:`wsi_ncmi.synth.generate`). ``<out>/manifest.csv`` lists the selected
slides (same columns as the input manifest) and ``<out>/synth_config.json`` records the
preset and seed; a second run into the same folder with another preset or seed is refused,
and slides already finished are skipped, so an interrupted run can simply be restarted.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from wsi_ncmi._version import __version__
from wsi_ncmi.batch.atomic import atomic_output, remove_stale_temp_files, write_text_atomic
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.manifest import LABELS, ManifestRow, write_manifest
from wsi_ncmi.synth.generate import generate_slide, slide_paths
from wsi_ncmi.synth.presets import Preset, get_preset

CONFIG_NAME = "synth_config.json"
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class CohortResult:
    """What a cohort run did.

    Attributes:
        out_dir: Cohort folder.
        generated: Slides written by this run.
        skipped: Slides that were already complete.
    """

    out_dir: Path
    generated: tuple[Path, ...]
    skipped: tuple[Path, ...]


def select_slides(
    rows: Sequence[ManifestRow],
    subset: int | None,
    centers: Sequence[int] | None = None,
) -> list[ManifestRow]:
    """Pick up to ``subset`` slides per center, stratified by label.

    Each center's ``subset`` slots are shared among its labels in proportion to their
    counts (largest remainders), with at least one slot per present label while slots
    last; within a label the first slides in manifest order are taken. The result keeps
    manifest order. Deterministic and independent of the seed.

    Args:
        rows: Manifest rows.
        subset: Slides per center, or None for all of them.
        centers: Centers to keep, or None for all.

    Returns:
        The selected rows.

    Raises:
        ConfigError: If ``subset`` is not positive.
    """
    if subset is not None and subset < 1:
        msg = f"subset={subset!r} must be a positive number of slides per center (or None)"
        raise ConfigError(msg)
    wanted = set(centers) if centers is not None else None
    kept = [r for r in rows if wanted is None or r.center in wanted]
    if subset is None:
        return kept
    chosen: set[str] = set()
    for center in sorted({r.center for r in kept}):
        by_label = {
            lab: [r for r in kept if r.center == center and r.label == lab] for lab in LABELS
        }
        total = sum(len(v) for v in by_label.values())
        slots = min(subset, total)
        present = [lab for lab in LABELS if by_label[lab]]
        quota = {lab: min(1, len(by_label[lab])) for lab in present[:slots]}
        remaining = slots - sum(quota.values())
        shares = {lab: remaining * len(by_label[lab]) / total for lab in present}
        for lab in present:
            quota[lab] = min(len(by_label[lab]), quota.get(lab, 0) + int(shares[lab]))
        by_remainder = sorted(present, key=lambda lab: -(shares[lab] % 1))
        while sum(quota.values()) < slots:
            for lab in by_remainder:
                if sum(quota.values()) < slots and quota[lab] < len(by_label[lab]):
                    quota[lab] += 1
        for lab, count in quota.items():
            chosen.update(r.slide_id for r in by_label[lab][:count])
    return [r for r in kept if r.slide_id in chosen]


def _is_done(out_dir: Path, row: ManifestRow) -> bool:
    return all(path.exists() for path in slide_paths(out_dir, row))


def _check_config(out_dir: Path, preset: Preset, seed: int) -> None:
    record = {"generator_version": GENERATOR_VERSION, "preset": preset.name, "seed": seed}
    path = out_dir / CONFIG_NAME
    if path.exists():
        previous = json.loads(path.read_text())
        mismatch = {k: previous.get(k) for k, v in record.items() if previous.get(k) != v}
        if mismatch:
            msg = (
                f"{out_dir} holds a cohort made with {mismatch}, not {record}; "
                "choose another --out_dir folder or delete this one"
            )
            raise ConfigError(msg)
        return
    record["wsi_ncmi_version"] = __version__
    write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _job(args: tuple[ManifestRow, Preset, int, Path]) -> Path:
    row, preset, seed, out_dir = args
    return generate_slide(row, preset, seed, out_dir)


def generate_cohort(
    rows: Sequence[ManifestRow],
    out_dir: str | Path,
    *,
    preset: str = "demo",
    seed: int = 0,
    subset: int | None = None,
    use_preset_subset: bool = True,
    centers: Sequence[int] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> CohortResult:
    """Generate (or complete) a synthetic cohort.

    Args:
        rows: Manifest rows driving the run (names, centers, labels).
        out_dir: Cohort folder (created if needed).
        preset: ``"demo"`` or ``"full"``.
        seed: Global seed; equal seeds give byte-identical files.
        subset: Slides per center; None means the preset default when
            ``use_preset_subset`` is true, else every slide.
        use_preset_subset: Whether ``subset=None`` falls back to the preset default.
        centers: Centers to generate, or None for all.
        workers: Processes to use (1 runs in this process).
        progress: Show a tqdm progress bar.

    Returns:
        What was generated and skipped.

    Raises:
        ConfigError: On a bad preset, subset or worker count, or a folder made with
            another preset or seed.
    """
    chosen_preset = get_preset(preset)
    if workers < 1:
        msg = f"workers={workers!r} must be at least 1"
        raise ConfigError(msg)
    if subset is None and use_preset_subset:
        subset = chosen_preset.default_subset
    selected = select_slides(rows, subset, centers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out)  # what killed runs left half-written
    _check_config(out, chosen_preset, seed)
    with atomic_output(out / "manifest.csv") as tmp:
        write_manifest(selected, tmp)

    skipped = tuple(out / r.relative_path for r in selected if _is_done(out, r))
    todo = [(r, chosen_preset, seed, out) for r in selected if not _is_done(out, r)]
    bar = tqdm(total=len(todo), desc=f"synth {preset}", unit="slide", disable=not progress)
    generated: list[Path] = []
    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                generated.append(_job(job))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(todo)), initializer=_worker_init) as pool:
                for path in pool.imap_unordered(_job, todo, chunksize=1):
                    generated.append(path)
                    bar.update()
    finally:
        bar.close()
    return CohortResult(out, tuple(sorted(generated)), skipped)
