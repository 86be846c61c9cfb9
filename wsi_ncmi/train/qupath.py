"""Per-slide attention as QuPath objects: one GeoJSON tile per patch, with measurements.

QuPath (0.4 and later) imports GeoJSON ``FeatureCollection`` files of objects: drag the
file onto the open slide, or *File › Objects › Import objects*. Each patch becomes a
``tile`` object (a detection) whose polygon is the patch square in level-0 pixels, whose
classification is the slide's predicted class, and whose ``measurements`` hold:

* ``attention``: the patch's attention weight (the slide's weights sum to 1);
* ``attention_relative``: ``attention × N``, so 1 means uniform attention over the ``N``
  patches (the scale to colour by: *Measure › Show measurement maps*);
* ``attention_rank``: 1 for the most attended patch;
* ``prob_<class>``: the slide's predicted class probabilities (the same on every tile).

The coordinates are those stored in the features file (level 0 of the slide the patches
were cut from), so the tiles lie over the real slide.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wsi_ncmi.jsontypes import JSONObject, JSONValue

#: Display colours (RGB) of the CAMELYON-17 classes in QuPath.
CLASS_COLOURS: dict[str, list[int]] = {
    "negative": [120, 180, 120],
    "itc": [250, 200, 60],
    "micro": [240, 130, 40],
    "macro": [200, 40, 40],
}


def patch_size_level0(features_file: Path, coords: NDArray[np.int64]) -> float:
    """Side of one patch in level-0 pixels.

    Read from the coords file that the features file names (``patch_size_level0``), else
    the grid stride of ``coords`` (patches tile without overlap by default).
    """
    import h5py

    from wsi_ncmi.batch.paths import resolve_stored_path

    try:
        with h5py.File(features_file, "r") as h5:
            recorded = h5.attrs.get("coords_file")
        coords_file = resolve_stored_path(str(recorded), features_file) if recorded else None
        if coords_file is not None:
            with h5py.File(coords_file, "r") as h5:
                return float(h5.attrs["patch_size_level0"])
    except (OSError, KeyError):
        pass
    from wsi_ncmi.train.attention import patch_stride

    return float(patch_stride(coords))


def slide_feature_collection(
    slide_id: str,
    coords: NDArray[np.int64],
    attention: NDArray[np.float64],
    patch_size: float,
    *,
    predicted: str,
    probabilities: Sequence[float],
    class_names: Sequence[str],
    top_k: int | None = None,
) -> JSONObject:
    """The GeoJSON ``FeatureCollection`` of one slide's patches.

    About 430 bytes per tile: ``top_k`` bounds a slide's file (``wsi-predict`` writes
    the 50 most attended tiles by default, about 21 kB per slide).

    Args:
        slide_id: Slide id (each feature's ``id`` is ``<slide_id>/<patch index>``).
        coords: ``(N, 2)`` level-0 top-left corners of the patches.
        attention: ``(N,)`` attention weights.
        patch_size: Patch side in level-0 pixels.
        predicted: The slide's predicted class name (the tiles' classification).
        probabilities: ``(C,)`` class probabilities of the slide.
        class_names: The ``C`` class names.
        top_k: Only the ``top_k`` most attended tiles (their ranks and relative attention
            still refer to all ``N`` patches); ``None``: every tile.

    Returns:
        A JSON-serialisable dict.

    Raises:
        ValueError: If the lengths do not match.
    """
    attention = np.asarray(attention, dtype=np.float64).reshape(-1)
    if len(coords) != len(attention) or len(probabilities) != len(class_names):
        raise ValueError(
            f"{slide_id}: {len(coords)} coords, {len(attention)} attention weights, "
            f"{len(probabilities)} probabilities for {len(class_names)} classes"
        )
    n = len(attention)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(-attention, kind="stable")] = np.arange(1, n + 1)
    slide_measurements = {
        f"prob_{name}": round(float(p), 6)
        for name, p in zip(class_names, probabilities, strict=True)
    }
    classification: JSONObject = {
        "name": predicted,
        "color": CLASS_COLOURS.get(predicted, [128, 128, 128]),
    }
    size = float(patch_size)
    features: list[JSONValue] = []
    for i, ((x, y), a) in enumerate(zip(coords.tolist(), attention.tolist(), strict=True)):
        if top_k is not None and rank[i] > top_k:
            continue
        x0, y0, x1, y1 = float(x), float(y), float(x) + size, float(y) + size
        features.append(
            {
                "type": "Feature",
                "id": f"{slide_id}/{i}",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]],
                },
                "properties": {
                    "objectType": "tile",
                    "classification": classification,
                    "measurements": {
                        "attention": round(a, 9),
                        "attention_relative": round(a * n, 6),
                        "attention_rank": int(rank[i]),
                        **slide_measurements,
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_slide_geojson(path: Path, collection: dict[str, Any]) -> Path:
    """Write one slide's collection atomically (compact JSON, one object per patch)."""
    from wsi_ncmi.batch import write_text_atomic

    return write_text_atomic(path, json.dumps(collection, separators=(",", ":")) + "\n")


def export_qupath(
    rows: Sequence[Any],
    predictions: Sequence[dict[str, Any]],
    feature_paths: Sequence[Path],
    out_dir: Path,
    *,
    class_names: Sequence[str],
    max_slides: int | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<slide_id>.geojson`` for the predicted slides.

    Args:
        rows: Manifest rows of the predicted part (indexed by the predictions' ``index``).
        predictions: Per-slide ``predict_step`` outputs (``index``, ``pred``, ``probs``,
            ``attention``).
        feature_paths: Features file of each row (coordinates, patch size).
        out_dir: Output folder.
        class_names: Class names.
        max_slides: Write at most this many (manifest order); ``None``: all.

    Returns:
        The files written.
    """
    from wsi_ncmi.train.attention import read_patch_coords

    written = []
    for item in predictions[:max_slides] if max_slides is not None else predictions:
        index = int(item["index"])
        coords = read_patch_coords(feature_paths[index])
        collection = slide_feature_collection(
            rows[index].slide_id,
            coords,
            np.asarray(item["attention"], dtype=np.float64),
            patch_size_level0(feature_paths[index], coords),
            predicted=class_names[int(item["pred"])],
            probabilities=np.asarray(item["probs"], dtype=np.float64).reshape(-1).tolist(),
            class_names=class_names,
        )
        written.append(write_slide_geojson(out_dir / f"{rows[index].slide_id}.geojson", collection))
    return written
