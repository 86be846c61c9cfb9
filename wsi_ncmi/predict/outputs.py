"""What ``wsi-predict`` writes: predictions, patient stages, QuPath tiles, heatmaps, report.

Files under ``--out`` (each written atomically)::

    predictions.csv          one row per slide: slide_id, pred_label, confidence, one
                             prob_<class> column per class, decision (the rule used),
                             pred_label_default, pred_label_calibrated, n_patches,
                             ood_score, qc (ok, or ';'-joined flags: failed, no_tissue,
                             too_few_patches, out_of_distribution)
    patients.csv             with --manifest: patient_id, pN_stage (CAMELYON-17 rule, from
                             the predicted classes), slides, slides_predicted, complete
    qupath/<slide>.geojson   the most attended tiles (--geojson_tiles, default 50: about
                             21 kB per slide; every tile is about 430 B)
    heatmaps/<slide>.png     attention over the slide thumbnail, with a colour scale
    report.html              the gallery (:mod:`wsi_ncmi.predict.html`)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsi_ncmi.batch import write_text_atomic
from wsi_ncmi.errors import ConfigError
from wsi_ncmi.predict.model import Ensemble

if TYPE_CHECKING:
    from wsi_ncmi.predict.config import PredictConfig
    from wsi_ncmi.predict.results import SlideResult


def prediction_rows(results: Sequence[SlideResult], classes: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of ``predictions.csv`` (probabilities as Python's shortest float repr)."""
    rows = []
    for r in results:
        p = r.prediction
        row: dict[str, Any] = {
            "slide_id": r.slide_id,
            "pred_label": p.predicted if p else "",
            "confidence": repr(p.confidence) if p else "",
        }
        row |= {
            f"prob_{c}": repr(v) if p else ""
            for c, v in zip(classes, _probs(r, classes), strict=True)
        }
        row |= {
            "decision": p.decision if p else "",
            "pred_label_default": p.predicted_default if p else "",
            "pred_label_calibrated": p.predicted_calibrated if p else "",
            "n_patches": p.n_patches if p else 0,
            "ood_score": f"{p.ood_score:.6g}" if p else "",
            "qc": ";".join(r.qc) or "ok",
        }
        rows.append(row)
    return rows


def _probs(result: SlideResult, classes: Sequence[str]) -> Sequence[float]:
    return result.prediction.probabilities if result.prediction else [float("nan")] * len(classes)


def write_csv(rows: Sequence[dict[str, Any]], path: Path, header: Sequence[str]) -> Path:
    """Write ``rows`` as CSV atomically (``header`` also when there are no rows)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def patient_stages(
    manifest: Path, results: Sequence[SlideResult], classes: Sequence[str]
) -> list[dict[str, Any]]:
    """Each manifest patient's pN stage from the predicted classes of its slides.

    A patient is ``complete`` when every one of its manifest slides has a prediction;
    the stage of an incomplete patient uses the slides that have one.

    Raises:
        ConfigError: The manifest lacks ``slide_id``/``patient_id``, or the model's
            classes are not CAMELYON-17's (the pN rule needs them).
    """
    from wsi_ncmi.manifest import LABELS
    from wsi_ncmi.train.metrics import pn_stage

    if tuple(classes) != LABELS:
        raise ConfigError(
            f"--manifest: the pN stage needs the classes {list(LABELS)}, the model has "
            f"{list(classes)}"
        )
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            table = list(reader)
            columns = reader.fieldnames or []
    except OSError as err:
        raise ConfigError(f"--manifest {str(manifest)!r} cannot be read: {err}") from err
    if "slide_id" not in columns or "patient_id" not in columns:
        raise ConfigError(
            f"--manifest {str(manifest)!r} needs slide_id and patient_id columns, has {columns}"
        )
    predicted = {r.slide_id: r.prediction.predicted for r in results if r.prediction}
    patients: dict[str, list[str]] = {}
    for entry in table:
        patients.setdefault(entry["patient_id"], []).append(entry["slide_id"])
    rows = []
    for patient, slide_ids in patients.items():
        labels = [predicted[s] for s in slide_ids if s in predicted]
        rows.append(
            {
                "patient_id": patient,
                "pN_stage": pn_stage(labels) if labels else "",
                "slides": len(slide_ids),
                "slides_predicted": len(labels),
                "complete": len(labels) == len(slide_ids),
            }
        )
    return rows


def draw_slide(
    result: SlideResult, out: Path, geojson_tiles: int | None
) -> tuple[Path, Path | None]:
    """Write a predicted slide's heatmap and QuPath GeoJSON; return their paths."""
    from wsi_ncmi.train.attention import patch_stride, read_patch_coords, save_heatmap
    from wsi_ncmi.train.qupath import (
        patch_size_level0,
        slide_feature_collection,
        write_slide_geojson,
    )

    p = result.prediction
    if p is None or result.features is None:
        raise ValueError(f"{result.slide_id} has no prediction to draw")
    coords = read_patch_coords(result.features)
    heatmap = save_heatmap(
        out / "heatmaps" / f"{result.slide_id}.png",
        coords,
        p.attention,
        patch_stride(coords),
        slide_path=result.slide_path,
        title=f"{result.slide_id}: {p.predicted} ({p.confidence:.2f})",
        colorbar=True,
    )
    geojson = None
    if geojson_tiles != 0:
        collection = slide_feature_collection(
            result.slide_id,
            coords,
            p.attention,
            patch_size_level0(result.features, coords),
            predicted=p.predicted,
            probabilities=list(p.probabilities),
            class_names=p.classes,
            top_k=geojson_tiles,
        )
        geojson = write_slide_geojson(out / "qupath" / f"{result.slide_id}.geojson", collection)
    return heatmap, geojson


def write_outputs(
    out: Path,
    results: Sequence[SlideResult],
    model: Ensemble,
    config: PredictConfig,
    thumbnails: Path,
) -> dict[str, str]:
    """Write every output of a run (see the module docstring); return ``{name: path}``."""
    from wsi_ncmi.predict.html import write_predict_html

    classes = model.classes
    rows = prediction_rows(results, classes)
    header = ["slide_id", "pred_label", "confidence", *(f"prob_{c}" for c in classes)]
    header += ["decision", "pred_label_default", "pred_label_calibrated", "n_patches"]
    header += ["ood_score", "qc"]
    outputs = {"predictions": str(write_csv(rows, out / "predictions.csv", header))}
    if config.manifest:
        stages = patient_stages(Path(config.manifest), results, classes)
        columns = ["patient_id", "pN_stage", "slides", "slides_predicted", "complete"]
        outputs["patients"] = str(write_csv(stages, out / "patients.csv", columns))
    images: dict[str, tuple[Path, Path | None]] = {}
    for result in results:
        if result.prediction is not None:
            heatmap, _ = draw_slide(result, out, config.geojson_tiles)
            thumbnail = thumbnails / f"{result.slide_id}.png"
            images[result.slide_id] = (heatmap, thumbnail if thumbnail.is_file() else None)
    outputs["report"] = str(write_predict_html(out / "report.html", results, model, images))
    return outputs
