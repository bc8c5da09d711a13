"""The handbook's tables that list code are computed from that code when the handbook is built:
config-check's rules (ids and severities read from the checks' source, see
posthog_compose/documents/rules.py) on the Configuration page, and every task with its first
docstring line (from the Invoke collection in tasks.py) on the home page and the task reference.
A rule added to a check, a severity changed, a task's docstring edited: the next build shows it,
and a rule nobody explained fails the build."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from posthog_compose.documents import docs, rules
from tests.conftest import REPO


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=root, capture_output=True, text=True, timeout=120)


def handbook_copy(target: Path) -> Path:
    for name in ("docs", "posthog_compose", "mkdocs.yml", "variables.yml", "compatibility.yml", "tasks.py",
                 "docker-compose.yml"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target / name,
                                                               **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                                  if source.is_dir() else {}))
    return target


def checks_copy(target: Path) -> Path:
    shutil.copytree(REPO / rules.SOURCE, target / rules.SOURCE, ignore=shutil.ignore_patterns("__pycache__"))
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("site")
    result = build(REPO, directory)
    assert result.returncode == 0, result.stderr
    return directory


def table_rows(page_html: str) -> list[list[str]]:
    """Each <tr>'s cells as text."""
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", page_html, re.S):
        cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        rows.append([html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in cells])
    return rows


# ----------------------------------------------------------------------------- config-check rules
def test_every_rule_of_the_checks_is_explained_and_no_other():
    assert rules.problems(REPO) == []


def test_the_scan_reads_both_ways_a_check_reports():
    found = rules.scan(REPO)
    assert len(found) >= 50, sorted(found)
    assert found["env-missing"] == {"error"}            # report.error("env-missing", ...)
    assert found["shell-override"] == {"warning"}       # report.warning(...)
    assert found["compatibility"] == {"error", "warning"}  # Problem("warning", "compatibility", ...)
    assert found["consistency"] == {"error", "warning"}


def test_the_configuration_page_lists_every_rule_with_its_severity(site):
    page = (site / "configuration" / "index.html").read_text()
    assert rules.RULES_MARKER not in page
    listed = {row[0]: row[1] for row in table_rows(page) if len(row) == 3 and row[0] != "Rule"}
    expected = {rule: " or ".join(s for s in ("error", "warning") if s in severities)
                for rule, severities in rules.scan(REPO).items()}
    assert listed == expected


def test_a_new_rule_or_severity_shows_and_an_unexplained_rule_fails(tmp_path):
    root = checks_copy(tmp_path)
    env = root / rules.SOURCE / "checks" / "env.py"
    text = env.read_text()
    assert 'report.warning("shell-override"' in text
    env.write_text(text.replace('report.warning("shell-override"', 'report.error("shell-override"'))
    assert "| `shell-override` | error |" in rules.rule_table(root)
    env.write_text(text + '\n\ndef _probe(report):\n    report.error("probe-rule", ".env", None, "X", "message", "fix")\n')
    with pytest.raises(ValueError, match="`probe-rule` has no meaning"):
        rules.rule_table(root)
    env.write_text(text + '\n\ndef _probe(report, rule):\n    report.error(rule, ".env", None, "X", "message", "fix")\n')
    with pytest.raises(ValueError, match="must be a literal string"):
        rules.scan(root)


def test_an_unexplained_rule_fails_the_build(tmp_path):
    root = handbook_copy(tmp_path / "copy")
    env = root / rules.SOURCE / "checks" / "env.py"
    env.write_text(env.read_text() + '\n\ndef _probe(report):\n    report.error("probe-rule", ".env", None, "X", "m", "f")\n')
    result = build(root, tmp_path / "site")
    assert result.returncode != 0 and "probe-rule" in result.stderr


# ----------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("page", ["index.html", "reference/tasks/index.html"])
def test_the_task_tables_list_every_task_with_its_first_docstring_line(site, page):
    text = (site / page).read_text()
    assert docs.TASK_TABLE_MARKER not in text
    rows = {row[0].split(" (")[0]: row[1] for row in table_rows(text) if len(row) == 2 and row[0].startswith("invoke ")}
    collection = docs.load_collection(REPO)
    assert set(rows) == {f"invoke {name}" for name in collection.task_names}
    for name in collection.task_names:
        assert rows[f"invoke {name}"] == docs.first_line(collection[name]).replace("`", ""), name


def test_a_changed_docstring_shows_on_the_next_build(tmp_path):
    root = handbook_copy(tmp_path / "copy")
    tasks = root / "tasks.py"
    text = tasks.read_text()
    assert '"""Show service logs, or only their errors with --errors."""' in text
    tasks.write_text(text.replace('"""Show service logs, or only their errors with --errors."""',
                                  '"""Logs, as rewritten by a test."""'))
    result = build(root, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    rows = table_rows((tmp_path / "site" / "index.html").read_text())
    assert ["invoke logs", "Logs, as rewritten by a test."] in rows


def readme_task_names(readme: str) -> set[str]:
    """The tasks the README's task table names: `invoke NAME ...`, and `NAME` after a ` / `."""
    table = readme[readme.index("## Tasks"):readme.index("## Environment Variables")]
    rows = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `")]
    names = set()
    for row in rows:
        for cell in re.findall(r"`([^`]+)`", row):
            words = cell.split()
            names.add(words[1] if words[0] == "invoke" and len(words) > 1 else words[0])
    return names


def test_the_readme_task_table_names_every_task():
    # The README's table is written by hand (its rows say more than a docstring's first line); this
    # keeps it whole: a new task that the README does not mention fails here.
    collection = docs.load_collection(REPO)
    missing = sorted(set(collection.task_names) - readme_task_names((REPO / "README.md").read_text(encoding="utf-8")))
    assert not missing, f"README.md's task table does not name: {', '.join(missing)}"


def test_the_readme_task_table_reader_sees_a_missing_row():
    readme = "## Tasks\n| `invoke up` / `status` | x |\n| `invoke backup` / `restore ARCHIVE` | y |\n## Environment Variables\n"
    assert readme_task_names(readme) == {"up", "status", "backup", "restore"}
