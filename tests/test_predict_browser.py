"""``wsi-predict``'s report.html in headless Chromium (``make test-browser``).

The page of an end-to-end run on generated slides must load from disk with no console
error and no network request, every thumbnail and heatmap must decode, the counts table
must hold the counts of ``predictions.csv``, and the cards must be sorted by predicted
class (the last class first) and then by confidence.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
from _predict_bundles import encoder_bundle
from _tiling_slides import blank_slide, small_slide

from wsi_ncmi.cli.predict import main

pytestmark = pytest.mark.browser
CLASSES = ("negative", "itc", "micro", "macro")


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab")
    (root / "slides").mkdir()
    for i in range(4):
        small_slide(root / "slides" / f"s{i}.tiff", seed=i)
    blank_slide(root / "slides" / "blank.tiff")
    encoder_bundle(root / "model", seed=3)
    out = root / "out"
    argv = [str(root / "slides"), "--models", str(root / "model"), "--out_dir", str(out)]
    assert main([*argv, "--workers", "1", "--extract_workers", "0"]) == 0
    return out


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


def test_gallery_loads_offline_sorted_with_every_image(predicted: Path, browser: Any) -> None:
    browser.get((predicted / "report.html").as_uri())
    assert browser.title == "wsi-predict: 5 slides"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
    )
    assert all(name.startswith("data:") for name in resources), resources
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"
    )
    assert all(done and width > 0 for done, width, _ in images), images
    alts = [alt for _, _, alt in images]
    for i in range(4):
        assert f"s{i}: attention" in alts
        assert f"s{i}: tissue and patch grid" in alts
    with (predicted / "predictions.csv").open() as handle:
        rows = {r["slide_id"]: r for r in csv.DictReader(handle)}
    table = browser.find_element("css selector", 'table[data-section="counts"]')
    counts = {
        tds[0].text: int(tds[1].text)
        for tr in table.find_elements("css selector", "tbody tr")
        if (tds := tr.find_elements("css selector", "td"))
    }
    for name in CLASSES:
        assert counts[name] == sum(r["pred_label"] == name for r in rows.values())
    assert counts["no prediction"] == 1
    cards = browser.find_elements("css selector", "div.card")
    order = [card.get_attribute("data-slide") for card in cards]
    assert order[-1] == "blank"
    keys = [
        (-CLASSES.index(rows[s]["pred_label"]), -float(rows[s]["confidence"])) for s in order[:-1]
    ]
    assert keys == sorted(keys)
