"""The data files an operator edits (compatibility.yml, upgrades.yml, variables.yml): each is checked
against its schema before any use, a violation is one line naming the file, the field's path and the
fix; an empty file is an error; their text is escaped wherever it is shown (the handbook, a terminal)."""

from __future__ import annotations

import io
import os
import re
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import markdown
import pytest
import yaml

from posthog_compose.configuration import compatibility, manifest as manifest_module
from posthog_compose.configuration.checks.findings import _Report
from posthog_compose.configuration.formats import markdown_inline
from posthog_compose.documents import docs
from posthog_compose.errors import OperatorError
from posthog_compose.operations import upgrade

from ..conftest import REPO

EXTENSIONS = ["attr_list", "admonition", "tables", "toc"]  # mkdocs.yml's markdown_extensions
HOSTILE_MARKUP = '<script>alert(1)</script> | [x](javascript:alert(1)) {: onclick="x"} <img src=x onerror=y>'


def _data(name: str):
    return yaml.safe_load((REPO / name).read_text())


def _write(root: Path, name: str, data) -> Path:
    (root / name).write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return root


def _one_line_error(load, root: Path) -> str:
    with pytest.raises(OperatorError) as excinfo:
        load(root)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- one line: file, path, fix
GATE_FIX = "correct that field (the handbook's Upgrading page, section Upgrade gates, describes the file)"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["gates"][2].update(version=["1", "40"]),
     f"upgrades.yml: gates[2].version: expected a version like 1.43.0, got a list; {GATE_FIX}"),
    (lambda d: d["gates"][0].update(version=1.33),
     f"upgrades.yml: gates[0].version: expected a version like 1.43.0, got the number 1.33; {GATE_FIX}"),
    (lambda d: d["gates"][1].update(check="python manage.py run_async_migrations --check"),
     "upgrades.yml: gates[1].check: expected a command as a list of arguments, e.g. [python, manage.py, "
     "run_async_migrations, --check], got 'python manage.py run_async_migrations --...'; " + GATE_FIX),
    (lambda d: d["gates"][1].update(check=["python", "manage.py\x00"]),
     r"upgrades.yml: gates[1].check[1]: expected a command argument (text without control characters), got "
     r"'manage.py\x00'; " + GATE_FIX),
    (lambda d: d["gates"][3].pop("instructions"),
     "upgrades.yml: gates[3]: the required field `instructions` is missing; add it (the handbook's Upgrading "
     "page, section Upgrade gates, describes the file)"),
    (lambda d: d["gates"][0].update(instruction="typo"),
     "upgrades.yml: gates[0].instruction: unknown field; remove it or correct its spelling (known fields: id, "
     "version, check, requires, instructions, service)"),
    (lambda d: d["gates"][3].update(id=d["gates"][1]["id"]),
     "upgrades.yml: gates[3].id: 'async-migration-0004-before-1.37' repeats gates[1].id; give each entry its own id"),
    (lambda d: d.update(gates={"id": "x"}),
     f"upgrades.yml: gates: expected a list of gates, got a mapping; {GATE_FIX}"),
    (lambda d: d.update(gates=None),
     f"upgrades.yml: gates: expected a list of gates, got nothing (null); {GATE_FIX}"),
])
def test_a_wrong_gate_is_one_line_naming_the_file_the_field_and_the_fix(repo, mutate, expected):
    data = _data("upgrades.yml")
    mutate(data)
    _write(repo, "upgrades.yml", data)
    assert _one_line_error(upgrade.load_gates, repo) == expected


COMPAT_FIX = "correct that field (the comment at the top of compatibility.yml describes every field)"


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["rows"][0]["accepts"]["redis"].update(range=[5, 6]),
     "compatibility.yml: rows[0].accepts.redis.range: expected a version range such as >=11.0.0,<=14.1.0 "
     f"(clauses of >=, <=, >, <, == and a version, separated by commas), got a list; {COMPAT_FIX}"),
    (lambda d: d["rows"][1].update(posthog="from 1.36 on"),
     "compatibility.yml: rows[1].posthog: expected a version range such as >=11.0.0,<=14.1.0 (clauses of >=, <=, "
     f">, <, == and a version, separated by commas), got 'from 1.36 on'; {COMPAT_FIX}"),
    (lambda d: d["rows"][0]["accepts"].update(mysql={"range": ">=8.0.0", "source": "x"}),
     "compatibility.yml: rows[0].accepts.mysql: unexpected key 'mysql': expected one of postgresql, redis, "
     f"clickhouse as keys; {COMPAT_FIX}"),
    (lambda d: d["rows"][0]["pinned"]["redis"].pop("image"),
     "compatibility.yml: rows[0].pinned.redis: the required field `image` is missing; add it (the comment at "
     "the top of compatibility.yml describes every field)"),
    (lambda d: d["rows"][0]["reads"]["django"].update(names="SECRET_KEY"),
     f"compatibility.yml: rows[0].reads.django.names: expected a list, got 'SECRET_KEY'; {COMPAT_FIX}"),
    (lambda d: d["posthog_tag_aliases"].update({"latest-release": 1.43}),
     "compatibility.yml: posthog_tag_aliases.latest-release: expected a release version such as 1.43.0, got the "
     f"number 1.43; {COMPAT_FIX}"),
    (lambda d: d.update(rows=[]),
     f"compatibility.yml: rows: expected at least 1 entry, got an empty list; {COMPAT_FIX}"),
    (lambda d: d.update(schema="1"),
     "compatibility.yml: schema: expected 1 (the only version of this file these tasks read), got '1'; "
     + COMPAT_FIX),
])
def test_a_wrong_matrix_is_one_line_naming_the_file_the_field_and_the_fix(repo, mutate, expected):
    data = _data("compatibility.yml")
    mutate(data)
    _write(repo, "compatibility.yml", data)
    assert _one_line_error(compatibility.load, repo) == expected


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["variables"][0].update(category=["Database"]),
     "variables.yml: variables[0].category: expected a category name, got a list; correct that field"),
    (lambda d: d["variables"][3].update(derive=5),
     "variables.yml: variables[3].derive: expected a template such as postgres://{POSTGRES_USER}@db, got the "
     "number 5; correct that field"),
    (lambda d: d["variables"][0].update({1: 2}), "variables.yml: variables[0][1]: unknown field; remove it"),
    (lambda d: d["categories"][0].update(description=["x"]),
     "variables.yml: categories[0].description: expected text, got a list; correct that field"),
])
def test_a_wrong_manifest_is_one_line_naming_the_field(repo, mutate, expected):
    data = _data("variables.yml")
    mutate(data)
    _write(repo, "variables.yml", data)
    assert _one_line_error(manifest_module.load, repo).startswith(expected)


# ----------------------------------------------------------------------------- empty is an error
@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n", "null\n", "~\n", "---\n"])
@pytest.mark.parametrize("name, load", [("upgrades.yml", upgrade.load_gates), ("compatibility.yml", compatibility.load)])
def test_an_empty_data_file_is_an_error_not_no_gates(repo, text, name, load):
    _write(repo, name, text)
    assert _one_line_error(load, repo).startswith(f"{name}: is empty (no data: only comments, blanks or null); "
                                                  f"restore it with `git checkout -- {name}`")


def test_a_missing_gates_file_is_an_error_and_an_explicit_empty_list_the_way_to_say_none(repo):
    (repo / "upgrades.yml").unlink()
    assert _one_line_error(upgrade.load_gates, repo) == (
        "upgrades.yml is missing (without it no upgrade gate is checked); restore it: git checkout -- upgrades.yml")
    _write(repo, "upgrades.yml", "# none, on purpose\ngates: []\n")
    assert upgrade.load_gates(repo) == []


def test_an_upgrade_stops_on_an_empty_gates_file_before_anything_changes(deployed):
    env_before = (deployed / ".env").read_text()
    _write(deployed, "upgrades.yml", "# truncated by an editor\n")
    with pytest.raises(OperatorError, match=r"^upgrades\.yml: is empty"):
        upgrade.make_plan(deployed, upgrade.Request(to="release-1.43.0"))
    assert (deployed / ".env").read_text() == env_before


# ----------------------------------------------------------------------------- what YAML itself can throw
@pytest.mark.parametrize("name, load", [("upgrades.yml", upgrade.load_gates), ("compatibility.yml", compatibility.load),
                                        ("variables.yml", manifest_module.load)])
@pytest.mark.parametrize("content, expected", [
    (b"gates: " + b"1" * 5000 + b"\n", r"is not usable YAML \(a number too long to read\)"),
    (b"gates: caf\xe9\n", "is not UTF-8 text"),
])
def test_what_the_yaml_parser_refuses_is_one_line(repo, name, load, content, expected):
    (repo / name).write_bytes(content)
    message = _one_line_error(load, repo)
    assert re.match(rf"{re.escape(name)}: {expected}", message), message


def test_a_directory_in_place_of_a_data_file_is_one_line(repo):
    (repo / "upgrades.yml").unlink()
    (repo / "upgrades.yml").mkdir()
    assert _one_line_error(upgrade.load_gates, repo).startswith("upgrades.yml: cannot be read")


def test_an_edit_within_one_clock_tick_is_not_hidden_by_the_cache(repo):
    path = repo / "compatibility.yml"
    assert compatibility.load(repo).rows[0].label == "release-1.43.0"
    stat = path.stat()
    data = _data("compatibility.yml")
    data["rows"][0]["label"] = "relabelled"
    _write(repo, "compatibility.yml", data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same mtime as the first read
    assert compatibility.load(repo).rows[0].label == "relabelled"


# ----------------------------------------------------------------------------- every reader checks first
def test_config_check_names_the_data_file_and_the_field(repo):
    from posthog_compose.configuration.checks.data_files import _check_data_files

    data = _data("upgrades.yml")
    data["gates"][0]["version"] = ["1", "33"]
    _write(repo, "upgrades.yml", data)
    _write(repo, "compatibility.yml", "# emptied\n")
    report = _Report()
    _check_data_files(repo, report)
    texts = [finding.text() for finding in report.findings]
    assert texts == [
        "error   compatibility.yml is empty (no data: only comments, blanks or null). Fix: restore it with "
        "`git checkout -- compatibility.yml` (the comment at the top of compatibility.yml describes every field)",
        f"error   upgrades.yml gates[0].version: expected a version like 1.43.0, got a list. Fix: {GATE_FIX}",
    ]


def test_the_real_config_check_reports_a_broken_gates_file(repo):
    from posthog_compose.configuration import checks

    data = _data("upgrades.yml")
    data["gates"][1]["chek"] = "typo"
    _write(repo, "upgrades.yml", data)
    findings = [f for f in checks.collect(repo, environ={"PATH": os.environ["PATH"]}) if f.file == "upgrades.yml"]
    assert [(f.severity, f.subject, f.message) for f in findings] == [("error", "gates[1].chek", "unknown field")]


def test_the_handbook_refuses_a_broken_matrix_with_the_same_line(repo):
    data = _data("compatibility.yml")
    data["rows"][0]["pinned"]["postgresql"]["why"] = {"because": "x"}
    _write(repo, "compatibility.yml", data)
    assert _one_line_error(docs.compatibility_matrix, repo) == (
        f"compatibility.yml: rows[0].pinned.postgresql.why: expected text, got a mapping; {COMPAT_FIX}")


# ----------------------------------------------------------------------------- escaped where shown
def _markup(page: str) -> tuple[set, set]:
    """The elements and attributes an HTML page holds (what text could have smuggled in)."""
    from html.parser import HTMLParser

    tags, attributes = set(), set()

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            attributes.update((name, value) for name, value in attrs)

    Collect().feed(page)
    return tags, attributes


def test_the_matrix_text_reaches_the_handbook_escaped(repo):
    real = markdown.markdown(docs.compatibility_matrix(REPO), extensions=EXTENSIONS)
    assert "<td>14.1 is the ceiling" in real and "\\" not in real  # escaping leaves ordinary text as it was
    data = _data("compatibility.yml")
    row = data["rows"][0]
    row["label"] = "# <b>bold</b>"
    row["period"] = "1. [click](javascript:alert(1))"
    row["accepts"]["redis"]["source"] = HOSTILE_MARKUP
    row["accepts"]["redis"]["note"] = "line one\n| forged | row | here | too |"
    row["pinned"]["redis"]["why"] = "<iframe src=x>"
    row["reads"]["django"]["source"] = "`code | with pipe` and <em>html</em>"
    row["carried"]["ENCRYPTION_SALT_KEYS"] = "{#anchor} <svg onload=x>"
    _write(repo, "compatibility.yml", data)
    page = markdown.markdown(docs.compatibility_matrix(repo), extensions=EXTENSIONS)
    tags, attributes = _markup(page)
    assert tags <= {"p", "h3", "table", "thead", "tbody", "tr", "th", "td", "code"}, tags
    assert all(name == "id" and "anchor" not in value for name, value in attributes), attributes  # toc's ids only
    first_table = page.split("<table>")[1]
    assert first_table.count("<tr>") == 4  # the header and three datastores: no forged row
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;iframe src=x&gt;" in page


def test_a_number_at_the_start_of_a_cell_is_escaped_without_showing_a_backslash():
    for text, shown in (("14.1 is the ceiling", "14.1 is the ceiling"), ("3) three", "3) three")):
        assert markdown.markdown(markdown_inline(text)) == f"<p>{shown}</p>"


def test_gate_text_reaches_the_terminal_as_one_line_without_control_characters(repo):
    data = _data("upgrades.yml")
    data["gates"][3]["requires"] = "migrations done\x1b[2J\x1b]0;pwned\x07"
    data["gates"][3]["instructions"] = "Step one.\nStep two.\x1b[31m red\u202e"
    _write(repo, "upgrades.yml", data)
    gates = upgrade.applicable_gates(upgrade.load_gates(repo), "posthog/posthog:release-1.41.0",
                                     "posthog/posthog:release-1.43.0")
    runner = SimpleNamespace(run=lambda *a, **k: SimpleNamespace(returncode=1, stdout="", stderr="boom\x1b[1m"))
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(OperatorError) as excinfo:
        upgrade.check_gates(repo, runner, gates)
    for text in (out.getvalue().rstrip("\n"), str(excinfo.value)):
        assert "\n" not in text and not re.search(r"[\x00-\x1f\x7f\u202e]", text), repr(text)
    assert str(excinfo.value).endswith(r"Step one. Step two.\x1b[31m red\u202e")


def test_matrix_text_reaches_the_terminal_without_control_characters(repo):
    data = _data("compatibility.yml")
    data["rows"][0]["label"] = "release-1.43.0\x1b[2J"
    _write(repo, "compatibility.yml", data)
    values = {"POSTHOG_IMAGE": "posthog/posthog:release-1.43.0", "REDIS_IMAGE": "redis:7.0.0"}
    lines = compatibility.upgrade_problems(values, values, repo)
    assert lines and all(not re.search(r"[\x00-\x1f\x7f]", line) for line in lines), lines
