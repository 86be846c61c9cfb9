"""``report.html`` of ``wsi-predict``: a self-contained gallery of the predicted slides.

One card per slide, sorted by predicted class (the last class, the most severe, first)
and then by confidence (highest first); slides without a prediction come last. Each card
shows the tiling overlay thumbnail (when the slide was tiled) and the attention heatmap,
inlined as ``data:`` URIs with the helpers of :mod:`wsi_ncmi.train.html`, so the page
opens offline. Cards carry ``data-slide``, ``data-pred`` and ``data-qc`` attributes, and
the counts table ``data-section="counts"``, for tests. The models' manifests (without
their training configuration) close the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsi_ncmi.predict.model import Ensemble

if TYPE_CHECKING:
    from wsi_ncmi.predict.results import SlideResult

CARD_CSS = """
.card{display:inline-block;vertical-align:top;border:1px solid #ccc;margin:.4em;padding:.4em;
width:540px}
.card img{max-width:260px;border:1px solid #ddd}
.card .qc{color:#b00}
"""


def gallery_order(results: Sequence[SlideResult], classes: Sequence[str]) -> list[SlideResult]:
    """Predicted slides by class (last class first), then confidence; the rest after."""

    def key(r: SlideResult) -> tuple[int, float, str]:
        p = r.prediction
        if p is None:
            return (len(classes), 0.0, r.slide_id)
        return (len(classes) - 1 - classes.index(p.predicted), -p.confidence, r.slide_id)

    return sorted(results, key=key)


def _card(result: SlideResult, images: Mapping[str, tuple[Path, Path | None]]) -> str:
    from wsi_ncmi.train.html import image_tag

    p = result.prediction
    qc = ";".join(result.qc) or "ok"
    title = html.escape(result.slide_id)
    if p is None:
        head = f"<b>{title}</b>: no prediction"
    else:
        probs = ", ".join(f"{c} {v:.3f}" for c, v in zip(p.classes, p.probabilities, strict=True))
        head = (
            f"<b>{title}</b>: <b>{html.escape(p.predicted)}</b> ({p.confidence:.3f}; "
            f"{html.escape(p.decision)} rule)<br><small>{html.escape(probs)}; "
            f"{p.n_patches} patches</small>"
        )
    parts = [
        f'<div class="card" data-slide="{html.escape(result.slide_id, quote=True)}" '
        f'data-pred="{html.escape(p.predicted if p else "", quote=True)}" '
        f'data-qc="{html.escape(qc, quote=True)}">',
        head,
        f'<div class="qc">QC: {html.escape(qc)}</div>' if qc != "ok" else "",
    ]
    heatmap, thumbnail = images.get(result.slide_id, (None, None))
    if thumbnail is not None:
        parts.append(image_tag(thumbnail, f"{result.slide_id}: tissue and patch grid"))
    if heatmap is not None:
        parts.append(image_tag(heatmap, f"{result.slide_id}: attention"))
    parts.append("</div>")
    return "\n".join(part for part in parts if part)


def write_predict_html(
    out: Path,
    results: Sequence[SlideResult],
    model: Ensemble,
    images: Mapping[str, tuple[Path, Path | None]],
) -> Path:
    """Write the gallery page atomically.

    Args:
        out: The page (``<out>/report.html``).
        results: Every slide of the run.
        model: The model (or ensemble) that predicted them.
        images: ``{slide_id: (heatmap png, tiling overlay png or None)}``.

    Returns:
        ``out``.
    """
    from wsi_ncmi.batch import write_text_atomic
    from wsi_ncmi.train.html import CSS

    classes = list(model.classes)
    counts = {
        c: sum(1 for r in results if r.prediction and r.prediction.predicted == c) for c in classes
    }
    flagged = sum(1 for r in results if r.qc)
    rows = "".join(f"<tr><td>{html.escape(c)}</td><td>{n}</td></tr>" for c, n in counts.items())
    rows += f"<tr><td>no prediction</td><td>{sum(1 for r in results if not r.prediction)}</td></tr>"
    rows += f"<tr><td>QC flagged</td><td>{flagged}</td></tr>"
    models = [
        {k: v for k, v in m.manifest.items() if k not in ("training", "files")}
        | {"path": str(m.path), "training": _training_summary(m.manifest.get("training", {}))}
        for m in model.models
    ]
    title = f"wsi-predict: {len(results)} slides"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Model: {len(model.models)} bundle(s), {html.escape(models[0]['aggregator']['name'])}"
        f" + {html.escape(models[0]['loss']['name'])} on {html.escape(model.encoder.name)} "
        f"features; decision rule: {html.escape(model.decision)}.</p>",
        '<table data-section="counts"><thead><tr><th>predicted class</th><th>slides</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>",
        "<h2>Slides</h2>",
        *(_card(r, images) for r in gallery_order(results, classes)),
        "<h2>Models</h2>",
        f'<pre id="models">{html.escape(json.dumps(models, indent=1, default=str))}</pre>',
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}{CARD_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    return write_text_atomic(out, page)


def _training_summary(training: Mapping[str, object]) -> dict[str, object]:
    """The training record without its full configuration."""
    return {k: v for k, v in training.items() if k != "config"}
