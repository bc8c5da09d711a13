"""Values cross into XML, SQL, shell and YAML as data, never as syntax (the Caddyfile has its own
module, test_crossings_caddy.py). Each property generates values full of the target language's
delimiters and judges the PARSED result with a real parser of that language:

- XML: ClickHouse parses a from_env value as XML (and its image writes CLICKHOUSE_PASSWORD into a users
  file): config-check refuses the value, or the text ClickHouse reads is exactly the value (expat, as
  ClickHouse's Poco uses).
- SQL: PostgreSQL's own parser (libpg_query, through pglast) reads ALTER ROLE as one statement for
  exactly that role, and the migration's verification SQL as one SELECT per table, naming exactly it.
- shell: no compose file pastes a value into a script (Compose would interpolate it), every variable a
  script expands is double-quoted, and the kit itself runs no shell.
- YAML: what add-env-var writes into variables.yml and docker-compose.yml reads back as exactly the
  values given."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings, strategies as st
from pglast import keywords
from pglast.parser import parse_sql_json

from posthog_compose.configuration import checks, envvars, manifest as manifest_module, yamledit
from posthog_compose.configuration.checks.clickhouse_xml import _check_clickhouse_xml, from_env_names
from posthog_compose.configuration.checks.env import _check_values
from posthog_compose.configuration.envfile import EnvFile
from posthog_compose.configuration.formats import text_problem
from posthog_compose.errors import OperatorError
from posthog_compose.operations import bootstrap, rotation
from posthog_compose.operations.migrate.servers import checksum_sql, count_sql
from tests.conftest import REPO, copy_repository, set_env

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)
STRONG = "Zq8xT2vB9mK4pLw7R"  # so that a secret is judged by the XML rule, not refused as weak


# Printable text without white space: values that reach the rule under test rather than a simpler one.
PRINTABLE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn")), max_size=6)


def hostile(delimiters: list[str], text=TEXT):
    return st.lists(st.one_of(st.sampled_from(delimiters), text), min_size=1, max_size=6).map("".join)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = copy_repository(tmp_path_factory.mktemp("deployment"))
    bootstrap.init(root, manifest_module.load(root))
    return root


# ----------------------------------------------------------------------------- XML
XML_MARKUP = ["<", ">", "&", "'", '"', "]]>", "<![CDATA[", "&lt;", "&#0;", "&amp;", "<!--", "-->", "<?pi?>", "</password>",
              "<x/>", "</from_env><from_env>", "]]", "]>"]
# White space is refused by the password's own format: half the values go without it, to reach the XML rule.
XML = st.one_of(hostile(XML_MARKUP, PRINTABLE), hostile(XML_MARKUP + ["\x01", "\x0b", "\r", "\n", " ", "\t", "\ufffe"]))


def clickhouse_reads(value: str) -> list[str | None]:
    """The password ClickHouse ends with for ``value``, both ways it reads it (None: it would not start):
    users.xml's from_env (ConfigProcessor parses `<from_env>VALUE</from_env>` and moves what it finds into
    the element) and the image's entrypoint (`<password>VALUE</password>` written into a users file). Poco
    reads an element's value as the text of everything inside it."""
    read = []
    for document in (f"<from_env>{value}</from_env>", f"<clickhouse><users><default><password>{value}</password>"
                                                      "</default></users></clickhouse>"):
        try:
            root = ElementTree.fromstring(document)
        except ElementTree.ParseError:
            read.append(None)
            continue
        element = root if root.tag == "from_env" else root.find("users/default/password")
        read.append("".join(element.itertext()))
    return read


def refused_by_config_check(root, values: dict[str, str], name: str) -> bool:
    report = checks._Report()
    env = EnvFile.load(root / ".env")
    _check_values(manifest_module.load(root), env, values, report)
    _check_clickhouse_xml(root, manifest_module.load(root), None, report, values, env.line_of)
    return any(f.severity == "error" and f.subject == name for f in report.findings)


@settings(max_examples=100, **SETTINGS)
@given(name=st.one_of(st.just("CLICKHOUSE_PASSWORD"), st.sampled_from(from_env_names(REPO))), value=XML)
@example(name="CLICKHOUSE_PASSWORD", value="]]>")  # before: accepted, and ClickHouse would not start
@example(name="CLICKHOUSE_PASSWORD", value="\x01")
def test_config_check_refuses_a_from_env_value_or_clickhouse_reads_exactly_it(deployment, name, value):
    value = STRONG + value if name == "CLICKHOUSE_PASSWORD" else value
    values = EnvFile.load(deployment / ".env").resolved()
    if refused_by_config_check(deployment, {**values, name: value}, name):
        event("refused by config-check")
        return
    event("accepted: judged by the XML parser")
    assert clickhouse_reads(value) == [value, value]


def test_the_password_clickhouse_reads_from_users_xml_is_the_value():
    # The emulation above reads the element users.xml really has.
    element = ElementTree.parse(REPO / "clickhouse" / "users.xml").getroot().find("users/default/password")
    assert element.get("from_env") == "CLICKHOUSE_PASSWORD"


def test_a_password_xml_cannot_read_is_refused(deployment):
    """Before: `]]>` passed config-check, and ClickHouse would not start (its config is not XML then)."""
    set_env(deployment, CLICKHOUSE_PASSWORD=STRONG + "]]>" + STRONG)
    try:
        findings = [f for f in checks.collect(deployment, environ={}) if f.severity == "error"]
    finally:
        set_env(deployment, CLICKHOUSE_PASSWORD=STRONG + "-" + STRONG)
    assert [(f.rule, f.subject) for f in findings] == [("clickhouse-from-env", "CLICKHOUSE_PASSWORD")]
    assert "]]>" in findings[0].message and STRONG not in findings[0].text()


def test_markup_in_a_password_from_the_shell_is_refused(deployment, monkeypatch):
    """Before: a warning only, and `<x/>` would have left ClickHouse's user with an empty password."""
    set_env(deployment, CLICKHOUSE_PASSWORD=STRONG + "-" + STRONG)
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "<x/>" + STRONG)
    findings = [f for f in checks.collect(deployment) if f.severity == "error"]
    assert [(f.rule, f.subject) for f in findings] == [("clickhouse-from-env", "CLICKHOUSE_PASSWORD")]
    assert "reaches ClickHouse" in findings[0].message and STRONG not in findings[0].text()


# ----------------------------------------------------------------------------- SQL
SQL = hostile(["'", '"', "\\", "$$", "$a$", ";", "--", "/*", "*/", "\n", "\r", " ", "E'", "U&", "%", "?", "\\'"])
SCRAM_RE = re.compile(r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+")


def statements(sql: str) -> list[dict]:
    """PostgreSQL's parse of ``sql``: one {node type: node} per statement."""
    return [entry["stmt"] for entry in json.loads(parse_sql_json(sql))["stmts"]]


@settings(max_examples=80, **SETTINGS)
@given(user=SQL.filter(lambda u: 0 < len(u.encode()) <= 63), password=SQL)
def test_alter_role_is_one_statement_for_exactly_that_role(user, password):
    sql = rotation.alter_role_sql(user, password)
    [statement] = statements(sql)
    role = statement["AlterRoleStmt"]["role"]["rolename"]
    [option] = statement["AlterRoleStmt"]["options"]
    assert role == user
    assert option["DefElem"]["defname"] == "password" and SCRAM_RE.fullmatch(option["DefElem"]["arg"]["String"]["sval"])


def test_a_role_name_with_a_nul_is_refused_in_one_line():
    # psql would cut the statement at the NUL (before: the SQL was built and sent as it was).
    with pytest.raises(OperatorError, match="NUL"):
        rotation.alter_role_sql("post\x00gres", "s3cret-password")


def quote_ident(name: str) -> str:
    """PostgreSQL's quote_ident: bare when a lower-case word that is not a keyword (unreserved ones
    aside), else double-quoted with every double quote doubled."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", name) and name not in (
            keywords.RESERVED_KEYWORDS | keywords.COL_NAME_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS):
        return name
    return '"' + name.replace('"', '""') + '"'


NAME = st.one_of(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), SQL).filter(
    lambda n: 0 < len(n.encode()) <= 63)


@settings(max_examples=60, **SETTINGS)
@given(tables=st.lists(st.tuples(NAME, NAME), min_size=1, max_size=4))
def test_the_verification_sql_names_exactly_the_tables_the_server_listed(tables):
    names = [f"{quote_ident(schema)}.{quote_ident(table)}" for schema, table in tables]
    for sql in (count_sql(names), checksum_sql(names)):
        parsed = statements(sql)
        # Literals mean what they say on any server, whatever its standard_conforming_strings.
        assert parsed[0]["VariableSetStmt"]["name"] == "standard_conforming_strings"
        assert parsed[0]["VariableSetStmt"]["args"][0]["A_Const"]["sval"]["sval"] == "on"
        selects = [s["SelectStmt"] for s in parsed if "SelectStmt" in s]
        assert len(selects) == len(names) and all("SelectStmt" in s or "VariableSetStmt" in s for s in parsed)
        for select, name, (schema, table) in zip(selects, names, tables):
            assert {"sval": name} in list(nodes(select, "sval"))
            assert [(r["schemaname"], r["relname"]) for r in nodes(select, "RangeVar")] == [(schema, table)]


def nodes(tree, kind: str):
    """Every node of ``kind`` in a parse tree (as JSON), depth first."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == kind:
                yield value
            yield from nodes(value, kind)
    elif isinstance(tree, list):
        for item in tree:
            yield from nodes(item, kind)


@settings(max_examples=60, **SETTINGS)
@given(name=SQL)
def test_a_table_name_not_written_by_quote_ident_is_refused(name):
    assume(not re.fullmatch(r'(?:[a-z_][a-z0-9_]*|"(?:[^"]|"")+")\.(?:[a-z_][a-z0-9_]*|"(?:[^"]|"")+")', name))
    for build in (count_sql, checksum_sql):
        with pytest.raises(OperatorError, match="quote_ident"):
            build(["public.posthog_team", name])


# ----------------------------------------------------------------------------- shell
class _ComposeLoader(yaml.SafeLoader):
    pass


_ComposeLoader.add_multi_constructor("!", lambda loader, suffix, node: None)  # Compose's !reset and !override


def shell_scripts():
    """(file, service, script) for every script a compose file hands to a shell."""
    for path in sorted(REPO.glob("docker-compose*.yml")):
        services = (yaml.load(path.read_text(), Loader=_ComposeLoader) or {}).get("services") or {}
        for service, body in services.items():
            for key in ("entrypoint", "command"):
                words = body.get(key)
                if isinstance(words, list):
                    for index, word in enumerate(words[:-2]):
                        if str(word).rsplit("/", 1)[-1] in ("sh", "bash") and words[index + 1] == "-c":
                            yield path.name, service, str(words[index + 2])
            test = (body.get("healthcheck") or {}).get("test")
            if isinstance(test, list) and test[:1] == ["CMD-SHELL"]:
                yield path.name, service, str(test[1])


def unquoted_expansions(script: str) -> list[str]:
    """The variables ``script`` expands outside double quotes (where the shell splits and globs them)."""
    found, quote, index = [], "", 0
    while index < len(script):
        char = script[index]
        if char == "\\" and quote != "'":
            index += 2
            continue
        if char in "'\"" and quote in ("", char):
            quote = "" if quote else char
        elif char == "$" and quote == "":
            match = re.match(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", script[index:])
            if match:
                found.append(match.group(1))
        index += 1
    return found


def test_no_compose_file_pastes_a_value_into_a_shell_script():
    scripts = list(shell_scripts())
    assert len(scripts) >= 8  # db, redis, zookeeper, worker, proxy ... (the walk finds them)
    variables = set(manifest_module.load(REPO).by_name)
    for name, service, script in scripts:
        # Compose interpolates ${NAME} and $NAME into the text; $$ reaches the shell as $.
        assert "$" not in script.replace("$$", ""), f"{name} {service}: Compose pastes a value into: {script}"
        unquoted = set(unquoted_expansions(script.replace("$$", "$"))) & variables
        assert not unquoted, f"{name} {service}: {sorted(unquoted)} expanded outside double quotes"


def test_the_kit_hands_no_value_to_a_shell():
    source = "\n".join(p.read_text() for p in sorted((REPO / "posthog_compose").rglob("*.py")))
    for pattern in (r"\bshell\s*=\s*True", r"os\.system\(", r"os\.popen\(", r'"(?:ba)?sh",\s*"-c"'):
        assert not re.search(pattern, source), pattern


# ----------------------------------------------------------------------------- YAML
YAML_ONE_LINE = [": ", "#", " #", "- ", "? ", "'", '"', "&anchor", "*anchor", "!!python/object", "!tag", "{", "}", "[",
                 "]", ",", "|", ">", "%", "@", "`", "\\", "---", "...", "<<: *a", "\t", "null", "~", "yes", "0x1F"]
# Line breaks are refused by add-env-var: most values go without them, to reach the YAML parser.
YAML = st.one_of(hostile(YAML_ONE_LINE, PRINTABLE), hostile(YAML_ONE_LINE, PRINTABLE), hostile(YAML_ONE_LINE + ["\n", "\r", "\x85", "\u2028"]))


@settings(max_examples=80, **SETTINGS)
@given(description=YAML, production=YAML, example=YAML)
def test_the_manifest_entry_add_env_var_writes_reads_back_as_the_values(description, production, example):
    if any(text_problem(text) for text in (description, production, example)) or not description.strip():
        event("refused by add-env-var (a line break or control character)")
        return
    request = envvars.Request(name="NEW_VAR", description=description, category="PostHog App", services=["web"],
                              example=example, production=production)
    [entry] = yaml.safe_load(envvars._manifest_entry(request, "\n"))
    assert (entry["description"], entry["default"]) == (description.strip(), example)
    assert entry.get("production") == (production or None) and entry["name"] == "NEW_VAR"


@settings(max_examples=30, **SETTINGS)
@given(name=st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True), service=st.sampled_from(["web", "db", "worker"]))
def test_the_compose_entry_add_env_var_writes_is_exactly_that_variable(name, service):
    text = (REPO / "docker-compose.yml").read_text()
    before = yaml.load(text, Loader=_ComposeLoader)
    assume(name not in (before["services"][service].get("environment") or {}))
    after = yaml.load(yamledit.add_environment_entry(text, service, name), Loader=_ComposeLoader)
    environment = dict(after["services"][service]["environment"])
    assert environment.pop(name) == f"${{{name}}}"
    assert environment == (before["services"][service].get("environment") or {})
    after["services"][service].pop("environment")
    before["services"][service].pop("environment", None)
    assert after == before
