"""One validator per kind of value: `migrate-datastore --to` refuses exactly what config-check would refuse
in DATABASE_URL after the switch, for the same reason; a number, a port and a host name are read the same
way by config-check's formats, the external-datastore rules, the command line and the probes; and no value,
however long or in whatever digits, makes any of them fail with Python's own error.
"""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.cli import whole_number as cli_whole_number
from posthog_compose.configuration import datastores, formats, manifest as manifest_module
from posthog_compose.configuration.checks.env import _check_values
from posthog_compose.configuration.checks.findings import _Report
from posthog_compose.errors import OperatorError
from posthog_compose.operations import migrate
from tests.conftest import REPO

CA = "/etc/posthog/datastore-ca"


class _NoLines:
    def line_of(self, name):
        return None


def config_check_refusals(root, values: dict[str, str]) -> list[str]:
    """What config-check reports as errors about DATABASE_URL for these values: the format of the
    manifest's variable and the external-datastore rules, the two rule sets that judge it."""
    report = _Report()
    variable = manifest_module.load(REPO).by_name["DATABASE_URL"]
    _check_values(SimpleNamespace(variables=[variable]), _NoLines(), values, report)
    datastores.check(root, _NoLines(), values, report)
    return [f.message for f in report.findings if f.severity == "error" and f.subject == "DATABASE_URL"]


def migrate_refusals(root, url: str, values: dict[str, str]) -> list[str]:
    try:
        target = migrate.parse_target(url)
    except OperatorError as exc:
        return [exc.message]
    return migrate.target_problems(root, target, values)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from tests.unit.test_migrate_datastore import ca_text

    folder = tmp_path_factory.mktemp("validators")
    shutil.copy(REPO / "variables.yml", folder / "variables.yml")
    (folder / "datastore-ca").mkdir()
    (folder / "datastore-ca" / "ca.crt").write_text(ca_text())
    (folder / "datastore-ca" / "notpem.crt").write_text("hello")
    return folder


# ----------------------------------------------------------------------------- URLs: hostile and valid
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
# Each part of a URL is a good one or, one time in four, a hostile one: a URL with every part hostile is
# refused at its first part, and the later rules would go untried.
USERINFO = (
    st.sampled_from(["posthog:pw", "app:S3cret-pw"]) |
    st.builds(lambda user, password: f"{quote(user, safe='')}:{quote(password, safe='')}", TEXT.filter(bool), TEXT),
    st.none() | st.sampled_from([
        "u", ":pw", "u:p@w", "u:p/w", "u:p?w", "u:p%zz", "u:p%40w", "u:p w", "u:p#w", "us\u00e9r:p\u00e4ss", "u:p\tw",
        "u:\u3000pw", "u:p$w", "u:p'w", "u:p%2Fw"]) | st.builds(lambda user, password: f"{user}:{password}", TEXT, TEXT),
)
HOST = (
    st.sampled_from(["pg.example.com", "PG.Example.COM", "10.0.0.5", "[2001:db8::1]", "xn--bcher-kva.example"]) |
    st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}\Z"),
    st.sampled_from(["db", "redis", "proxy", "localhost", "127.0.0.1", "127.9.9.9", "0.0.0.0", "[::1]", "[zz::1]",
                     "[2001:db8::1", "", "ho_st", "a,b", "b\u00fccher.example", "-bad.example", "a" * 64 + ".com",
                     "pg.example.com.", "pg..example.com"]),
)
PORT = (
    st.none() | st.sampled_from(["5432", "1", "65535"]) | st.integers(1, 65535).map(str),
    st.sampled_from(["0", "65536", "99999", "-1", "+5432", " 5432", "5432 ", "", "\u0665\u0664\u0663\u0662",
                     "\uff15\uff14\uff13\uff12", "\u00b2", "1" * 25, "54x", "0x10"]),
)
PATH = (
    st.sampled_from(["/posthog", "/p%20g"]) | TEXT.filter(str.strip).map(lambda name: "/" + quote(name, safe="")),
    st.sampled_from(["", "/", "/a=b", "/a/b", "/%zz", "/ posthog", "/p%2Fg", "/%20"]),
)
SSLMODE = st.sampled_from(["verify-full", "verify-full", "verify-ca", "require", "disable", "prefer", "no-verify",
                           "VERIFY-FULL", ""])
ROOTCERT = st.sampled_from([f"{CA}/ca.crt", f"{CA}/ca.crt", "../etc/posthog/datastore-ca/ca.crt", f"{CA}/missing.crt",
                            f"{CA}/notpem.crt", f"{CA}/ca.crt%zz"])
PARAMETER = (
    st.builds(lambda value: f"sslmode={value}", SSLMODE) | st.builds(lambda value: f"sslrootcert={value}", ROOTCERT) |
    st.sampled_from(["connect_timeout=10", "application_name=posthog", "options=-c%20statement_timeout%3D0",
                     "target_session_attrs=read-write"]),
    st.sampled_from(["keepalives=1", "host=evil.example", "passfile=/x", "foo=bar", "SSLMODE=verify-full", "sslmode",
                     "=x", "a=b=c", "sslmode=verify-full ", "sslmode=%zz"]),
)
SCHEME = (st.sampled_from(["postgres", "postgresql"]), st.sampled_from(["POSTGRES", "postgis", "mysql", "http", ""]))


def _part(draw, choices):
    good, hostile = choices
    return draw(hostile if draw(st.sampled_from([False, False, False, True])) else good)


@st.composite
def urls(draw) -> str:
    userinfo, host, port = _part(draw, USERINFO), _part(draw, HOST), _part(draw, PORT)
    parameters = [_part(draw, PARAMETER) for _ in range(draw(st.integers(0, 4)))]
    if draw(st.sampled_from([True, True, False])):  # most URLs ask for verified TLS, so the rules after TLS are reached
        parameters[:0] = ["sslmode=verify-full", f"sslrootcert={draw(ROOTCERT)}"]
    query = "&".join(parameters) if parameters or draw(st.booleans()) else None
    url = (f"{_part(draw, SCHEME)}://{userinfo + '@' if userinfo is not None else ''}{host}"
           f"{':' + port if port is not None else ''}{_part(draw, PATH)}{'?' + query if query is not None else ''}")
    if draw(st.sampled_from([False] * 5 + [True])):
        url += draw(st.sampled_from(["#frag", " ", "\t", "\n", "\u00a0", " \u3000", "\u2028"]))
    return url


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=urls(), allowed=st.sampled_from(["true", "false"]))
def test_migrate_datastore_refuses_what_config_check_refuses_after_the_switch_for_the_same_reason(root, url, allowed):
    """The value migrate-datastore writes is the --to URL without its surrounding white space, with
    POSTGRES_MODE=external. Whatever config-check says about that .env, the task says before it, in the
    same words; and what it accepts, config-check accepts."""
    values = {"ALLOW_PLAINTEXT_DATASTORES": allowed}
    written = url.strip()
    after_switch = {**values, "POSTGRES_MODE": "external", "DATABASE_URL": written}
    config_check = config_check_refusals(root, after_switch) if written else ["is empty"]
    task = migrate_refusals(root, url, values)
    assert bool(config_check) == bool(task), (config_check, task)
    if config_check and written:
        assert task[0].startswith(f"--to {config_check[0]}"), (config_check, task)
    assert all("\n" not in line for line in task)


@pytest.mark.parametrize("url, reason", [
    ("postgres://u:p@pg.example.com/d?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt&keepalives=1",
     "has the parameter 'keepalives'"),
    ("postgres://u:p@w@pg.example.com/d?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt",
     "has '@' in the user or password"),
    ("postgres://u:p@pg.example.com:\uff15\uff14\uff13\uff12/d?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt",
     "has the port"),
    ("postgres://u:p@localhost/d?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt",
     "points at localhost"),
    ("postgres://u:p@pg.example.com/d?sslmode=no-verify", "has sslmode=no-verify"),
])
def test_config_check_itself_reports_these_reasons(tmp_path, url, reason):
    """The rules above are config-check's: the real `checks.collect` on a deployment reports the same."""
    from posthog_compose.configuration import checks
    from posthog_compose.configuration.envfile import EnvFile, env_path
    from tests.conftest import copy_repository
    from tests.unit.test_migrate_datastore import ca_text

    copy_repository(tmp_path)
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    (tmp_path / ".env").chmod(0o600)
    (tmp_path / "datastore-ca").mkdir(exist_ok=True)
    (tmp_path / "datastore-ca" / "ca.crt").write_text(ca_text())
    env = EnvFile.load(env_path(tmp_path))
    env.set("POSTGRES_MODE", "external")
    env.set("DATABASE_URL", url)
    env_path(tmp_path).write_text(env.render())
    found = [f.message for f in checks.collect(tmp_path, environ={"PATH": os.environ["PATH"]})
             if f.severity == "error" and f.subject == "DATABASE_URL"]
    assert found and found[0].startswith(reason), found
    assert migrate_refusals(tmp_path, url, {})[0].startswith(f"--to {found[0]}")


# ----------------------------------------------------------------------------- numbers, ports, host names
NUMBER_TEXT = st.one_of(
    st.text(max_size=8),
    st.from_regex(r"\A[0-9]{1,25}\Z"),
    st.sampled_from(["\u0665", "\uff15", "\u00b2", "1_000", " 5", "5 ", "+5", "-5", "0x10", "1e3", "", "0",
                     "9223372036854775807", "9223372036854775808", "0" * 30 + "7"]),
)


@settings(max_examples=400, deadline=None)
@given(text=NUMBER_TEXT)
def test_a_number_is_read_the_same_way_everywhere(text):
    from posthog_compose.configuration import validators

    number = validators.whole_number(text)
    if number is not None:
        assert text.isascii() and int(text) == number <= validators.MAX_WHOLE_NUMBER
    assert (formats.problem("integer", text) is None) == (number is not None)
    port_ok = number is not None and 1 <= number <= 65535
    assert (formats.problem("port", text) is None) == port_ok
    # A list's entries may have white space around them (`kafka:9092, kafka2:9092`): both readers strip it.
    if "," not in text and ":" not in text:
        entry_ok = validators.port_number(text.rstrip()) is not None
        assert (formats.problem("host-port-list", f"kafka:{text}") is None) == entry_ok
        assert (datastores.kafka_endpoints({"KAFKA_HOSTS": f"kafka:{text}"})[0].port is not None) == entry_ok
    if text == text.strip():
        try:
            assert cli_whole_number("--timeout", text) == number
        except OperatorError as exc:
            assert number is None and "\n" not in exc.message
    # A URL with white space anywhere is refused as a whole before its port is read (its own test).
    if text and all(c not in text for c in "/?#@[]:,") and not any(c.isspace() for c in text) and text.isprintable():
        url = f"postgres://u:p@pg.example.com:{text}/d"
        parsed = None
        try:
            parsed = migrate.parse_target(url)
        except OperatorError as exc:
            assert not port_ok and "port" in exc.message
        assert (parsed is not None) == port_ok
        assert (datastores.postgres_endpoint({"DATABASE_URL": url}).port == number) == port_ok


@pytest.mark.parametrize("name, value", [
    ("WEB_PORT", "1" * 5000), ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1" * 5000), ("LOG_MAX_FILE", "1" * 5000),
    ("LOG_MAX_SIZE", "1" * 400), ("KAFKA_HOSTS", "kafka:" + "1" * 5000), ("SITE_URL", "https://h:" + "1" * 5000),
])
def test_a_number_of_thousands_of_digits_is_a_finding_not_a_crash(tmp_path, name, value):
    """Python's int() refuses strings of more than 4,300 digits with its own ValueError: each check reads
    numbers through the one helper, which refuses them as too large."""
    from posthog_compose.configuration import checks, logrotation
    from tests.conftest import set_env

    root = tmp_path / "deployment"
    root.mkdir()
    from tests.conftest import copy_repository

    copy_repository(root)
    shutil.copy(REPO / ".env.example", root / ".env")
    (root / ".env").chmod(0o600)
    set_env(root, **{name: value})
    findings = checks.collect(root, environ={"PATH": os.environ["PATH"]})
    assert any(f.subject == name and f.severity == "error" for f in findings), [f.text() for f in findings]
    assert logrotation.parse_size("1" * 400 + "B") is None
    with pytest.raises(OperatorError):
        cli_whole_number("--timeout", "1" * 5000)


@pytest.mark.parametrize("value, accepted", [
    ("https://posthog.example.com", True), ("https://posthog.example.com:8443", True),
    ("https://posthog.example.com:0", False), ("https://posthog.example.com:99999", False),
    ("https://posthog.example.com:\uff18\uff14\uff14\uff13", False), ("https://[2001:db8::1]:443", True),
])
def test_site_url_ports_are_read_by_the_port_validator(value, accepted):
    assert (formats.problem("url", value) is None) == accepted


@pytest.mark.parametrize("value", ["clickhouse", "ch.example.com", "10.0.0.5", "ch_1", "b\u00fccher.example",
                                   "-ch", "ch.", "a" * 64, ""])
def test_a_host_name_is_one_rule_for_clickhouse_kafka_and_the_urls(value):
    from posthog_compose.configuration import validators

    ok = validators.is_hostname(value)
    assert (formats.problem("hostname", value) is None) == ok
    assert (formats.problem("host-port-list", f"{value}:9092") is None) == ok
    url = f"postgres://u:p@{value}/d"
    assert (validators.postgres_url_problem(url) is None) == ok
    assert (validators.redis_url_problem(f"rediss://:p@{value}:6379/0") is None) == ok


def test_doctor_names_the_validators_reason_for_an_address_it_cannot_read(tmp_path):
    """doctor probes what config-check accepts: a DATABASE_URL the validator refuses is not probed at the
    host Python's urlsplit would guess, it is named with config-check's reason."""
    from posthog_compose.operations import doctor

    values = {"POSTGRES_MODE": "external",
              "DATABASE_URL": "postgres://u:pass@word@pg.example.com/d?sslmode=verify-full"}
    check = doctor.probe(tmp_path, values, datastores.postgres_endpoint(values), timeout=1)
    assert check.status == "error" and "DATABASE_URL has '@' in the user or password" in check.detail
    assert "pass@word" not in check.detail


@pytest.mark.parametrize("url", ["redis://Secret_pw/", "redis://pw:Secret-port/", "redis://[Secret]/"])
def test_a_redis_url_without_user_info_never_echoes_what_may_be_its_password(url):
    """Without an @, what stands where the host is may be a password that lost its @: the reason names the
    part, not its text."""
    from posthog_compose.configuration import validators

    reason = validators.redis_url_problem(url)
    assert reason and "Secret" not in reason


@settings(max_examples=200, deadline=None)
@given(password=st.text(alphabet="ab@/:%?#4", min_size=0, max_size=8), tls=st.booleans())
def test_harden_reads_redis_url_as_config_check_does(password, tls):
    """harden's password item passes only for a REDIS_URL config-check accepts (before, urllib read a
    password that config-check refuses, e.g. one with an unencoded @)."""
    from pathlib import Path

    from posthog_compose.configuration import validators
    from posthog_compose.operations.harden import external
    from posthog_compose.operations.harden.checklist import State

    url = f"{'rediss' if tls else 'redis'}://:{password}@cache.example.com:6379/0"
    state = State(root=Path("."), values={"REDIS_URL": url}, findings=[], override=None, template="", published={})
    verdict = external._external_redis_password(state)[0]
    accepted = validators.redis_url_problem(url) is None
    assert verdict == ("pass" if accepted and validators.parse_redis_url(url).password else "fail"), url
