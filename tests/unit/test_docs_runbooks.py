"""Bad days opens with an index by symptom, and every runbook of the page is reachable from it.

An operator on a bad day knows what they see, not which procedure applies: the table at the top of
docs/bad-days.md maps a symptom to a likely cause and a runbook. Each runbook (a `##` heading with an
id) must be a row of that table, and the runbooks the handbook promises must exist. Their commands
are checked with the rest of the handbook's (tests/unit/test_docs_commands.py)."""

from __future__ import annotations

import re

from tests.conftest import REPO

PAGE = REPO / "docs" / "bad-days.md"
# The runbooks the handbook promises (the situations an SRE meets first).
REQUIRED = ("clickhouse-after-a-crash", "clickhouse-replica-metadata", "events-not-arriving", "host-loss",
            "rollback-failed", "restore-after-upgrade", "full-disk", "leaked-secret")
HEADING = re.compile(r"^## .*\{#([a-z0-9-]+)\}\s*$", re.M)


def symptom_index(text: str) -> tuple[str, list[str]]:
    """The index section's text and the anchors its table links to on this page."""
    match = re.search(r"^## By symptom \{#by-symptom\}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "docs/bad-days.md has no `## By symptom {#by-symptom}` section before the runbooks"
    rows = [line for line in match.group(1).splitlines() if line.startswith("| ") and "---" not in line]
    return match.group(1), [anchor for row in rows[1:] for anchor in re.findall(r"\]\(#([a-z0-9-]+)\)", row)]


def runbooks(text: str) -> list[str]:
    return [anchor for anchor in HEADING.findall(text) if anchor != "by-symptom"]


def missing_from_index(text: str) -> list[str]:
    _, linked = symptom_index(text)
    return [anchor for anchor in runbooks(text) if anchor not in linked] + \
        [anchor for anchor in linked if anchor not in runbooks(text)]


def test_the_index_comes_first_and_reaches_every_runbook():
    text = PAGE.read_text(encoding="utf-8")
    first_heading = re.search(r"^## .*$", text, re.M).group(0)
    assert first_heading.startswith("## By symptom"), first_heading
    assert missing_from_index(text) == []
    for anchor in REQUIRED:
        assert anchor in runbooks(text), f"no runbook #{anchor} on Bad days"


def test_every_index_row_names_a_symptom_a_cause_and_a_runbook():
    section, _ = symptom_index(PAGE.read_text(encoding="utf-8"))
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].split("|")[1:4] == [" What you see ", " Likely cause ", " Runbook "], rows[0]
    for row in rows[1:]:
        cells = row.strip().strip("|").split("|")
        assert len(cells) == 3 and cells[0].strip() and "](" in cells[2], row


def test_the_check_finds_a_runbook_left_out_of_the_index():
    text = PAGE.read_text(encoding="utf-8") + "\n## A new bad day {#new-bad-day}\n\nText.\n"
    assert missing_from_index(text) == ["new-bad-day"]
    text = PAGE.read_text(encoding="utf-8").replace("(#host-loss)", "(#host-lost)")
    assert set(missing_from_index(text)) == {"host-loss", "host-lost"}
