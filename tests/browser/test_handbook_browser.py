"""The built handbook in a real browser (Debian's headless Chromium, driven by Playwright):
the reference lists every variable, the task page every task, the diagram all eight services,
and the search box finds a variable by name. Screenshots go to test-artifacts/."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from posthog_compose import docs
from tests.conftest import REPO

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    directory = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(directory)], cwd=REPO,
                   check=True, capture_output=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def page(site):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


def test_reference_lists_every_variable(site, page, manifest):
    page.goto(f"{site}/reference/environment/")
    text = page.inner_text("body")
    for variable in manifest.variables:
        assert variable.name in text, variable.name
    page.screenshot(path=str(ARTIFACTS / "reference-environment.png"))


def test_task_page_lists_every_task(site, page):
    page.goto(f"{site}/reference/tasks/")
    headings = page.locator("h2").all_inner_texts()
    for name in docs.load_collection(REPO).task_names:
        assert any(f"invoke {name}" in heading for heading in headings), name
    page.screenshot(path=str(ARTIFACTS / "reference-tasks.png"), full_page=True)


def test_diagram_shows_all_eight_services(site, page):
    page.goto(f"{site}/architecture/")
    diagram = page.locator("svg.architecture")
    assert diagram.is_visible()
    names = diagram.locator("g.service text.name").all_text_contents()
    assert sorted(names) == sorted(["db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins"])
    box = diagram.bounding_box()
    assert box["width"] > 400 and box["height"] > 300
    diagram.screenshot(path=str(ARTIFACTS / "architecture-diagram.png"))


def test_search_box_finds_a_variable_by_name(site, page):
    page.goto(f"{site}/")
    page.fill("input[name=q]", "CLICKHOUSE_MAX_MEMORY_USAGE")
    page.keyboard.press("Enter")
    page.wait_for_url("**/search.html?q=*")
    results = page.locator("#mkdocs-search-results")
    results.locator("a").first.wait_for(timeout=15000)
    links = results.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert any("reference/environment" in (href or "") for href in links), links
    page.screenshot(path=str(ARTIFACTS / "search.png"))
