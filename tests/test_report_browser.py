"""report.html in a real headless browser (Debian's chromium + chromedriver, via selenium).

Run with ``make test-browser`` (it installs both); excluded from ``make test``. A small
benchmark (learnable feature bags, CE and NCMI-MIL, 5 leave-one-hospital-out folds) is run
through ``run_bench``, then the page must load from disk with no console error, no
network request, every image decoded, and its headline table equal to ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wsi_ncmi.synth.bags import signal_bag_cohort

pytestmark = pytest.mark.browser

ENCODER = "signal16"


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from wsi_ncmi.bench.parser import load_config
    from wsi_ncmi.bench.pipeline import run_bench

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bags")
    manifest, _ = signal_bag_cohort(
        root, encoder=ENCODER, centers=5, patients_per_center=2, slide_dir=root / "slides"
    )
    config = load_config(
        None,
        {
            "name": "browser",
            "output_root": str(root / "bench"),
            "data": {
                "manifest": str(manifest),
                "features_root": str(root),
                "encoder": ENCODER,
                "slide_dir": str(root / "slides"),
            },
            "prepare": {"enabled": False},
            "sweep": {
                "losses": [{"name": "ce"}, {"name": "ncmi_mil"}],
                "models": [{"name": "abmil", "kwargs": {"hidden_dim": 16, "attention_dim": 8}}],
                "seeds": [0],
                "split": {"kind": "loho", "val_fraction": 0.25},
            },
            "train": {
                "data": {"batch_size": 4},
                "optim": {"lr": 0.01},
                "trainer": {"max_epochs": 3, "patience": 0, "accelerator": "cpu"},
                "report": {"bootstrap": 100, "max_heatmaps": 1, "max_geojson": 0},
            },
            "stats": {"bootstrap": 200},
            "progress": False,
        },
    )
    outcome = run_bench(config)
    assert not outcome.sweep.failed
    return config.out_dir


@pytest.fixture(scope="module")
def train_out(bench_out: Path) -> tuple[Path, Any]:
    """A wsi-train run on the same bags (fixed split, 3 epochs)."""
    from wsi_ncmi.train.config import (
        DataConfig,
        ReportConfig,
        SplitConfig,
        TrainConfig,
        TrainerConfig,
    )
    from wsi_ncmi.train.fit import run_training

    root = bench_out.parents[1]
    config = TrainConfig(
        out_dir=str(root / "train"),
        data=DataConfig(
            manifest=str(root / "manifest.csv"),
            features_root=str(root),
            encoder=ENCODER,
            slide_dir=str(root / "slides"),
            batch_size=4,
        ),
        split=SplitConfig(kind="fixed", train_centers=[0, 1, 2], test_centers=[3, 4]),
        trainer=TrainerConfig(max_epochs=3, patience=0, accelerator="cpu"),
        report=ReportConfig(bootstrap=100, max_heatmaps=2),
    )
    return root / "train", run_training(config)


@pytest.fixture(scope="module")
def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium, "no chromium on PATH: make test-browser installs it"
    assert driver_path, "no chromedriver on PATH: make test-browser installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def test_report_loads_offline_with_every_image_and_no_console_error(
    bench_out: Path, browser: Any
) -> None:
    page = bench_out / "report.html"
    browser.get(page.as_uri())
    assert browser.title == "wsi-bench browser"
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
    )
    assert all(name.startswith("data:") for name in resources), resources  # nothing fetched
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
    )
    alts = [alt for _, _, alt in images]
    assert all(done and width > 0 for done, width, _ in images), images
    assert any("bars" in a for a in alts)
    assert any("ncmi vs f1" in a for a in alts)
    assert sum("seed 0" in a for a in alts) == 2  # a confusion matrix per loss
    assert any(a.endswith(": attention") for a in alts)  # a heatmap
    provenance = json.loads(browser.find_element("id", "provenance").text)
    assert {"git_commit", "versions", "machine", "config", "encoder"} <= set(provenance)
    assert provenance["encoder"] == ENCODER


def test_headline_table_holds_the_numbers_of_summary_json(bench_out: Path, browser: Any) -> None:
    browser.get((bench_out / "report.html").as_uri())
    summary = json.loads((bench_out / "summary.json").read_text())["models"]["abmil"]
    table = browser.find_element(
        "css selector", 'table[data-section="abmil: test macro-F1 per hospital"]'
    )
    header = [th.text for th in table.find_elements("css selector", "thead th")]
    assert header[:3] == ["hospital", "CE macro-F1", "NCMI_MIL macro-F1"]
    rows = [
        [td.text for td in tr.find_elements("css selector", "td")]
        for tr in table.find_elements("css selector", "tbody tr")
    ]
    assert len(rows) == 6  # five hospitals and the pooled row
    for row in rows:
        group = "pooled" if row[0].startswith("pooled") else row[0].split()[1]
        for column, loss in ((1, "ce"), (2, "ncmi_mil")):
            expected = float(np.mean(summary["macro_f1"][loss][group]))
            assert float(row[column].split(" ± ")[0]) == pytest.approx(expected, abs=5e-4)


def test_training_report_loads_and_holds_the_pooled_metrics(
    train_out: tuple[Path, Any], browser: Any
) -> None:
    out, result = train_out
    browser.get((out / "report.html").as_uri())
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth])"
    )
    assert len(images) >= 4  # confusion matrices, curves, heatmaps
    assert all(done and width > 0 for done, width in images)
    table = browser.find_element("css selector", "table")
    pooled = [
        [td.text for td in tr.find_elements("css selector", "td")]
        for tr in table.find_elements("css selector", "tbody tr")
    ][-1]
    assert pooled[0] == "pooled"
    assert float(pooled[2]) == pytest.approx(result.metrics.pooled.macro_f1, abs=5e-4)
