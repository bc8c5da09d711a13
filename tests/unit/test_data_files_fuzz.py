"""Structure-aware fuzzing of the data files an operator edits: start from the real compatibility.yml,
upgrades.yml and variables.yml, then retype, remove, add unknown keys, nest, duplicate and replace any
field with hostile values (or replace the whole text with what YAML itself chokes on). Every reader
either accepts the file or raises an OperatorError of one line naming it, never another exception;
what it accepts reaches the handbook as escaped Markdown and a terminal without control characters."""

from __future__ import annotations

import copy
import functools
import io
import re
from contextlib import redirect_stdout
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import markdown
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings, strategies as st

from posthog_compose.configuration import compatibility, manifest as manifest_module
from posthog_compose.configuration.checks.findings import _Report
from posthog_compose.documents import docs, generate
from posthog_compose.errors import OperatorError
from posthog_compose.operations import upgrade

from ..conftest import REPO

EXTENSIONS = ["attr_list", "admonition", "tables", "toc"]  # mkdocs.yml's markdown_extensions
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])

HOSTILE_TEXT = [
    "", " ", "<script>alert(1)</script>", "| forged | cells |", "[x](javascript:alert(1))", '{: onclick="x"}',
    "`", "``a|b``", "\x1b[2J\x1b]0;title\x07", "line\nbreak\r\n", "\u202eevil", "\x00", "\t", "# heading", "1. item",
    "- item", "> quote", "<!--", "&amp;", "\\", "1.43.0", "1.43", ">=1.0.0", ">=1.0.0,<", "==1.2.3.4",
    ">=" + "9" * 40, "release-1.43.0", "latest-release", "web", "django", "postgresql", "SECRET_KEY",
    "postgres:13.22-alpine", "--check", "${HOME}", "%s%n", "ｗｅｂ", "١.٤٣.٠",
]
UNKNOWN_KEYS = ["extra", "", "a b", "Gates", "__proto__", 1, True, None, "\x1b", "<b>"]
_leaf = st.one_of(
    st.sampled_from(HOSTILE_TEXT), st.text(max_size=20), st.builds(lambda: "<b>long</b>" * 400), st.integers(), st.just(10 ** 40), st.floats(),
    st.none(), st.booleans(), st.dates(), st.binary(max_size=6),
)
hostile = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "id", "range", "1"]), inner, max_size=3)),
    max_leaves=6)
OPERATIONS = ("replace", "retype", "remove", "unknown", "nest", "duplicate")
mutations = st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(OPERATIONS), hostile,
                               st.sampled_from(UNKNOWN_KEYS)), min_size=1, max_size=4)
RAW_TEXTS = [
    b"", b"\n", b"# only comments\n", b"null\n", b"~\n", b"---\n", b"[]\n", b"{}\n", b"- a\n", b"just text\n",
    b"\xff\xfe\x00", b"a: &x [*x]\n", b"a: !!binary aGk=\n", b"a: " + b"1" * 5000 + b"\n", b"[" * 3000,
    b"!!python/object/apply:os.system [true]\n", b"a: b: c\n", b"\t- x\n", b"x: 1\nx: 2\n",
    b"gates: &g [*g]\n", b"rows: &r [*r]\nschema: 1\n",
]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, path + (index,))


def _retyped(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {"item": value}
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return str(value)
    return 0


def mutate(data, steps):
    """Apply each (choice, operation, value, key) step to a node chosen among all of data's nodes."""
    root = {"file": copy.deepcopy(data)}
    for choice, operation, value, key in steps:
        paths = list(_paths(root["file"], ("file",)))
        path = paths[choice % len(paths)]
        parent = root
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        node = parent[last]
        if operation == "replace":
            parent[last] = value
        elif operation == "retype":
            parent[last] = _retyped(node)
        elif operation == "remove":
            if last == "file":
                root["file"] = None
            else:
                del parent[last]
        elif operation == "unknown":
            if isinstance(node, dict):
                node[key] = value
            elif isinstance(node, list):
                node.append(value)
            else:
                parent[last] = {key: value, "value": node}
        elif operation == "nest":
            parent[last] = [node] if choice % 2 else {"value": node}
        elif operation == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(node))
    return root["file"]


def write(root: Path, name: str, data, raw: bytes | None) -> None:
    if raw is not None:
        (root / name).write_bytes(raw)
    else:
        (root / name).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def file_content(name: str):
    base = yaml.safe_load((REPO / name).read_text())
    return st.one_of(
        st.tuples(st.builds(lambda steps: mutate(base, steps), mutations), st.none()),
        st.tuples(st.none(), st.sampled_from(RAW_TEXTS)),
    )


def refused(name: str, exc: OperatorError) -> None:
    """The only way a reader may refuse a file: one line that names it."""
    message = str(exc)
    assert message.startswith(name) and not CONTROL.search(message), repr(message)


def attempt(name: str, reader):
    try:
        return True, reader()
    except OperatorError as exc:
        refused(name, exc)
        return False, None


def _markup(html: str) -> tuple[set, set]:
    tags, links = set(), set()

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.add(tag)
            links.update((tag, name, value) for name, value in attrs if name != "id")

    Collect().feed(html)
    return tags, links


@functools.lru_cache(maxsize=None)
def _baseline(source: str) -> tuple[set, set]:
    """What the real file's page holds (its elements and their links)."""
    real = manifest_module.load(REPO)
    text = {"compatibility": lambda: docs.compatibility_matrix(REPO),
            "environment": lambda: docs.environment_reference(REPO),
            "readme": lambda: generate.render_readme_section(real)}[source]()
    return _markup(markdown.markdown(text, extensions=EXTENSIONS))


def safe_markup(text: str, baseline: str) -> str:
    """The HTML a Markdown text renders to, asserting that no text of a data file turned into markup: no
    element or attribute (other than toc's ids) that the real file's page (``baseline``) lacks."""
    page = markdown.markdown(text, extensions=EXTENSIONS)
    tags, links = _markup(page)
    allowed_tags, allowed_links = _baseline(baseline)
    assert tags <= allowed_tags, tags - allowed_tags
    assert links <= allowed_links, links - allowed_links
    assert not CONTROL.search(page.replace("\n", "")), "a control character reached the page"
    return page


def data_file_findings(root: Path) -> list:
    from posthog_compose.configuration.checks.data_files import _check_data_files

    report = _Report()
    _check_data_files(root, report)
    for finding in report.findings:
        assert not CONTROL.search(finding.text()), repr(finding.text())
    return report.findings


VALUES = manifest_module.load(REPO).defaults()
SERIES = {"POSTHOG_IMAGE": "posthog/posthog:release-1.41.0", "REDIS_IMAGE": "redis:7.0.0", "POSTGRES_IMAGE": "postgres:14"}


# ----------------------------------------------------------------------------- compatibility.yml
@settings(FUZZ, max_examples=150)
@given(content=file_content("compatibility.yml"))
def test_every_reader_of_compatibility_yml_accepts_or_names_the_file(repo, content):
    name = "compatibility.yml"
    write(repo, name, *content)
    loaded, matrix = attempt(name, lambda: compatibility.load(repo))
    rendered, page = attempt(name, lambda: docs.compatibility_matrix(repo))
    findings = [f for f in data_file_findings(repo) if f.file == name]
    assert loaded == rendered == (not findings), (loaded, rendered, findings)
    for values in (VALUES, {**VALUES, **SERIES}):
        for problem in compatibility.problems(values, repo):
            assert not CONTROL.search(problem.text()), repr(problem.text())
        upgraded, lines = attempt(name, lambda: compatibility.upgrade_problems(VALUES, values, repo))
        assert upgraded == loaded and all(not CONTROL.search(line) for line in lines or [])
    event("accepted" if loaded else "refused")
    if not loaded:
        return
    html = safe_markup(page, "compatibility")
    tables = [1 + len(part) for row in matrix.rows for part in (row.accepts, row.pinned, row.reads) if part or
              part is row.reads]
    assert html.count("<table>") == len(tables) and html.count("<tr>") == sum(tables)
    for image in ("posthog/posthog:latest-release", "posthog/posthog:release-1.40.0", "posthog/posthog:abc123"):
        version = compatibility.posthog_version(image, matrix.aliases)
        for service in ("web", "worker", "plugins"):
            matrix.reads(service, version)


# ----------------------------------------------------------------------------- upgrades.yml
class FailingRunner:
    def run(self, *args, **kwargs):
        return SimpleNamespace(returncode=1, stdout="", stderr="not done\x1b[31m")


@settings(FUZZ, max_examples=300)
@given(content=file_content("upgrades.yml"))
def test_every_reader_of_upgrades_yml_accepts_or_names_the_file(deployed, content):
    name = "upgrades.yml"
    write(deployed, name, *content)
    loaded, gates = attempt(name, lambda: upgrade.load_gates(deployed))
    planned, plan = attempt(name, lambda: upgrade.make_plan(deployed, upgrade.Request(to="release-1.43.0")))
    findings = [f for f in data_file_findings(deployed) if f.file == name]
    assert loaded == planned == (not findings), (loaded, planned, findings)
    event("accepted" if loaded else "refused")
    if not loaded:
        return
    crossed = upgrade.applicable_gates(gates, "posthog/posthog:release-0.0.1", "posthog/posthog:abc1234")
    assert crossed == gates
    out = io.StringIO()
    with redirect_stdout(out):
        plan.gates = crossed
        upgrade.print_plan(plan, upgrade.Request(to="release-1.43.0"), dry_run=False)
        try:
            upgrade.check_gates(deployed, FailingRunner(), crossed)
            assert not crossed
        except OperatorError as exc:
            assert "\n" not in str(exc) and not CONTROL.search(str(exc)), repr(str(exc))
    assert not CONTROL.search(out.getvalue().replace("\n", "")), repr(out.getvalue())


# ----------------------------------------------------------------------------- variables.yml
@settings(FUZZ, max_examples=30)  # an accepted manifest renders two large pages: ~0.3 s each
@given(content=file_content("variables.yml"))
def test_every_reader_of_variables_yml_accepts_or_names_the_file(repo, content):
    name = "variables.yml"
    write(repo, name, *content)
    loaded, manifest = attempt(name, lambda: manifest_module.load(repo))
    rendered, page = attempt(name, lambda: docs.environment_reference(repo))
    assert loaded == rendered
    event("accepted" if loaded else "refused")
    if not loaded:
        return
    safe_markup(page, "environment")
    safe_markup(generate.render_readme_section(manifest), "readme")
    generate.render_env_example(manifest)
