"""The built pages' markup for small screens (posthog_compose/documents/layout.py): tables and the
diagram in a box that scrolls sideways with a cue, code that wraps only at spaces, a copy button on
every code block, and the kit's version in the footer. The browser test measures the result at
390 px and 1300 px; these check the markup itself, fast."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata

from posthog_compose.documents import layout
from tests.conftest import REPO


def test_code_blocks_get_a_copy_button_and_break_only_between_pieces():
    html = '<pre><code class="language-bash">invoke compose -- run --rm --no-deps clickhouse &amp;&amp; x\n  y</code></pre>'
    out = layout.for_small_screens(html)
    assert out.startswith('<div class="code-block"><button type="button" class="copy-button"')
    assert '<span class="nw">--no-deps</span> <span class="nw">clickhouse</span>' in out
    assert '<span class="nw">&amp;&amp;</span>' in out  # an entity is never cut in two
    assert "\n  <span class=\"nw\">y</span>" in out  # indentation and line breaks stay as written
    assert re.sub(r"<[^>]+>", "", out).replace("Copy", "", 1) == re.sub(r"<[^>]+>", "", html)


def test_inline_code_keeps_flags_whole_and_long_pieces_breakable():
    url = "https://" + "a" * 60 + ".example.com/"
    out = layout.for_small_screens(f"<p>Run <code>invoke up --no-wait</code> or open <code>{url}</code>.</p>")
    assert '<code><span class="nw">invoke</span> <span class="nw">up</span> <span class="nw">--no-wait</span></code>' in out
    assert f"<code>{url}</code>" in out


def test_tables_and_the_diagram_sit_in_a_scroll_box_with_a_cue():
    out = layout.for_small_screens('<table><tr><td>a</td></tr></table><p><svg x="1" class="architecture"><g/></svg></p>')
    assert out.count('class="scroll-hint"') == 2
    assert '<div class="scroll table-scroll" tabindex="0" role="region"' in out
    assert '<div class="scroll diagram-scroll" tabindex="0" role="region"' in out
    assert "<p><svg" not in out  # the diagram's box replaces the paragraph around it


def test_kit_version_names_the_package_and_the_checkout(tmp_path):
    package = metadata.version(layout.PACKAGE)
    assert layout.kit_version(tmp_path) == package  # no checkout: the installed package's version
    if (REPO / ".git").exists() and shutil.which("git"):
        described = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=REPO,
                                   capture_output=True, text=True).stdout.strip()
        assert layout.kit_version(REPO) == f"{package} (git {described})"


def test_every_built_page_shows_the_version_and_wraps_its_tables(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    version = layout.kit_version(REPO)
    for page in site.rglob("index.html"):
        text = page.read_text()
        if "404" in page.parts:
            continue
        assert f"PostHog Compose kit {version}" in text, page
        assert text.count("<table") == text.count('class="scroll table-scroll"'), page
        assert text.count("<pre") == text.count('class="copy-button"'), page
    assert (site / "js" / "handbook.js").exists()
