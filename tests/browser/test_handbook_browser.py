"""The built handbook in a real browser (Debian's headless Chromium, driven by Playwright):
the reference lists every variable, the task page every task, the diagram all eight services,
the search box finds a variable by name, and the wide pages show every table and code block
whole at 1300 px (measured element by element). On a phone (390 px) every page fits the screen:
no sideways page scroll, tables and the diagram scroll inside their own box with a visible cue,
code wraps at spaces and never inside a flag, the diagram's labels stay readable. At both widths
every code block has a copy button that copies it, and the footer names the kit's version.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import functools
import http.server
import os
import re
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
PHONE = 390
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
def browser(site):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    yield page
    page.close()


@pytest.fixture(scope="module")
def phone(browser):
    """A phone-sized page: 390 CSS px wide, as an iPhone 12-15 shows a page."""
    context = browser.new_context(viewport={"width": PHONE, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    yield page
    context.close()


def all_pages() -> list[str]:
    """Every page of the handbook, as its path under the site (the nav of mkdocs.yml, generated pages too)."""
    import yaml

    def walk(entries):
        for entry in entries:
            for value in (entry.values() if isinstance(entry, dict) else [entry]):
                if isinstance(value, list):
                    yield from walk(value)
                else:
                    yield "" if value == "index.md" else value.removesuffix(".md") + "/"

    return list(walk(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]))


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
    page.add_style_tag(content=".rst-content table,.wy-table-responsive,.wide .scroll{overflow:visible!important}"
                               ".rst-content table{display:table!important}.rst-content pre{overflow:visible!important}")
    problems = layout_problems(page.evaluate(MEASURE))
    assert any("past the column" in problem or "clipped" in problem for problem in problems), problems


# ----------------------------------------------------------------------------- every width, every page
# What an operator on a phone (or at a desk) would find broken on a page.
SCREEN = """(width) => {
  const main = document.querySelector('[role=main]');
  const found = {page: Math.max(document.documentElement.scrollWidth, window.innerWidth), window: width, tables: [], blocks: [],
                 diagram: null, footer: (document.querySelector('footer') || {}).innerText || ''};
  for (const table of main.querySelectorAll('table')) {
    const scroller = table.closest('.scroll');
    const wide = table.closest('.wide');
    const hint = wide && wide.querySelector('.scroll-hint');
    found.tables.push({text: table.innerText.slice(0, 50),
      inScroller: !!scroller && ['auto', 'scroll'].includes(getComputedStyle(scroller).overflowX),
      // Sideways overflow of the table or of any box between it and its scroll box: all the reader would miss.
      overflows: [table, ...(function* () { for (let n = table.parentElement; n && n !== wide; n = n.parentElement) yield n; })()]
        .some(n => n.scrollWidth > n.clientWidth + 1),
      cue: !!hint && hint.offsetHeight > 0 && getComputedStyle(hint).display !== 'none'
           && !!scroller && scroller.scrollWidth > scroller.clientWidth + 1,
      right: table.closest('.wide') ? table.closest('.wide').getBoundingClientRect().right : table.getBoundingClientRect().right});
  }
  for (const pre of main.querySelectorAll('pre')) {
    const button = pre.parentElement.querySelector(':scope > .copy-button');
    const box = button && button.getBoundingClientRect();
    const pieces = [...pre.querySelectorAll('.nw')];
    found.blocks.push({text: pre.innerText.slice(0, 60),
      button: !!button && getComputedStyle(button).display !== 'none' && box.width > 0 && box.right <= width,
      split: pieces.filter(p => p.getClientRects().length > 1).map(p => p.textContent).slice(0, 3),
      scrolls: pre.scrollWidth > pre.clientWidth + 1,
      widestPiece: Math.max(0, ...pieces.map(p => p.getBoundingClientRect().width)),
      width: pre.clientWidth, pieces: pieces.length});
  }
  // The theme clips sideways overflow at the body, so a page that is too wide does not scroll: it is
  // cut off. Any element ending past the screen outside a box that scrolls is what a reader loses.
  found.cut = [];
  for (const el of main.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.right <= width + 1) continue;
    let scroller = null;
    for (let node = el.parentElement; node && node !== main; node = node.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(node).overflowX)) { scroller = node; break; }
    }
    if (!scroller && !['auto', 'scroll'].includes(getComputedStyle(el).overflowX)) {
      found.cut.push(`${el.tagName.toLowerCase()} ${(el.innerText || el.textContent || '').slice(0, 40)}`);
    }
  }
  const svg = main.querySelector('svg.architecture');
  if (svg) {
    const name = svg.querySelector('g.service text.name').getBoundingClientRect();
    const scroller = svg.closest('.scroll');
    found.diagram = {nameHeight: name.height, scrollable: !!scroller && getComputedStyle(scroller).overflowX === 'auto',
                     cue: !!svg.closest('.wide') && svg.closest('.wide').classList.contains('scrolls')};
  }
  return found;
}"""


def screen_problems(measured: dict, width: int) -> list[str]:
    problems = []
    if measured["page"] > measured["window"]:
        problems.append(f"the page is wider than the screen: it scrolls sideways or the browser zooms out "
                        f"({measured['page']} px > {measured['window']} px)")
    for element in measured["cut"][:5]:
        problems.append(f"{element!r} ends past the screen, cut off")
    for table in measured["tables"]:
        name = f"table {table['text']!r}"
        if not table["inScroller"]:
            problems.append(f"{name} is not in a box that scrolls sideways")
        elif table["overflows"] and not table["cue"]:
            problems.append(f"{name} is wider than the screen and nothing says it scrolls")
        if table["right"] > measured["window"] + 1:
            problems.append(f"{name} ends past the screen ({table['right']:.0f} px)")
    for block in measured["blocks"]:
        name = f"code block {block['text']!r}"
        if not block["button"]:
            problems.append(f"{name} has no visible copy button")
        if block["split"]:
            problems.append(f"{name} breaks a line inside {block['split']}")
        if block["pieces"] and block["scrolls"] and block["widestPiece"] <= block["width"]:
            problems.append(f"{name} scrolls sideways although its pieces fit: it does not wrap at spaces")
    if not re.search(r"PostHog Compose kit \S", measured["footer"]):
        problems.append(f"the footer does not name the kit's version: {measured['footer']!r}")
    return problems


@pytest.mark.parametrize("path", all_pages())
def test_every_page_works_on_a_phone(site, phone, path):
    phone.goto(f"{site}/{path}")
    phone.wait_for_load_state("load")
    measured = phone.evaluate(SCREEN, PHONE)
    phone.screenshot(path=str(ARTIFACTS / f"phone-{path.strip('/').replace('/', '-') or 'index'}.png"), full_page=True)
    assert screen_problems(measured, PHONE) == []


@pytest.mark.parametrize("path", all_pages())
def test_every_page_works_at_a_desk(site, page, path):
    page.goto(f"{site}/{path}")
    page.wait_for_load_state("load")
    assert screen_problems(page.evaluate(SCREEN, WIDTH), WIDTH) == []


def test_tables_scroll_with_a_cue_on_a_phone(site, phone):
    """The compatibility page's four-column tables do not fit 390 px: they scroll in their box, the cue is shown."""
    phone.goto(f"{site}/compatibility/")
    phone.wait_for_load_state("load")
    tables = phone.evaluate(SCREEN, PHONE)["tables"]
    assert any(t["overflows"] and t["cue"] for t in tables), tables
    phone.screenshot(path=str(ARTIFACTS / "phone-table-cue.png"))


def test_the_diagram_is_readable_on_a_phone(site, phone):
    phone.goto(f"{site}/architecture/")
    phone.wait_for_load_state("load")
    diagram = phone.evaluate(SCREEN, PHONE)["diagram"]
    assert diagram["scrollable"] and diagram["cue"], diagram
    assert diagram["nameHeight"] >= 12, f"service names are {diagram['nameHeight']:.1f} px high at {PHONE} px"
    phone.locator("svg.architecture").screenshot(path=str(ARTIFACTS / "phone-architecture-diagram.png"))


def test_the_copy_button_copies_the_block(site, phone):
    phone.goto(f"{site}/bad-days/")
    phone.wait_for_load_state("load")
    block = phone.locator(".code-block").first
    expected = block.locator("pre").inner_text().rstrip("\n")
    block.locator(".copy-button").click()
    # The label changes once the clipboard has taken the text (a promise), and goes back after 1.5 s:
    # waited for, not read at once (a loaded machine resolves the promise after the click returns).
    from playwright.sync_api import expect

    expect(block.locator(".copy-button")).to_have_text("Copied", timeout=5000)
    assert phone.evaluate("navigator.clipboard.readText()") == expected


def test_the_footer_names_the_version_the_handbook_was_built_from(site, page):
    from posthog_compose.documents.layout import kit_version

    page.goto(f"{site}/")
    assert f"PostHog Compose kit {kit_version(REPO)}" in page.inner_text("footer")


def test_phone_check_sees_what_the_old_stylesheet_did(site, phone):
    """The measurement can fail: with the scroll boxes, the copy buttons and the unbreakable pieces
    undone, a phone reports the page scrolling sideways, the missing buttons and a flag split."""
    phone.goto(f"{site}/bad-days/")
    phone.wait_for_load_state("load")
    phone.add_style_tag(content=".wide .scroll{overflow:visible!important}.copy-button{display:none!important}"
                                ".rst-content .nw{white-space:normal!important}"
                                ".rst-content pre code{word-break:break-all!important}"
                                ".rst-content .wide td,.rst-content .wide th{min-width:16em!important}")
    problems = screen_problems(phone.evaluate(SCREEN, PHONE), PHONE)
    assert any("scrolls sideways (" in p or "past the screen" in p for p in problems), problems
    assert any("no visible copy button" in p for p in problems), problems
    assert any("breaks a line inside" in p for p in problems), problems
