"""``<bench>/report.html``: the benchmark's self-contained HTML page."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from wsi_ncmi.bench.config import BenchConfig
from wsi_ncmi.bench.results import RunKey
from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.evaluation import MetricsReport


def write_bench_html(
    config: BenchConfig,
    summary_md: str,
    paths: Mapping[str, str],
    reports: Mapping[RunKey, MetricsReport],
    max_heatmaps: int = 4,
) -> Path:
    """``<bench>/report.html``: :mod:`wsi_ncmi.train.html` over this sweep's outputs."""
    from wsi_ncmi.train.html import confusion_png, provenance, write_html_report

    out = config.out_dir
    figures = [(Path(v), k.replace("_", " ")) for k, v in paths.items() if v.endswith(".png")]
    first_seed: dict[tuple[str, str], RunKey] = {}
    for key in sorted(reports):
        first_seed.setdefault((key[0], key[1]), key)
    confusions = [
        (
            confusion_png(
                reports[key].pooled.confusion_matrix,
                LABELS,
                f"{model} + {loss}, seed {key[2]}",
            ),
            f"{model} + {loss}, seed {key[2]}",
        )
        for (model, loss), key in sorted(first_seed.items())
        if reports[key].pooled.confusion_matrix
    ]
    overlays = Path(config.data.features_root) / "thumbnails"
    heatmaps = [
        (png, overlays / png.name, f"{png.stem} ({png.parents[2].name})")
        for png in sorted(out.glob("cells/*/run/heatmaps/*.png"))[:max_heatmaps]
    ]
    return write_html_report(
        out / "report.html",
        title=f"wsi-bench {config.name}",
        summary_md=summary_md,
        figures=figures,
        confusions=confusions,
        heatmaps=heatmaps,
        provenance_record=provenance(dataclasses.asdict(config), config.data.encoder),
    )
