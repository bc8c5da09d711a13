"""`invoke migrate-datastore` without an engine: the target URL's checks (with hypothesis), the refusals, the
preflight, the command lines (the target's settings only in the child's environment, never on a command
line), the verification, the switch and the ways back, and a REAL SIGKILL at every named step followed by
the next task's recovery. The fake engine below answers psql, pg_dump and pg_restore the way the real
tools do (JSON rows, a dump file, a listing); the SQL itself is proven against real PostgreSQL by the
end-to-end test of the migration."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose import journal
from posthog_compose.operations import migrate
from posthog_compose.operations import engine as engine_module
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from tests.conftest import REPO, run_invoke

PASSWORD = "Ext3rnal-Pa55word-xyz"


@functools.lru_cache(maxsize=1)
def ca_text() -> str:
    """A real CA certificate (the kit's own CA code), as a provider would hand it out."""
    import tempfile

    from posthog_compose.configuration import certs

    with tempfile.TemporaryDirectory() as folder:
        certs.cert_dir(Path(folder)).mkdir(mode=0o700)
        certs.make_ca(Path(folder), "managed")
        return certs.paths(Path(folder), certs.CA_NAME)[0].read_text()


URL = (f"postgres://posthog_app:{PASSWORD}@pg.example.com:5432/posthog?sslmode=verify-full"
       f"&sslrootcert=/etc/posthog/datastore-ca/ca.crt")
FAKE_COMPOSE = "fakecompose"
TABLES = {"public.posthog_team": 3, "public.posthog_user": 2, 'public."Weird|Name"': 0, "public.posthog_event": 7}


# ----------------------------------------------------------------------------- the fake engine
class FakeProcess:
    def __init__(self, code=0, stdout=b"", stderr=b""):
        self.returncode = code
        self.stdout_bytes = stdout
        self.stderr = io.BytesIO(stderr)
        self.stdin = None

    def wait(self, timeout=None):
        return self.returncode

    def poll(self):
        return self.returncode

    def kill(self):
        pass

    def communicate(self, timeout=None):
        return self.stdout_bytes, self.stderr.read()


class FakeEngine:
    """A `db` container with a local database and a reachable target, answering like the real tools."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.calls: list[tuple[list[str], dict, str | None]] = []
        self.running = {"db": True, "redis": True, "clickhouse": True, "zookeeper": True, "kafka": True,
                        "web": True, "worker": True, "plugins": True}
        self.local = {"version": 130022, "size": 8_000_000, "user": "posthog", "create": True, "relations": 9,
                      "examples": "public.posthog_team", "encoding": "UTF8", "extensions": ["pg_trgm"],
                      "available": ["pg_trgm", "plpgsql"]}
        self.target = {"version": 130022, "size": 7_000_000, "user": "posthog_app", "create": True, "relations": 0,
                       "examples": None, "encoding": "UTF8", "extensions": [],
                       "available": ["pg_trgm", "plpgsql", "postgis"]}
        self.restored = False
        self.target_counts: dict[str, int] = {}
        self.target_md5: dict[str, str] = {}
        self.target_error = ""  # stderr of every psql against the target
        self.restore_error = b""
        self.start_failure = ""  # raised when the stack starts on the external PostgreSQL

    # -- what the runner runs
    def run(self, runner, cmd, input):
        extra = {k: v for k, v in (runner.env or {}).items() if k.startswith("PG")}
        self.calls.append((list(cmd), extra, input))
        args = cmd[3:]
        if args[0] == "stop":
            for name in args[3:]:
                self.running[name] = False
            return subprocess.CompletedProcess(cmd, 0, "", "")
        if args[0] == "exec":
            side = "target" if "-e" in args else "local"
            if side == "target" and self.target_error:
                return subprocess.CompletedProcess(cmd, 2, "", self.target_error)
            return subprocess.CompletedProcess(cmd, 0, self.answer(side, input or ""), "")
        raise AssertionError(f"unexpected command {cmd}")

    def popen(self, runner, cmd, **kwargs):
        extra = {k: v for k, v in (runner.env or {}).items() if k.startswith("PG")}
        self.calls.append((list(cmd), extra, None))
        program = cmd[cmd.index("db") + 1]
        if program == "pg_dump":
            os.write(kwargs["stdout"], b"PGDMP fake custom-format dump")
            return FakeProcess()
        if program == "pg_restore" and "--list" in cmd:
            assert kwargs["stdin"].read().startswith(b"PGDMP")
            return FakeProcess(stdout=b";\n; Archive\n210; 1259 16385 TABLE public posthog_team posthog\n")
        if program == "pg_restore":
            assert kwargs["stdin"].read().startswith(b"PGDMP")
            if self.restore_error:
                return FakeProcess(1, stderr=self.restore_error)
            self.restored = True
            return FakeProcess()
        raise AssertionError(f"unexpected process {cmd}")

    # -- psql's answers (one JSON object per row, as the SQL asks)
    def answer(self, side: str, script: str) -> str:
        if "server_version_num" in script:
            found = dict(self.local if side == "local" else self.target)
            if side == "target" and self.restored:
                found["relations"] = 9
            return json.dumps(found) + "\n"
        tables = TABLES if side == "local" or self.restored else {}
        if "'table', name" in script:
            return "".join(json.dumps({"table": t}) + "\n" for t in sorted(tables))
        named = [t.replace("''", "'") for t in re.findall(r"json_build_object\('table', '((?:[^']|'')*)'", script)]
        if "'rows'" in script:
            counts = {**tables, **(self.target_counts if side == "target" else {})}
            return "".join(json.dumps({"table": t, "rows": counts[t]}) + "\n" for t in named)
        if "'md5'" in script:
            assert "SET TimeZone = 'UTC'" in script
            sums = {t: f"md5-{t}-{tables[t]}" for t in named}
            if side == "target":
                sums.update(self.target_md5)
            return "".join(json.dumps({"table": t, "md5": sums[t]}) + "\n" for t in named)
        if "'sequence'" in script:
            return "".join(json.dumps({"sequence": f"{t}_id_seq", "last": n}) + "\n" for t, n in tables.items())
        raise AssertionError(f"unexpected SQL {script[:80]}")

    # -- views for the assertions
    def argvs(self) -> list[list[str]]:
        return [argv for argv, _, _ in self.calls]

    def steps(self) -> list[str]:
        """What happened, in order: stop/exec program/up names."""
        found = []
        for argv, extra, _ in self.calls:
            args = argv[3:]
            if args[0] == "stop":
                found.append("stop " + ",".join(args[3:]))
            elif args[0] == "exec":
                program = args[args.index("db") + 1]
                found.append(f"{program}{' target' if '-e' in args else ''}{' --list' if '--list' in args else ''}")
            else:
                found.append(" ".join(args))
        return found


@dataclasses.dataclass
class FakeRunner(Runner):
    engine: FakeEngine | None = None

    def run(self, cmd, *, capture=False, check=True, input=None, mutating=True, timeout=None):
        if self.dry_run and mutating:
            self.engine.calls.append((list(cmd), {}, "dry-run"))
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return self.engine.run(self, cmd, input)

    def popen(self, cmd, **kwargs):
        return self.engine.popen(self, cmd, **kwargs)


def install(engine: FakeEngine, patch=setattr, setenv=os.environ.__setitem__) -> None:
    """Replace the engine-facing steps (also in a child process, where ``patch`` is plain setattr; a test
    passes monkeypatch's setattr and setenv, so that nothing outlives it)."""
    from posthog_compose.configuration import checks
    from posthog_compose.configuration import compose
    from posthog_compose.operations import engine as engine_module, stack

    setenv("POSTHOG_COMPOSE_BINARY", FAKE_COMPOSE)
    patch(engine_module, "preflight", lambda *a, **k: None)
    patch(checks, "require_clean", lambda root: [])
    patch(engine_module, "disks", lambda root, env=None: [("Docker's data root", "/", 50.0), ("backups/", str(root), 50.0)])
    patch(migrate.state, "running_services", lambda root, runner: dict(engine.running))

    def start_and_wait(root, runner, command, services, timeout, readiness_values=None):
        journal.fault_point("compose-up-started")
        values = _values(root)
        engine.calls.append((list(command), {}, f"mode={migrate.mode(values)}"))
        if engine.start_failure and migrate.mode(values) == "external":
            raise OperatorError(engine.start_failure)
        for name in services:
            engine.running[name] = True
        return 1.0

    patch(stack, "start_and_wait", start_and_wait)
    patch(stack, "check_url", lambda values, timeout=30.0: (True, "URL answered 200"))
    assert compose.compose_binary() == [FAKE_COMPOSE]


def _values(root: Path) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile

    return EnvFile.load(Path(root) / ".env").resolved()


def make_runner(root: Path, engine: FakeEngine, dry_run=False) -> FakeRunner:
    return FakeRunner(Path(root), dry_run=dry_run, env=dict(os.environ), task="migrate-datastore", engine=engine)


@pytest.fixture
def deployment(deployed: Path, monkeypatch) -> Path:
    (deployed / "datastore-ca").mkdir(exist_ok=True)
    (deployed / "datastore-ca" / "ca.crt").write_text(ca_text())
    return deployed


@pytest.fixture
def fake(deployment: Path, monkeypatch) -> FakeEngine:
    engine = FakeEngine(deployment)
    install(engine, monkeypatch.setattr, monkeypatch.setenv)
    return engine


def migrate_now(root: Path, engine: FakeEngine, url: str = URL, dry_run=False, yes=True, **kwargs) -> int:
    return migrate.run(root, make_runner(root, engine, dry_run), migrate.Request("postgres", to=url, yes=yes, **kwargs))


# ----------------------------------------------------------------------------- the URL
@pytest.mark.parametrize("url, where, params", [
    (URL, "pg.example.com:5432/posthog", {"sslmode": "verify-full", "sslrootcert": "/etc/posthog/datastore-ca/ca.crt"}),
    ("postgresql://u:p@db.internal:6543/app?sslmode=verify-ca&sslrootcert=/etc/posthog/datastore-ca/x.pem",
     "db.internal:6543/app", {"sslmode": "verify-ca", "sslrootcert": "/etc/posthog/datastore-ca/x.pem"}),
    ("postgres://u@[2001:db8::1]:5433/d", "[2001:db8::1]:5433/d", {}),
    ("postgres://u:p%40ss%2Fw@10.0.0.5/posthog%5Fdb?connect_timeout=10", "10.0.0.5:5432/posthog_db",
     {"connect_timeout": "10"}),
])
def test_urls_parse_into_their_parts(url, where, params):
    target = migrate.parse_target(url)
    assert target.where == where and target.params == params


@pytest.mark.parametrize("url, hint", [
    ("", "--to is required"),
    ("mysql://u:p@h/d", "must start with postgres://"),
    ("postgres://h/d", "names no user"),
    ("postgres://u:p@h", "names no database"),
    ("postgres://u:p@h/", "names no database"),
    ("postgres://u:p@h:0/d", "port '0'"),
    ("postgres://u:p@h:99999/d", "port '99999'"),
    ("postgres://u:p@h:54x/d", "port '54x'"),
    ("postgres://u:p@a,b/d", "several hosts"),
    ("postgres://u:p@ho_st!/d", "not a host name"),
    ("postgres://u:p@h/d?sslmode=verify-full&sslmode=disable", "given twice"),
    ("postgres://u:p@h/d?host=evil", "parameter 'host'"),
    ("postgres://u:p@h/d?passfile=/x", "parameter 'passfile'"),
    ("postgres://u:p@h/d?sslmode", "not NAME=VALUE"),
    ("postgres://u:p#w@h/d", "'#'"),
    ("postgres://u:p@w@h/d", "'@'"),
    ("postgres://u:p/w@h/d", "'/'"),
    ("postgres://u:p%zz@h/d", "%25"),
    ("postgres://u:p w@h/d", "spaces"),
    ("postgres://u:p@h/a=b", "not a plain name"),
])
def test_bad_urls_are_one_line_each(url, hint):
    with pytest.raises(OperatorError) as caught:
        migrate.parse_target(url)
    assert hint in str(caught.value) and "\n" not in str(caught.value)


passwords = st.text(st.characters(blacklist_categories=("Cs",)), min_size=8, max_size=40)
hosts = st.from_regex(r"\A[a-z]([a-z0-9-]{0,18}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){0,3}\Z")
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/="), min_size=1, max_size=20).filter(
    lambda s: s.strip())


@given(user=names, password=passwords, host=hosts, port=st.integers(1, 65535), database=names)
def test_any_encoded_url_round_trips(user, password, host, port, database):
    url = (f"postgres://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/{quote(database, safe='')}"
           "?sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt")
    target = migrate.parse_target(url)
    assert (target.user, target.password, target.host, target.port, target.database) == (
        user, password, host.lower(), port, database)
    env = target.environment()
    assert env["PGPASSWORD"] == password and env["PGSSLMODE"] == "verify-full"
    assert "password=" not in repr(target) and "url=" not in repr(target)


@given(text=st.text(max_size=120), password=passwords)
def test_any_input_is_a_target_or_one_line_without_the_password(text, password):
    url = f"postgres://u:{password}@{text}"
    for candidate in (text, url):
        try:
            migrate.parse_target(candidate)
        except OperatorError as exc:
            message = str(exc)
            assert "\n" not in message
            if len(password) >= 8 and candidate is url:
                # A password that is an ordinary word of the message (e.g. "database") shows whatever
                # the password is: judge the message the same URL gets with another password.
                assert password not in message or password in _message_for(f"postgres://u:{'Q' * 8}@{text}")


def _message_for(url: str) -> str:
    try:
        migrate.parse_target(url)
    except OperatorError as exc:
        return str(exc)
    return ""


def with_manifest(root: Path) -> Path:
    """A folder holding the kit's variables.yml: config-check's rules read a variable's format from it."""
    import shutil

    if not (root / "variables.yml").exists():
        shutil.copy(REPO / "variables.yml", root / "variables.yml")
    return root


@given(mode=st.sampled_from(["", "disable", "allow", "prefer", "require", "no-verify", "verify-ca", "verify-full",
                             "VERIFY-FULL"]),
       allowed=st.sampled_from(["false", "true", "", "no"]))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
def test_only_verified_tls_passes_unless_plaintext_is_allowed(tmp_path, mode, allowed):
    with_manifest(tmp_path)
    (tmp_path / "datastore-ca").mkdir(exist_ok=True)
    (tmp_path / "datastore-ca" / "ca.crt").write_text(ca_text())
    query = f"?sslmode={mode}&sslrootcert=/etc/posthog/datastore-ca/ca.crt" if mode else ""
    target = migrate.parse_target(f"postgres://u:p@pg.example.com/d{query}")
    problems = migrate.target_problems(tmp_path, target, {"ALLOW_PLAINTEXT_DATASTORES": allowed})
    verified = mode in ("verify-ca", "verify-full")
    # sslmode=no-verify is Node.js's word only: libpq (Django) refuses it whatever ALLOW_PLAINTEXT_DATASTORES says.
    assert bool(problems) == (mode == "no-verify" or (not verified and allowed != "true"))
    if problems and mode != "no-verify":
        assert "verify-full" in problems[0] and "ALLOW_PLAINTEXT_DATASTORES" in problems[0]


@given(path=st.text(st.characters(whitelist_categories=("Ll", "Nd"), whitelist_characters="./-_"), max_size=40))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=80)
def test_a_ca_path_outside_the_shared_folder_is_refused(tmp_path, path):
    (tmp_path / "datastore-ca").mkdir(exist_ok=True)
    (tmp_path / "datastore-ca" / "ca.crt").write_text(ca_text())
    container = "/etc/posthog/datastore-ca/" + path
    found = migrate.host_path(tmp_path, container)
    if found is not None:  # never a file outside datastore-ca/, whatever `..` the path holds
        assert os.path.normpath(found).startswith(str(tmp_path / "datastore-ca") + os.sep)
    problem = migrate.ca_file_problem(tmp_path, "sslrootcert", container)
    assert (problem is None) == (found is not None)  # the file itself is config-check's to judge
    if found is not None:
        assert migrate.container_path(container) == "/etc/posthog/datastore-ca/" + str(
            found.relative_to(tmp_path / "datastore-ca"))


@pytest.mark.parametrize("query, hint", [
    ("sslmode=verify-full", "without sslrootcert"),
    ("sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca.crt", "is not under /etc/posthog/datastore-ca/"),
    ("sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/../../../etc/passwd", "is not under"),
    ("sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/missing.crt", "datastore-ca/missing.crt does not exist"),
    ("sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/notpem.crt", "is not a PEM certificate"),
    ("sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/key.pem", "holds a private key"),
    ("sslmode=verify-full&sslrootcert=../etc/posthog/datastore-ca/../../x.crt", "is not under"),
    ("sslmode=require&sslrootcert=/etc/posthog/datastore-ca/ca.crt", "sslmode=require"),
    ("sslmode=verify-full&sslrootcert=/etc/posthog/datastore-ca/ca.crt&sslcert=/etc/posthog/datastore-ca/c.crt",
     "sslcert names datastore-ca/c.crt, which does not exist"),
])
def test_tls_problems_name_the_fix(tmp_path, query, hint):
    with_manifest(tmp_path)
    (tmp_path / "datastore-ca").mkdir()
    (tmp_path / "datastore-ca" / "ca.crt").write_text(ca_text())
    (tmp_path / "datastore-ca" / "notpem.crt").write_text("hello")
    (tmp_path / "datastore-ca" / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    problems = migrate.target_problems(tmp_path, migrate.parse_target(f"postgres://u:p@pg.example.com/d?{query}"), {})
    assert len(problems) == 1 and hint in problems[0], problems


@pytest.mark.parametrize("host", ["db", "localhost", "127.0.0.1", "redis", "[::1]", "proxy", "127.1.2.3"])
def test_a_local_host_is_not_an_external_server(tmp_path, host):
    problems = migrate.target_problems(with_manifest(tmp_path),
                                       migrate.parse_target(f"postgres://u:p@{host}/d?sslmode=disable"),
                                       {"ALLOW_PLAINTEXT_DATASTORES": "true"})
    assert len(problems) == 1 and problems[0].startswith("--to points at "), problems
    assert "service" in problems[0] or "the container itself" in problems[0]


def test_a_relative_ca_path_is_what_posthog_reads_and_the_tools_get_it_absolute(tmp_path):
    """PostHog reads sslrootcert=../etc/... from /code; the client tools in `db` get the same file by its
    absolute path, so a URL config-check accepts is one the task can use."""
    with_manifest(tmp_path)
    (tmp_path / "datastore-ca").mkdir()
    (tmp_path / "datastore-ca" / "ca.crt").write_text(ca_text())
    target = migrate.parse_target("postgres://u:p@pg.example.com/d?sslmode=verify-full"
                                  "&sslrootcert=../etc/posthog/datastore-ca/ca.crt")
    assert migrate.target_problems(tmp_path, target, {}) == []
    assert target.environment()["PGSSLROOTCERT"] == "/etc/posthog/datastore-ca/ca.crt"


def test_the_password_is_masked_with_its_pieces():
    secrets = migrate.secrets_of_url("postgres://app:p%40ss-Word-1234@h/d")
    assert "p@ss-Word-1234" in secrets and "p%40ss-Word-1234" in secrets


# ----------------------------------------------------------------------------- datastores refused
@pytest.mark.parametrize("name, hint", [
    ("clickhouse", "remote("), ("ClickHouse", "Kafka-engine"), ("redis", "nothing to move"),
    ("kafka", "recreate ClickHouse's Kafka-engine tables"), ("mysql", "unknown datastore"),
])
def test_other_datastores_are_refused_with_the_way(name, hint):
    with pytest.raises(OperatorError) as caught:
        migrate.refuse_datastore(name)
    assert hint in str(caught.value)


@pytest.mark.parametrize("name", ["postgres", "postgresql", "Postgres", "pg"])
def test_postgres_has_its_names(name):
    assert migrate.refuse_datastore(name) == "postgres"


# ----------------------------------------------------------------------------- the whole run
def test_a_migration_moves_verifies_switches_and_keeps_the_volume(deployment, fake, capsys):
    before = _values(deployment)
    assert migrate_now(deployment, fake) == 0
    out = capsys.readouterr().out
    # Order: checks, outage, dump, read back, restore, verify, switch, start, stop db.
    steps = fake.steps()
    first_change = steps.index("stop web,worker,plugins")
    assert all(step.startswith("psql") for step in steps[:first_change])
    assert steps[first_change:first_change + 4] == ["stop web,worker,plugins", "pg_dump", "pg_restore --list",
                                                    "pg_restore target"]
    assert steps[-2].startswith("up --detach") and "db" not in steps[-2].split()
    assert steps[-1] == "stop db"
    assert fake.calls[-2][2] == "mode=external"
    # .env: switched, 0600, everything else untouched.
    after = _values(deployment)
    assert after["POSTGRES_MODE"] == "external" and after["DATABASE_URL"] == URL
    assert {k: v for k, v in after.items() if k not in ("POSTGRES_MODE", "DATABASE_URL")} == \
        {k: v for k, v in before.items() if k not in ("POSTGRES_MODE", "DATABASE_URL")}
    assert oct((deployment / ".env").stat().st_mode & 0o777) == "0o600"
    dumps = list((deployment / "backups").glob("migrate-postgres-*.dump"))
    assert len(dumps) == 1 and oct(dumps[0].stat().st_mode & 0o777) == "0o600"
    assert not list((deployment / "backups").glob("*.partial"))
    assert journal.pending(deployment) == []
    last = out.strip().splitlines()[-1]
    assert last.startswith("Migrated PostgreSQL to pg.example.com:5432/posthog: 4 tables and 12 rows verified")
    assert "posthog_postgres-data is kept" in last and "docker volume rm posthog_postgres-data" in last


def test_the_target_settings_travel_only_in_the_environment(deployment, fake):
    from posthog_compose import masking

    assert migrate_now(deployment, fake) == 0
    # Whatever prints it from now on (a tool's error, a traceback) shows it masked.
    assert PASSWORD not in masking.mask(f"FATAL: password {PASSWORD} / {quote(PASSWORD, safe='')} refused")
    target_calls = [(argv, extra) for argv, extra, _ in fake.calls if "-e" in argv]
    assert target_calls
    for argv, extra in target_calls:
        assert extra["PGPASSWORD"] == PASSWORD and extra["PGHOST"] == "pg.example.com"
        assert extra["PGSSLMODE"] == "verify-full" and extra["PGSSLROOTCERT"] == "/etc/posthog/datastore-ca/ca.crt"
        names = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"]
        assert sorted(names) == sorted(migrate.parse_target(URL).environment())
        assert f"--dbname={migrate.FROM_ENVIRONMENT}" in argv
    for argv, extra, script in fake.calls:  # never on a command line, never in SQL
        assert not any(PASSWORD in arg or "pg.example.com" in arg for arg in argv), argv
        assert PASSWORD not in (script or "")
        if "-e" not in argv:
            assert "PGPASSWORD" not in extra or extra["PGPASSWORD"] != PASSWORD


def test_the_dry_run_checks_everything_and_changes_nothing(deployment, fake, capsys):
    env_before = (deployment / ".env").read_bytes()
    assert migrate_now(deployment, fake, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "Plan: move PostgreSQL" in out and out.strip().endswith("Dry run: every check passed; nothing changed.")
    assert all(step.startswith("psql") for step in fake.steps())
    assert (deployment / ".env").read_bytes() == env_before and not (deployment / "backups").exists()
    assert journal.pending(deployment) == []


@pytest.mark.parametrize("change, hint", [
    (lambda f: f.target.update(relations=4, examples="public.x"), "is not empty (4 relations, e.g. public.x)"),
    (lambda f: f.target.update(version=150004), "PostgreSQL 15.4, outside >=11.0.0,<=14.1.0"),
    (lambda f: f.target.update(version=120010), "older than the local 13"),
    (lambda f: f.target.update(create=False), "may not create tables"),
    (lambda f: f.target.update(encoding="SQL_ASCII"), "encoded SQL_ASCII, the local one UTF8"),
    (lambda f: f.target.update(available=["plpgsql"]), "extension(s) pg_trgm, which the target does not offer"),
    (lambda f: setattr(f, "target_error", "psql: error: connection to server at \"pg.example.com\" failed: FATAL:  "
                                          "password authentication failed for user \"posthog_app\""),
     "cannot connect to the target PostgreSQL (pg.example.com:5432/posthog): password authentication failed"),
])
def test_preflight_problems_stop_before_any_change(deployment, fake, capsys, change, hint):
    change(fake)
    env_before = (deployment / ".env").read_bytes()
    with pytest.raises(OperatorError, match="refused: 1 problem"):
        migrate_now(deployment, fake)
    out = capsys.readouterr().out
    assert hint in out, out
    assert all(step.startswith("psql") for step in fake.steps())
    assert (deployment / ".env").read_bytes() == env_before and journal.pending(deployment) == []


def test_too_little_disk_for_the_dump_is_a_problem(deployment, fake, capsys, monkeypatch):
    monkeypatch.setattr(engine_module, "disks", lambda root, env=None: [("backups/", str(root), 0.001)])
    with pytest.raises(OperatorError, match="refused"):
        migrate_now(deployment, fake)
    assert "free in backups/" in capsys.readouterr().out


def test_a_stopped_db_is_started_for_the_checks(deployment, fake):
    fake.running["db"] = False
    assert migrate_now(deployment, fake) == 0
    assert fake.steps()[0] == "up --detach db"


def test_the_confirmation_is_the_deployment_name(deployment, fake, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("wrong\n"))
    with pytest.raises(OperatorError, match="is not 'posthog': nothing was changed"):
        migrate_now(deployment, fake, yes=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(OperatorError, match="no input"):
        migrate_now(deployment, fake, yes=False)
    assert all(step.startswith("psql") for step in fake.steps())
    monkeypatch.setattr(sys, "stdin", io.StringIO("posthog\n"))
    assert migrate_now(deployment, fake, yes=False) == 0


def test_an_external_deployment_is_not_migrated_twice(deployment, fake, capsys):
    assert migrate_now(deployment, fake) == 0
    calls = len(fake.calls)
    assert migrate_now(deployment, fake) == 0
    assert "nothing to do" in capsys.readouterr().out and len(fake.calls) == calls
    with pytest.raises(OperatorError, match="already external"):
        migrate_now(deployment, fake, url=URL.replace("pg.example.com", "other.example.com"))


@pytest.mark.parametrize("break_it, hint", [
    (lambda f: f.target_counts.update({"public.posthog_team": 2}), "row counts differ (public.posthog_team 3 vs 2)"),
    (lambda f: f.target_md5.update({"public.posthog_user": "different"}), "the rows of public.posthog_user differ"),
    (lambda f: setattr(f, "restore_error", b"pg_restore: error: could not execute query: ERROR:  permission denied "
                                           b"to create extension \"pg_trgm\""),
     "rolled back and the target is still empty: could not execute query: ERROR:  permission denied"),
])
def test_a_failed_restore_or_verification_changes_nothing(deployment, fake, break_it, hint):
    break_it(fake)
    env_before = (deployment / ".env").read_bytes()
    with pytest.raises(OperatorError) as caught:
        migrate_now(deployment, fake)
    assert hint in str(caught.value) and "PostHog runs on the local db again" in str(caught.value)
    assert caught.value.code == 1
    assert (deployment / ".env").read_bytes() == env_before
    assert fake.steps()[-1] == "up --detach --no-deps web worker plugins"
    assert fake.calls[-1][2] == "mode=local"
    assert journal.pending(deployment) == []
    copy_left = "empty its database" in str(caught.value)
    assert copy_left == ("verification" in hint or "differ" in hint)


def test_a_stack_that_fails_on_the_target_goes_back_to_the_local_db(deployment, fake):
    fake.start_failure = "services failed: web (exited (1)): could not connect to server: certificate verify failed"
    env_before = _values(deployment)
    with pytest.raises(OperatorError) as caught:
        migrate_now(deployment, fake)
    assert caught.value.code == 1 and "back on the local db" in str(caught.value)
    assert "certificate verify failed" in str(caught.value)
    assert _values(deployment) == env_before
    assert fake.steps()[-1] == "up --detach --no-deps db web worker plugins" and fake.calls[-1][2] == "mode=local"
    assert "stop db" not in fake.steps()
    assert journal.pending(deployment) == []


PRE_SWITCH = ["migrate-journal-written", "migrate-stopped", "migrate-dumped", "migrate-restored", "migrate-verified",
              "migrate-switching"]
POST_SWITCH = ["migrate-env-switched", "migrate-checked", "compose-up-started", "migrate-started", "migrate-db-stopped"]


@pytest.mark.parametrize("step", PRE_SWITCH)
def test_ctrl_c_before_the_switch_restarts_posthog_on_the_local_db(deployment, fake, monkeypatch, step):
    real = journal.fault_point

    def fault(name):
        if name == step:
            raise KeyboardInterrupt
        real(name)

    monkeypatch.setattr(journal, "fault_point", fault)
    env_before = (deployment / ".env").read_bytes()
    with pytest.raises(OperatorError) as caught:
        migrate_now(deployment, fake)
    assert caught.value.code == 130 and "interrupted before the switch" in str(caught.value)
    assert (deployment / ".env").read_bytes() == env_before
    assert journal.pending(deployment) == []
    assert all(fake.running[s] for s in ("db", "web", "worker", "plugins"))


@pytest.mark.parametrize("step", ["compose-up-started", "migrate-checked"])
def test_ctrl_c_after_the_switch_goes_back_to_the_local_db(deployment, fake, monkeypatch, step):
    real = journal.fault_point
    seen = []

    def fault(name):
        if name == step and not seen:
            seen.append(name)
            raise KeyboardInterrupt
        real(name)

    monkeypatch.setattr(journal, "fault_point", fault)
    env_before = _values(deployment)
    with pytest.raises(OperatorError, match="back on the local db"):
        migrate_now(deployment, fake)
    assert _values(deployment) == env_before and journal.pending(deployment) == []


# ----------------------------------------------------------------------------- SIGKILL at every step
CHILD = """
import os, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.unit.test_migrate_datastore import FakeEngine, install, make_runner, URL
from posthog_compose.operations import migrate
root = Path({root!r})
engine = FakeEngine(root)
engine.start_failure = {failure!r}
install(engine)
sys.exit(migrate.run(root, make_runner(root, engine), migrate.Request("postgres", to=URL, yes=True)))
"""


@pytest.mark.parametrize("step, failure", [(step, "") for step in PRE_SWITCH + POST_SWITCH] +
                         [("migrate-rolling-back", "web exited (1)"), ("migrate-env-restored", "web exited (1)")])
def test_sigkill_at_each_step_then_the_next_task_finishes_or_undoes_it(deployment, monkeypatch, step, failure):
    env = {**os.environ, "POSTHOG_COMPOSE_FAULT_TEST": "1", journal.FAULT_VARIABLE: f"kill:{step}",
           "PYTHONPATH": str(REPO)}
    original = (deployment / ".env").read_bytes()
    child = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), root=str(deployment), failure=failure)],
                           env=env, capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert journal.pending(deployment) == ["migration"]
    assert PASSWORD not in (deployment / ".deploy" / "journal" / "migration.json").read_text()
    switched = step in POST_SWITCH
    if not switched and failure == "":
        assert (deployment / ".env").read_bytes() == original
    # The next task: a fresh engine where web, worker and plugins are stopped (the child stopped them).
    from posthog_compose.operations import lifecycle

    journal.recover_files(deployment)  # what every task does first (cli.friendly)
    engine = FakeEngine(deployment)
    engine.running.update(web=False, worker=False, plugins=False)
    install(engine, monkeypatch.setattr, monkeypatch.setenv)
    with journal.deployment_lock(deployment):
        lifecycle.recover(deployment, make_runner(deployment, engine))
    assert journal.pending(deployment) == []
    values = _values(deployment)
    if switched:
        assert values["POSTGRES_MODE"] == "external" and values["DATABASE_URL"] == URL
        assert engine.steps()[-1] == "stop db" and engine.calls[-2][2] == "mode=external"
    else:
        assert (deployment / ".env").read_bytes() == original
        assert migrate.mode(values) == "local"
        assert all(engine.running[s] for s in ("web", "worker", "plugins"))
        assert "stop db" not in engine.steps()


# ----------------------------------------------------------------------------- the command line
def test_the_cli_refuses_plaintext_in_one_line_without_the_password(deployment):
    url = "postgres://app:Sup3r-Secret-Passw0rd@pg.example.com/posthog?sslmode=require"
    result = run_invoke(deployment, "migrate-datastore", "postgres", "--to", url)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Sup3r-Secret" not in output and "Passw0rd" not in output
    assert "sslmode=require" in output and output.strip().splitlines()[-1].startswith("error: migrate-datastore refused")


def test_the_cli_refuses_clickhouse_in_one_line(deployment):
    result = run_invoke(deployment, "migrate-datastore", "clickhouse", "--to", URL)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "INSERT INTO ... SELECT * FROM remote(...)" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr


def test_the_cli_reads_the_url_from_a_private_file_and_answers_json(deployment):
    secret = deployment / "target-url"
    secret.write_text(URL.replace("verify-full", "prefer") + "\n")
    secret.chmod(0o644)
    result = run_invoke(deployment, "migrate-datastore", "postgres", "--to-file", str(secret), "--json")
    assert result.returncode == 1 and "readable by other users" in json.loads(result.stdout)["message"]
    secret.chmod(0o600)
    result = run_invoke(deployment, "migrate-datastore", "postgres", "--to-file", str(secret), "--json")
    summary = json.loads(result.stdout)
    assert result.returncode == 1 and summary["result"] == "refused"
    assert summary["target"] == "pg.example.com:5432/posthog" and "sslmode=prefer" in summary["problems"][0]
    assert PASSWORD not in result.stdout + result.stderr


def test_json_keeps_stdout_for_the_summary(deployment, fake, capsys):
    assert migrate_now(deployment, fake, as_json=True) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["result"], summary["tables"], summary["rows"], summary["checksummed"]) == ("migrated", 4, 12, 4)
    assert summary["volume"] == "posthog_postgres-data" and summary["dump"].startswith("backups/migrate-postgres-")
    assert "Verified: 4 tables" in captured.err and PASSWORD not in captured.out + captured.err


@pytest.mark.parametrize("url", ["postgres:/u:Secret-Pass-123@h/d", "u:Secret-Pass-123@h://x", "Secret-Pass-123"])
def test_a_url_without_its_scheme_is_never_echoed(url):
    with pytest.raises(OperatorError) as caught:
        migrate.parse_target(url)
    assert "Secret-Pass" not in str(caught.value)


@pytest.mark.parametrize("breakage", ["missing", "directory"])
def test_a_broken_env_is_one_line(deployment, breakage):
    (deployment / ".env").unlink()
    if breakage == "directory":
        (deployment / ".env").mkdir()
    result = run_invoke(deployment, "migrate-datastore", "postgres", "--to", URL, "--yes")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: .env") and PASSWORD not in result.stderr


def test_the_switched_env_passes_config_check(deployment, fake, monkeypatch):
    """What the switch writes is what config-check's external-datastore rules accept (with the real Compose)."""
    from posthog_compose.configuration import checks

    assert migrate_now(deployment, fake) == 0
    monkeypatch.delenv("POSTHOG_COMPOSE_BINARY")
    found = checks.collect(deployment, environ={"PATH": os.environ["PATH"]})
    assert [f.text() for f in found if f.severity == "error"] == []
    assert not [f for f in found if f.rule.startswith("external")], [f.text() for f in found]
