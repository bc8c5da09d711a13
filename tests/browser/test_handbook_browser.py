"""The built handbook in a real browser (Debian's headless Chromium, driven by Playwright):
the reference lists every variable, the task page every task, the diagram all eight services,
the search box finds a variable by name, and the wide pages show every table and code block
whole at 1300 px (measured element by element). Screenshots go to test-artifacts/."""

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

from posthog_compose.documents import docs
from tests.conftest import REPO

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
WIDTH = 1300
# The pages with wide tables or long commands, which the theme used to cut off.
WIDE_PAGES = ("hardening", "upgrading", "configuration", "architecture", "reference/tasks",
              "bad-days", "operations", "troubleshooting")
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
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
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
        page = browser.new_page(viewport={"width": WIDTH, "height": 900})
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


# For every table and code block of the page: its own width, its container's, whether it scrolls.
MEASURE = """() => {
  const column = document.querySelector('.wy-nav-content');
  const main = document.querySelector('[role=main]') || column;
  const limit = main.getBoundingClientRect().right + 1;
  const found = [];
  for (const el of document.querySelectorAll('[role=main] table, [role=main] pre, [role=main] code, [role=main] svg')) {
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    const parent = el.parentElement.getBoundingClientRect();
    let scroller = null;
    for (let node = el; node && node !== main; node = node.parentElement) {
      const overflow = getComputedStyle(node).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { scroller = node; break; }
    }
    found.push({
      tag: el.tagName.toLowerCase(), text: (el.innerText || el.textContent || '').slice(0, 60),
      width: box.width, right: box.right, parentRight: parent.right, limit: limit,
      scrollWidth: el.scrollWidth, clientWidth: el.clientWidth,
      scrolls: scroller !== null && scroller.scrollWidth > scroller.clientWidth + 1,
      scrollable: scroller !== null,
    });
  }
  return {column: column.getBoundingClientRect().width, page: document.documentElement.scrollWidth,
          window: window.innerWidth, elements: found};
}"""


def layout_problems(measured: dict) -> list[str]:
    """What an operator would see cut off: a table or code block wider than its container
    without a scroll container, a table that needs scrolling at all, the page scrolling sideways."""
    problems = []
    if measured["page"] > measured["window"]:
        problems.append(f"the page scrolls sideways ({measured['page']} px > {measured['window']} px)")
    for el in measured["elements"]:
        name = f"{el['tag']} {el['text']!r}"
        if el["right"] > el["limit"] and not el["scrollable"]:
            problems.append(f"{name} ends at {el['right']:.0f} px, past the column ({el['limit']:.0f} px)")
        if el["scrollWidth"] > el["clientWidth"] + 1 and not el["scrollable"]:
            problems.append(f"{name} is clipped: {el['scrollWidth']} px of content in {el['clientWidth']} px")
        if el["tag"] == "table" and (el["scrolls"] or el["right"] > el["limit"]):
            problems.append(f"{name} does not wrap: it needs sideways scrolling at {WIDTH} px")
    return problems


@pytest.mark.parametrize("path", WIDE_PAGES)
def test_wide_pages_show_every_table_and_code_block_whole(site, page, path):
    page.goto(f"{site}/{path}/")
    measured = page.evaluate(MEASURE)
    page.screenshot(path=str(ARTIFACTS / f"wide-{path.replace('/', '-')}.png"), full_page=True)
    tags = {el["tag"] for el in measured["elements"]}
    assert tags & {"table", "pre", "svg"} or path == "troubleshooting", f"{path}: nothing wide measured: {tags}"
    # The content column is no longer fixed at 800 px: at 1300 px it takes what the sidebar leaves.
    assert measured["column"] > 900, measured["column"]
    assert layout_problems(measured) == []


def test_layout_check_sees_the_old_theme_clip_tables(site, page):
    """The measurement can fail: with the theme's one-line cells and 800 px column back, the
    hardening table is reported."""
    page.goto(f"{site}/hardening/")
    page.add_style_tag(content=".wy-nav-content{max-width:800px!important}"
                               ".rst-content table td,.rst-content table th{white-space:nowrap!important}")
    problems = layout_problems(page.evaluate(MEASURE))
    assert any("does not wrap" in problem for problem in problems), problems
    page.add_style_tag(content=".rst-content table,.wy-table-responsive{overflow:visible!important}"
                               ".rst-content table{display:table!important}.rst-content pre{overflow:visible!important}")
    problems = layout_problems(page.evaluate(MEASURE))
    assert any("past the column" in problem or "clipped" in problem for problem in problems), problems
