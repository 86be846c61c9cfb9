"""``run_prediction``: the library function behind ``wsi-predict`` (slides in, report out).

Stages, each timed (``<out>/timings.json`` and the printed summary):

1. **tile** the slides with the bundle's own grid and tissue parameters
   (:func:`wsi_ncmi.tiling.run.run_tiling`: ``<out>/coords``, ``thumbnails``, ``geojson``);
2. **extract** their features with the bundle's encoder
   (:func:`wsi_ncmi.features.run.run_extraction`: ``<out>/features/<encoder>/``);
3. **predict** every slide with the bundle (or the ensemble of bundles), after checking
   that its features file has the bundle's encoder identity, µm/px and patch size;
4. **report**: ``predictions.csv``, ``patients.csv`` (pN stage, with ``--manifest``),
   ``qupath/<slide>.geojson``, ``heatmaps/<slide>.png`` and ``report.html``
   (:mod:`wsi_ncmi.predict.outputs`).

With ``features_root`` the first two stages are skipped and the features already there
(extracted or imported) are used. Tiling and extraction keep their caches, locks, shards
and resume: a killed run, started again, skips finished slides and recomputes the rest,
and every output is written atomically, so the outputs equal those of an uninterrupted
run byte for byte (timings aside).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.features.store import feature_path, load_bag, read_feature_attrs
from wsi_ncmi.jsontypes import as_float, as_int
from wsi_ncmi.predict.config import PredictConfig
from wsi_ncmi.predict.model import Ensemble, load_model
from wsi_ncmi.predict.results import PredictResult, SlideResult

#: Relative difference of µm/px still counted as the same resolution.
MPP_RTOL = 1e-6


def check_contract(path: Path, attrs: dict[str, Any], model: Ensemble) -> None:
    """Refuse a features file the model was not trained for.

    Raises:
        ConfigError: Another encoder (name or identity hash), µm/px or patch size; the
            message names the file, both values and the fix.
    """
    encoder, tiling = model.encoder, model.tiling
    problems = []
    if attrs.get("encoder") != encoder.name:
        problems.append(f"encoder {attrs.get('encoder')!r}, the model needs {encoder.name!r}")
    elif encoder.identity_hash and attrs.get("encoder_hash") != encoder.identity_hash:
        problems.append(
            f"encoder identity hash {attrs.get('encoder_hash')!r}, the model needs "
            f"{encoder.identity_hash!r} (other weights or settings of {encoder.name})"
        )
    if as_int(attrs.get("out_dim", -1)) != encoder.out_dim:
        problems.append(f"feature width {attrs.get('out_dim')}, the model needs {encoder.out_dim}")
    want_mpp, have_mpp = tiling.target_mpp, attrs.get("target_mpp")
    if want_mpp is not None:
        if have_mpp is None:
            problems.append("no µm/px recorded (re-register with wsi-import-features --mpp)")
        elif abs(as_float(have_mpp) - want_mpp) > MPP_RTOL * want_mpp:
            problems.append(f"{as_float(have_mpp):g} µm/px, the model needs {want_mpp:g}")
    want_size, have_size = tiling.patch_size_px, attrs.get("patch_size_px")
    if want_size is not None:
        if have_size is None:
            problems.append(
                "no patch size recorded (re-register with wsi-import-features --patch_size_px)"
            )
        elif as_int(have_size) != want_size:
            problems.append(f"patches of {as_int(have_size)} px, the model needs {want_size} px")
    if problems:
        raise ConfigError(
            f"features file {str(path)!r} does not fit the model: {'; '.join(problems)}. "
            "Run wsi-predict on the slides themselves (it tiles and extracts with the "
            "model's own settings), or pass a --features_root made with them"
        )


def _tile_and_extract(
    config: PredictConfig, model: Ensemble, seconds: dict[str, float]
) -> tuple[list[tuple[str, Path | None]], int]:
    """Stages 1 and 2; returns ``[(slide_id, slide path)]`` and the worst exit code."""
    from wsi_ncmi.features.config import ExtractConfig
    from wsi_ncmi.features.encoders.registry import build_encoder
    from wsi_ncmi.features.run import run_extraction
    from wsi_ncmi.tiling.grid import GridParams
    from wsi_ncmi.tiling.job import TilingConfig
    from wsi_ncmi.tiling.run import discover_slides, make_tasks, run_tiling
    from wsi_ncmi.tiling.tissue import TissueParams

    out = Path(config.out_dir)
    absent = [s for s in config.slides if not any(c in s for c in "*?[") and not Path(s).exists()]
    if absent:
        raise ConfigError(f"SLIDES must be existing slide files or folders, got {absent!r}")
    tasks = make_tasks(discover_slides(list(config.slides)))
    if not tasks:
        raise ConfigError(
            f"SLIDES must name slide files or folders with slides, got {config.slides!r}"
        )
    tiling = model.tiling
    if tiling.target_mpp is None or tiling.patch_size_px is None:
        raise ConfigError(
            "the model records no µm/px or patch size (it was trained on imported features "
            "that did not say), so wsi-predict cannot tile slides for it; pass --features_root "
            "with features made like its training features"
        )
    grid = tiling.grid or GridParams(
        target_mpp=tiling.target_mpp, patch_size_px=tiling.patch_size_px
    )
    tissue = tiling.segmentation or TissueParams()
    start = time.perf_counter()
    tile_report = run_tiling(
        tasks,
        TilingConfig(
            out_dir=str(out),
            grid=grid,
            tissue=tissue,
            backend=config.backend,
            mpp_override=config.mpp_override,
        ),
        workers=config.workers,
        shard=config.shard,
        progress=config.progress,
    )
    seconds["tile"] = time.perf_counter() - start
    start = time.perf_counter()
    enc = model.encoder
    encoder = build_encoder(
        enc.name,
        weights=Path(config.weights) if config.weights else None,
        random_init=enc.random_init,
    )
    if enc.identity_hash and encoder.spec.identity_hash != enc.identity_hash:
        raise ConfigError(
            f"encoder {enc.name!r} built here has identity hash "
            f"{encoder.spec.identity_hash!r}, the model was trained on {enc.identity_hash!r}: "
            "pass the same weights with --weights"
        )
    extract_report = run_extraction(
        ExtractConfig(
            coords_dir=out / "coords",
            out_dir=out,
            encoder=enc.name,
            weights=Path(config.weights) if config.weights else None,
            random_init=enc.random_init,
            device=config.device,
            workers=config.extract_workers,
            dtype=enc.dtype,
            shard=config.shard,
            skip_errors=True,
            progress=config.progress,
            backend=None if config.backend == "auto" else config.backend,
        ),
        encoder=encoder,
    )
    seconds["extract"] = time.perf_counter() - start
    slides: list[tuple[str, Path | None]] = [(t.slide_id, Path(t.path)) for t in tasks]
    return slides, max(tile_report.exit_code, extract_report.exit_code)


def _features_slides(config: PredictConfig, model: Ensemble) -> list[tuple[str, Path | None]]:
    root = Path(str(config.features_root))
    folder = feature_path(root, model.encoder.name, "x").parent
    if not folder.is_dir():
        raise ConfigError(
            f"--features_root {str(root)!r} has no {str(folder)!r}: the model needs "
            f"{model.encoder.name!r} features (wsi-extract --encoder {model.encoder.name})"
        )
    ids = sorted(p.stem for p in folder.glob("*.h5"))
    if config.slides:
        wanted = {Path(s).stem for s in config.slides}
        ids = [i for i in ids if i in wanted]
    if not ids:
        raise ConfigError(f"no features files to predict in {str(folder)!r}")
    return [(slide_id, None) for slide_id in ids]


def predict_slides(
    slides: Sequence[tuple[str, Path | None]],
    root: Path,
    model: Ensemble,
    *,
    min_patches: int,
    ood_threshold: float,
) -> list[SlideResult]:
    """Stage 3: one :class:`SlideResult` per slide (features missing: flagged ``failed``).

    Raises:
        ConfigError: A features file that does not fit the model (:func:`check_contract`).
    """
    results = []
    for slide_id, slide_path in slides:
        path = feature_path(root, model.encoder.name, slide_id)
        if not path.is_file():
            results.append(SlideResult(slide_id, None, slide_path, None, ["failed"]))
            continue
        check_contract(path, read_feature_attrs(path), model)
        bag = load_bag(path)
        if bag.shape[0] == 0:
            results.append(SlideResult(slide_id, path, slide_path, None, ["no_tissue"]))
            continue
        prediction = model.predict_bag(bag)
        qc = []
        if bag.shape[0] < min_patches:
            qc.append("too_few_patches")
        if prediction.ood_score > ood_threshold:
            qc.append("out_of_distribution")
        results.append(SlideResult(slide_id, path, slide_path, prediction, qc))
    return results


def run_prediction(config: PredictConfig) -> PredictResult:
    """Tile, extract, predict and report (see the module docstring).

    Args:
        config: The run settings.

    Returns:
        The per-slide results, the seconds per stage, the exit code (1 when a slide
        failed to tile or extract) and the output paths.

    Raises:
        BundleError: A model that is not a valid bundle (a checkpoint, edited, truncated).
        ConfigError: Models that disagree, or features that do not fit the model.
    """
    from wsi_ncmi.predict.outputs import write_outputs

    if config.min_patches < 1:
        raise ConfigError(f"--min_patches must be >= 1, got {config.min_patches!r}")
    if config.geojson_tiles is not None and config.geojson_tiles < 0:
        raise ConfigError(f"--geojson_tiles must be >= 0 or null, got {config.geojson_tiles!r}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    model = Ensemble([load_model(path) for path in config.models])
    seconds["load"] = time.perf_counter() - start
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exit_code = 0
    if config.features_root is not None:
        slides = _features_slides(config, model)
        root = Path(config.features_root)
    else:
        slides, exit_code = _tile_and_extract(config, model, seconds)
        root = out
    missing = [s for s, _ in slides if not feature_path(root, model.encoder.name, s).is_file()]
    if config.shard and missing:
        return PredictResult([], seconds, exit_code, {"pending": ", ".join(missing)})
    start = time.perf_counter()
    threshold = model.ood_threshold if config.ood_threshold is None else config.ood_threshold
    results = predict_slides(
        slides, root, model, min_patches=config.min_patches, ood_threshold=threshold
    )
    seconds["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    thumbnails = root / "thumbnails"
    outputs = write_outputs(out, results, model, config, thumbnails)
    seconds["report"] = time.perf_counter() - start
    if any("failed" in r.qc for r in results):
        exit_code = max(exit_code, 1)
    from wsi_ncmi.train.report import write_json

    write_json({k: round(v, 3) for k, v in seconds.items()}, out / "timings.json")
    return PredictResult(results, seconds, exit_code, outputs)
