"""``report.html``: a run's summary as one self-contained page that opens offline.

The page holds, with nothing fetched from anywhere (styles inline, images as ``data:``
URIs):

* the per-hospital tables, pN kappa, paired tests (CIs, Wilcoxon), decision rules and
  per-class F1 of ``summary.md``, as HTML tables;
* the plots (bars per hospital, validation NCMI vs macro-F1);
* a pooled confusion matrix for every (model, loss), from its first seed;
* a few attention heatmaps, each beside its slide's tiling overlay when there is one;
* the run's provenance: configuration, encoder, package versions, git commit, machine.

Tables carry ``data-*`` attributes naming their source, so the browser test
(``tests/test_report_browser.py``, ``make test-browser``) can check them against
``summary.json``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import platform
import re
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.train.evaluation import MetricsReport

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.2em}
td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}
th{background:#eef}
blockquote{border-left:4px solid #d33;margin:.5em 0;padding:.2em 1em;background:#fee}
code{background:#f3f3f3;padding:0 .2em}
figure{display:inline-block;margin:.5em;vertical-align:top}
figure img{max-width:520px;border:1px solid #ccc}
figcaption{font-size:.85em;color:#555}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
"""


def _inline(text: str) -> str:
    """Escape, then ``code`` and **bold** (the only inline markup summary.md uses)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def markdown_to_html(text: str) -> str:
    """The subset of Markdown that ``summary.md`` is written in, as HTML.

    Headings (``#``), paragraphs, ``- `` lists, ``> `` quotes and pipe tables; the table
    after a heading gets ``data-section="<heading>"``.
    """
    parts: list[str] = []
    lines = text.splitlines()
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if not line:
            i += 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            heading = line[level:].strip()
            parts.append(f"<h{level}>{_inline(heading)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            cells = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body
            )
            section = html.escape(heading, quote=True)
            parts.append(
                f'<table data-section="{section}"><thead><tr>{head}</tr></thead>'
                f"<tbody>{cells}</tbody></table>"
            )
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            parts.append("<ul>" + "".join(items) + "</ul>")
        elif line.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i].lstrip("> "))
                i += 1
            parts.append(f"<blockquote>{_inline(' '.join(quote))}</blockquote>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and lines[i][0] not in "#|>-":
                para.append(lines[i].strip())
                i += 1
            parts.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(parts)


def image_tag(path: Path, caption: str) -> str:
    """A ``<figure>`` with the PNG at ``path`` inlined as a ``data:`` URI."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def confusion_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> bytes:
    """A confusion matrix drawn as a PNG (rows: true, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for r, row in enumerate(matrix):
        for c, value in enumerate(row):
            ax.text(c, r, str(value), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(labels)), labels, rotation=45)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def provenance(config_dict: Mapping[str, Any], encoder: str) -> JSONObject:
    """Configuration, encoder, package versions, git commit and machine of a run."""
    versions = {}
    for package in ("wsi-ncmi", "torch", "lightning", "numpy", "scikit-learn", "h5py"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "not a git checkout"
    machine = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.machine(),
    }
    try:
        import torch

        machine["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        machine["cuda"] = "unknown"
    return {
        "encoder": encoder,
        "versions": versions,
        "git_commit": commit,
        "machine": machine,
        "config": dict(config_dict),
    }


def write_html_report(
    out: Path,
    *,
    title: str,
    summary_md: str,
    figures: Sequence[tuple[Path, str]],
    confusions: Sequence[tuple[bytes, str]],
    heatmaps: Sequence[tuple[Path, Path | None, str]],
    provenance_record: Mapping[str, Any],
) -> Path:
    """Write ``out`` (``report.html``) atomically.

    Args:
        out: Path of the page.
        title: Page title.
        summary_md: The Markdown summary (tables and tests).
        figures: ``(png, caption)`` plots.
        confusions: ``(png bytes, caption)`` confusion matrices.
        heatmaps: ``(heatmap png, tiling overlay png or None, caption)``.
        provenance_record: What :func:`provenance` returned.

    Returns:
        ``out``.
    """
    from wsi_ncmi.batch import write_text_atomic

    body = [f"<h1>{html.escape(title)}</h1>", markdown_to_html(summary_md)]
    body += ["<h2>Plots</h2>", *(image_tag(p, c) for p, c in figures if p.is_file())]
    if confusions:
        body.append("<h2>Confusion matrices (pooled test slides, first seed)</h2>")
        for png, caption in confusions:
            data = base64.b64encode(png).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(caption, quote=True)}"><figcaption>'
                f"{html.escape(caption)}</figcaption></figure>"
            )
    if heatmaps:
        body.append("<h2>Attention heatmaps beside the tiling overlay</h2>")
        for heat, overlay, caption in heatmaps:
            body.append("<div>")
            if overlay is not None and overlay.is_file():
                body.append(image_tag(overlay, f"{caption}: tissue and patch grid"))
            body.append(image_tag(heat, f"{caption}: attention"))
            body.append("</div>")
    record = json.dumps(provenance_record, indent=1, default=str)
    body += ["<h2>Provenance</h2>", f'<pre id="provenance">{html.escape(record)}</pre>']
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    return write_text_atomic(out, page)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{float(value):.3f}"


def training_summary_md(
    title: str,
    report: MetricsReport,
    by_decision: Mapping[str, MetricsReport],
    decision: str,
    no_tissue_excluded: Sequence[str] = (),
) -> str:
    """Markdown tables of a ``wsi-train`` run: per hospital, pooled, both decision rules.

    ``no_tissue_excluded``: the blank slides the run left out (a note says how many).
    """
    groups = [
        (f"center {c}", m) for c, m in sorted(report.per_center.items(), key=lambda cm: cm[0])
    ]
    groups.append(("pooled", report.pooled))
    lines = [
        f"## {title}",
        "",
        f"Test slides of every fold, predicted by the `{decision}` decision rule.",
        "",
        "| group | slides | macro-F1 | 95% CI | accuracy | balanced accuracy | AUROC | pN kappa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in groups:
        low, high = m.macro_f1_ci95
        lines.append(
            f"| {name} | {m.n} | {_fmt(m.macro_f1)} | "
            f"[{_fmt(low)}, {_fmt(high)}] | {_fmt(m.accuracy)} | "
            f"{_fmt(m.balanced_accuracy)} | {_fmt(m.auroc_macro_ovr)} | "
            f"{_fmt(m.patient_kappa_quadratic)} |"
        )
    from wsi_ncmi.train.empty import empty_note
    from wsi_ncmi.train.report import undefined_notes

    notes = undefined_notes(report)
    if no_tissue_excluded:
        notes.append(empty_note(list(no_tissue_excluded)))
    if notes:
        lines += ["", *(f"- {note}" for note in notes)]
    if by_decision:
        lines += ["", "## Decision rules (pooled test macro-F1)", ""]
        lines += ["| rule | macro-F1 |", "|---|---|"]
        lines += [f"| {rule} | {_fmt(r.pooled.macro_f1)} |" for rule, r in by_decision.items()]
    per_class = report.pooled.f1_per_class
    if per_class:
        lines += ["", "## Per-class test F1 (pooled)", ""]
        lines += ["| " + " | ".join(per_class) + " |", "|" + "---|" * len(per_class)]
        lines += ["| " + " | ".join(_fmt(v) for v in per_class.values()) + " |"]
    return "\n".join(lines) + "\n"


def write_training_html(
    out_dir: Path,
    *,
    title: str,
    report: MetricsReport,
    by_decision: Mapping[str, MetricsReport],
    decision: str,
    config_dict: Mapping[str, Any],
    encoder: str,
    overlays_dir: Path | None,
    max_heatmaps: int = 4,
    diagnostics: str = "",
    no_tissue_excluded: Sequence[str] = (),
) -> Path:
    """``<out_dir>/report.html`` of a ``wsi-train`` run (tables, plots, heatmaps, provenance).

    ``diagnostics`` (the Markdown table of :mod:`wsi_ncmi.train.diagnostics`) is shown
    after the metric tables; ``no_tissue_excluded`` are the blank slides left out.
    """
    figures = [(p, p.stem.replace("_", " ")) for p in sorted(out_dir.glob("confusion_*.png"))]
    figures += [
        (p, f"{p.parent.name}: training curves") for p in sorted(out_dir.glob("*/curves.png"))
    ]
    heatmaps = [
        (
            png,
            None if overlays_dir is None else overlays_dir / png.name,
            f"{png.stem} ({png.parents[1].name})",
        )
        for png in sorted(out_dir.glob("*/heatmaps/*.png"))[:max_heatmaps]
    ]
    return write_html_report(
        out_dir / "report.html",
        title=f"wsi-train {out_dir.name}",
        summary_md=training_summary_md(title, report, by_decision, decision, no_tissue_excluded)
        + ("\n\n" + diagnostics if diagnostics else ""),
        figures=figures,
        confusions=[],
        heatmaps=heatmaps,
        provenance_record=provenance(config_dict, encoder),
    )
