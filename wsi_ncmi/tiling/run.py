"""Batch tiling: find slides, split them into shards, tile them over a process pool.

Concurrency model: each slide is guarded by ``<out>/locks/<slide_id>.lock`` (see
:class:`~wsi_ncmi.batch.ItemLock`), so any number of ``wsi-tile`` processes, on one
machine or many sharing the output folder, can work on the same cohort; each slide is
tiled once. While holding a slide's lock, a job first deletes that slide's orphan temp
files (left by a killed writer), then skips the slide if a complete output with the
same parameter hash exists.
"""

from __future__ import annotations

import functools
import glob
import os
from collections.abc import Sequence
from pathlib import Path

from wsi_ncmi.batch.atomic import TEMP_MARKER, temp_prefix
from wsi_ncmi.batch.locks import lock_dir, sweep_legacy_locks
from wsi_ncmi.batch.report import ItemResult, RunReport, unique_report_path
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.tiling.job import (
    SlideTask,
    TilingConfig,
    is_tiled,
    output_paths,
    slide_params_hash,
    tile_slide,
)

#: File suffixes picked up when a folder or glob is given.
SLIDE_SUFFIXES: tuple[str, ...] = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".bif",
    ".vms",
    ".vmu",
    ".svslide",
)


def default_workers() -> int:
    """Cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def discover_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files, folders (searched recursively) and glob patterns into slide files.

    Paths are made absolute but never resolved: a symbolic link stays the link, so the
    slide is named after the link (the name the user gave), not after its target.

    Raises:
        ConfigError: An input matches nothing.
    """
    found: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            found.extend(p for p in sorted(path.rglob("*")) if p.suffix.lower() in SLIDE_SUFFIXES)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            if not matches:
                raise ConfigError(f"SLIDES pattern {str(raw)!r} matches no file")
            found.extend(m for m in matches if m.is_file())
        else:
            # Kept: the job reports it as a failed slide instead of stopping the batch.
            found.append(path)
    return list(dict.fromkeys(absolute(p) for p in found))


def absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalised, without following symbolic links."""
    return Path(os.path.abspath(path))


def manifest_slides(manifest: str | Path, slides_dir: str | Path | None) -> list[Path]:
    """Slide files of a manifest CSV (see :func:`wsi_ncmi.manifest.read_manifest`).

    Each ``slide_id`` is looked up as ``<slides_dir>/center_K/<slide_id>.tif`` (the
    CAMELYON layout), then as ``<slides_dir>/**/<slide_id>.<any slide suffix>``.
    A slide that is not found is still listed, and fails in the batch with its own status.

    Args:
        manifest: The CSV.
        slides_dir: Root of the slide files; default: the manifest's folder.
    """
    from wsi_ncmi.manifest import read_manifest

    root = Path(slides_dir) if slides_dir is not None else Path(manifest).parent
    rows = read_manifest(manifest)
    index: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in SLIDE_SUFFIXES:
            index.setdefault(p.stem, p)
    paths = []
    for row in rows:
        direct = root / row.relative_path
        paths.append(direct if direct.is_file() else index.get(row.slide_id, direct))
    return paths


def manifest_tasks(manifest: str | Path, slides_dir: str | Path | None) -> list[SlideTask]:
    """One task per manifest row, named by the row's ``slide_id`` (whatever the file is).

    The files are found as in :func:`manifest_slides`; a row whose file is a symbolic
    link keeps the manifest's id, never the link target's name.
    """
    from wsi_ncmi.manifest import read_manifest

    rows = read_manifest(manifest)
    paths = manifest_slides(manifest, slides_dir)
    return [SlideTask(row.slide_id, str(absolute(p))) for row, p in zip(rows, paths, strict=True)]


def make_tasks(paths: Sequence[Path], named: Sequence[SlideTask] = ()) -> list[SlideTask]:
    """One task per slide: ``named`` tasks (from a manifest), then ``paths`` (id = stem).

    A path's id is the stem of the path as given (a symbolic link's own name). A file
    that is both in ``named`` and in ``paths`` is tiled once, under its ``named`` id.

    Raises:
        ConfigError: Two slides share an id (their outputs would collide), or an id breaks
            the rule of :mod:`wsi_ncmi.ids` (every offending slide is listed).
    """
    tasks: dict[str, SlideTask] = {}
    for task in named:
        tasks.setdefault(str(absolute(task.path)), task)
    for p in paths:
        tasks.setdefault(str(absolute(p)), SlideTask(Path(p).stem, str(p)))
    from wsi_ncmi.ids import check_slide_ids

    check_slide_ids(((t.path, t.slide_id) for t in tasks.values()), "the slide files")
    by_id: dict[str, list[str]] = {}
    for task in tasks.values():
        by_id.setdefault(task.slide_id, []).append(task.path)
    clashes = {k: v for k, v in by_id.items() if len(v) > 1}
    if clashes:
        first = next(iter(clashes.items()))
        raise ConfigError(
            f"{len(clashes)} slide ids are used by several files, e.g. {first[0]!r}: "
            f"{first[1]}; rename them or tile them into separate --out_dir"
        )
    return list(tasks.values())


def _clean_temp_files(task: SlideTask, config: TilingConfig) -> None:
    """Delete this slide's orphan temp outputs (the caller holds the slide's lock)."""
    for final in output_paths(config.out_dir, task.slide_id).all():
        if final.parent.is_dir():
            for tmp in final.parent.glob(f"{glob.escape(temp_prefix(final))}{TEMP_MARKER}*"):
                tmp.unlink(missing_ok=True)


def _check_done(task: SlideTask, config: TilingConfig) -> bool:
    import errno

    from wsi_ncmi.batch.atomic import NAME_MAX, output_write_error

    for final in output_paths(config.out_dir, task.slide_id).all():
        if len(final.name.encode("utf-8")) > NAME_MAX:  # before any stat() of it fails
            raise output_write_error(final, errno.ENAMETOOLONG)
    _clean_temp_files(task, config)
    return is_tiled(task, config)


def _job(task: SlideTask, config: TilingConfig) -> ItemResult:
    return tile_slide(task, config)


def default_report_path(out_dir: str | Path) -> Path:
    """``<out>/reports/wsi-tile_<time>_<host>_<pid>_<token>.json`` (unique per run)."""
    return unique_report_path(out_dir, "wsi-tile")


def run_tiling(
    tasks: Sequence[SlideTask],
    config: TilingConfig,
    *,
    workers: int | None = None,
    shard: str | None = None,
    skip_errors: bool = True,
    progress: bool = True,
    stale_lock_after_s: float = 600.0,
    report_path: str | Path | None = None,
) -> RunReport:
    """Tile a cohort; write and return the run report.

    Args:
        tasks: Slides to tile (see :func:`make_tasks`).
        config: Tiling configuration (output folder, parameters).
        workers: Worker processes (default: cores available).
        shard: ``"i/N"`` to process only shard ``i`` of ``N`` (0-based).
        skip_errors: Record failing slides and go on (default), or stop at the first.
        progress: Show a progress bar on a terminal.
        stale_lock_after_s: Seconds of silence after which another host's lock is taken
            over (same-host locks of dead processes are taken at once).
        report_path: Report JSON path (default :func:`default_report_path`).

    Returns:
        The report; ``report.exit_code`` is 1 if any slide failed.

    Raises:
        ConfigError: ``config.out_dir`` (or a folder below it) cannot be written.
        BatchAbortedError: A slide failed and ``skip_errors`` is off (the report is
            written first).
    """
    from wsi_ncmi.batch import run_batch, select_shard

    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be an integer ≥ 1, got {workers!r}")
    ids = [t.slide_id for t in tasks]
    selected = select_shard(list(tasks), ids, shard)
    example = slide_params_hash(config, selected[0]) if selected else ""
    report = RunReport(
        stage="wsi-tile",
        params={
            "out_dir": str(config.out_dir),
            "grid": config.grid.to_dict(),
            "segmentation": config.tissue.to_dict(),
            "backend": config.backend,
            "mpp_override": config.mpp_override,
            "mask_dir": config.mask_dir,
            "shard": shard or "0/1",
            "workers": workers or default_workers(),
            "params_hash_example": example,
        },
    )
    from wsi_ncmi.batch.preflight import check_writable_dirs

    out = Path(config.out_dir)
    # Before any work: --out_dir (and the folders written below it) must take files.
    check_writable_dirs([out, *(out / sub for sub in ("coords", "thumbnails", "geojson"))])
    path = Path(report_path) if report_path is not None else default_report_path(out)
    sweep_legacy_locks(out)  # earlier versions kept the locks in <out>/.locks
    report.params["report_path"] = str(path)
    try:
        run_batch(
            selected,
            functools.partial(_job, config=config),
            item_ids=[t.slide_id for t in selected],
            report=report,
            is_done=functools.partial(_check_done, config=config),
            lock_dir=lock_dir(out),
            workers=workers or default_workers(),
            skip_errors=skip_errors,
            progress=progress,
            stale_after_s=stale_lock_after_s,
            desc="wsi-tile",
        )
    except KeyboardInterrupt:
        from wsi_ncmi.batch import remove_stale_temp_files

        remove_stale_temp_files(out)  # what the stopped workers were writing
        raise
    finally:
        report.write_json(path)
    return report
