"""The HTML report in a real headless Chromium: it renders offline and its numbers match the manifest."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from pipeline.audit.report import render_report
from pipeline.config import load_config, parse_config
from pipeline.executor import run_local
from tests.conftest import REPO

pytestmark = pytest.mark.e2e

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromedriver are required in CI: `make test` installs them (apt)")
    pytest.skip("chromium/chromedriver not installed (make test installs them)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2400"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = load_config(REPO / "configs" / "sample.yaml").model_dump(mode="json")
    data["output"]["dir"] = str(root / "run")
    manifest = run_local(parse_config(data))
    page = root / "report.html"
    page.write_text(render_report(root / "run"))
    return page, manifest


def test_the_report_renders_its_charts_and_numbers_match_the_manifest(browser, report):
    from selenium.webdriver.common.by import By

    page, manifest = report
    browser.get(page.as_uri())
    overall = manifest["conservation"]["overall"]
    for k in ("input", "kept", "dropped", "quarantined", "rejected"):
        card = browser.find_element(By.CSS_SELECTOR, f"#card-{k} b")
        assert int(card.get_attribute("data-value")) == overall[k] and card.text.replace(",", "") == str(overall[k])
    bars = browser.find_elements(By.CSS_SELECTOR, "#funnel g.bar")
    assert [b.get_attribute("data-label") for b in bars] == ["read", "safety", "identity", "exact_dedup", "near_dedup", "pii", "output"]
    for b in bars:
        stage = b.get_attribute("data-label")
        assert int(b.get_attribute("data-value")) == manifest["stages"][stage]["kept"]
        rect = b.find_element(By.TAG_NAME, "rect")
        assert rect.size["width"] > 0 and rect.size["height"] > 0  # really laid out by the browser
    clusters = browser.find_elements(By.CSS_SELECTOR, "#cluster-sizes g.bar")
    assert {c.get_attribute("data-label"): int(c.get_attribute("data-value")) for c in clusters} == manifest["near_dedup"]["cluster_sizes"]
    reasons = browser.find_elements(By.CSS_SELECTOR, "#removals-by-reason g.bar")
    assert sum(int(r.get_attribute("data-value")) for r in reasons) == overall["dropped"] + overall["rejected"] + overall["quarantined"]
    assert "Verified" in browser.find_element(By.ID, "verification").text
    assert json.loads(browser.find_element(By.ID, "run-data").get_attribute("textContent"))["run_id"] == manifest["run_id"]


def test_the_report_needs_no_network(report):
    html = report[0].read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "<script src" not in html and "<link" not in html


def test_the_samples_section_renders_masked_text_and_marked_differences(browser, report):
    from selenium.webdriver.common.by import By

    page, manifest = report
    run = page.parent / "run"
    with_samples = page.with_name("report-samples.html")
    with_samples.write_text(render_report(run, samples=2))
    browser.get(with_samples.as_uri())
    groups = browser.find_elements(By.CSS_SELECTOR, "section.sample-group")
    assert {g.get_attribute("data-decision") for g in groups} == {"dropped_duplicate", "dropped_near_duplicate"}
    removed = browser.find_elements(By.CSS_SELECTOR, "#samples-dropped_near_duplicate pre.diff del, "
                                                     "#samples-dropped_near_duplicate pre.diff ins")
    assert removed and all(e.size["height"] > 0 for e in removed)   # differences really laid out
    texts = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "pre.text"))
    assert "@example.com" not in texts                                  # masked as the run's policy would
    shown = {e.get_attribute("data-record-id") for e in browser.find_elements(By.CSS_SELECTOR, "div.sample")}
    assert not shown & {"web-planted", "images/field-4.png"}          # never a quarantined record
    html = with_samples.read_text()
    assert "https://" not in html and "<script src" not in html
