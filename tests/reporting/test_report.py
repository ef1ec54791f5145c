"""The Snakemake report of the offline run, opened in headless Chromium: it renders, figures and all, without console errors;
and so does its zip form (``--report report.zip``, for large runs), unzipped.

Chromium and its driver are Debian's (chromium, chromium-driver), installed with apt-get under
CI=true when missing (a failure if that fails), skipped elsewhere when they cannot be installed.
"""

from __future__ import annotations

import time
import zipfile

import pytest
from PIL import Image

from system_programs import require
from workflow_runs import snakemake

BROWSER, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def report(pipeline_run, tmp_path_factory, request):
    workdir, config = pipeline_run.result(request.node.nodeid)
    out = tmp_path_factory.mktemp("report") / "report.html"
    done = snakemake(workdir, "--configfile", str(config), "--cores", "1", "--report", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stderr


@pytest.fixture(scope="module")
def zip_report(pipeline_run, tmp_path_factory, request):
    """The offline run's report as a zip, unzipped as a reader does: the path of its report.html."""
    workdir, config = pipeline_run.result(request.node.nodeid)
    out = tmp_path_factory.mktemp("zip_report")
    done = snakemake(workdir, "--configfile", str(config), "--cores", "1", "--report", str(out / "report.zip"))
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(out / "report.zip") as archive:
        archive.extractall(out / "unzipped")
    return out / "unzipped" / "report" / "report.html"


@pytest.fixture(scope="module")
def browser():
    require(("chromium", "chromium-driver"), ("chromium", "chromedriver"), "the report test's headless browser")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.mark.workflow
def test_every_marked_figure_and_table_is_in_the_report(report, finished_run):
    html, log = report
    text = html.read_text()
    workdir = finished_run[0]
    # Each per-task figure of the run, the summary figures and tables, and the study figures.
    for figure in sorted((workdir / "results" / "figures").rglob("*.png")):
        assert f"Adding {figure.name}" in log, figure
    assert "Adding best_layers.tsv" in log and "Adding across_tasks.tsv" in log and "Adding resources.tsv" in log
    assert "plmexit: how deep do you need to go?" in text  # the workflow description on the front page
    # Self-contained: every figure is embedded (base64 PNGs start with iVBORw0KGgo), nothing is linked.
    assert text.count("iVBORw0KGgo") >= len(list((workdir / "results" / "figures").rglob("*.png")))


def shown_png_widths(browser) -> list[int]:
    """Natural widths of the PNGs the page shows, fully loaded."""
    script = "return Array.from(document.images).filter(i => i.src.startsWith('data:image/png') && i.complete).map(i => i.naturalWidth)"
    return browser.execute_script(script)


@pytest.mark.workflow
@pytest.mark.browser
def test_the_report_renders_in_chromium_with_its_figures_and_no_console_errors(report, browser, tmp_path):
    html, _ = report
    browser.get(html.as_uri())
    browser.implicitly_wait(10)
    body = browser.find_element("tag name", "body").text
    assert "plmexit: how deep do you need to go?" in body, body[:500]  # the front page
    for category in ("Across models", "Across tasks", "Depth and early exit", "Depth diagnostics", "Early exit", "Per model and task", "Tables"):
        assert category in body, category
    # Open a figure as a reader does: its category, then the eye beside its first entry.
    for category, shots in (("Across tasks", "across_tasks"), ("Across models", "across_models"), ("Depth and early exit", "depth_exit")):
        browser.get(html.as_uri())
        browser.find_element("link text", category).click()
        browser.find_element("css selector", "a[iconname=eye]").click()
        time.sleep(1)
        assert any(width >= 1000 for width in shown_png_widths(browser)), category  # our figures are 300 dpi
        shot = tmp_path / f"{shots}.png"
        assert browser.save_screenshot(str(shot))
        image = Image.open(shot).convert("L")
        assert image.size[0] >= 1000 and image.size[1] >= 700, image.size
        low, high = image.getextrema()
        assert high - low > 100, f"the screenshot of {category} is blank"
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


@pytest.mark.workflow
@pytest.mark.browser
def test_the_zip_report_unzipped_renders_in_chromium_with_its_figures_and_no_console_errors(zip_report, browser):
    browser.get_log("browser")  # what the page before this one logged
    browser.get(zip_report.as_uri())
    browser.implicitly_wait(10)
    body = browser.find_element("tag name", "body").text
    assert "plmexit: how deep do you need to go?" in body, body[:500]
    for category in ("Across models", "Across tasks", "Per model and task", "Tables"):
        assert category in body, category
    # The figures are files beside report.html (data/), not embedded: one opens at full resolution.
    browser.find_element("link text", "Across tasks").click()
    browser.find_element("css selector", "a[iconname=eye]").click()
    time.sleep(1)
    script = "return Array.from(document.images).filter(i => i.complete && i.src.endsWith('.png')).map(i => i.naturalWidth)"
    assert any(width >= 1000 for width in browser.execute_script(script))
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
