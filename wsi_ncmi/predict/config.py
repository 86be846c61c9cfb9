"""``PredictConfig``: the settings of one ``wsi-predict`` run (:mod:`wsi_ncmi.predict.run`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class PredictConfig:
    """Settings of one ``wsi-predict`` run.

    Attributes:
        models: Model bundle folders (several: an ensemble, mean probabilities).
        out_dir: Output folder (tiles, features and the report go here).
        slides: Slide files, folders (searched recursively) or glob patterns; with
            ``features_root``, optional: a filter by slide id (file stem).
        features_root: Use the features already under ``<root>/features/<encoder>/``
            (``wsi-extract`` or ``wsi-import-features`` output) instead of tiling and
            extracting.
        manifest: CSV with ``slide_id`` and ``patient_id`` columns: adds ``patients.csv``
            with each patient's pN stage (CAMELYON-17 rule) from the predicted classes.
        weights: Local encoder weights file (for encoders whose weights are downloaded).
        geojson_tiles: Tiles per slide in the QuPath GeoJSON, the most attended first
            (about 430 bytes each); ``null``: every tile; ``0``: no GeoJSON.
        min_patches: Slides with fewer patches are flagged ``too_few_patches``.
        ood_threshold: Override the bundle's out-of-distribution threshold.
        shard: ``i/N``: tile and extract one part of the slides (the report is written
            once every slide has features).
        workers: Tiling worker processes (default: the cores available).
        extract_workers: Extraction DataLoader workers (``0``: in this process; default:
            as ``wsi-extract``).
        device: Extraction device: ``cpu``, ``cuda`` or ``auto``.
        backend: Slide reader: ``auto``, ``openslide`` or ``tiffslide``.
        mpp_override: Level-0 µm/px for slides whose files do not record it.
        progress: Progress bars.
    """

    models: tuple[str, ...] = ()
    out_dir: str = "outputs/predict"
    slides: tuple[str, ...] = ()
    features_root: str | None = None
    manifest: str | None = None
    weights: str | None = None
    geojson_tiles: int | None = 50
    min_patches: int = 16
    ood_threshold: float | None = None
    shard: str | None = None
    workers: int | None = None
    extract_workers: int | None = None
    device: Literal["cpu", "cuda", "auto"] = "auto"
    backend: str = "auto"
    mpp_override: float | None = None
    progress: bool = False
