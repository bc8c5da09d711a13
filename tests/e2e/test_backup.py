"""`invoke backup` and `invoke restore` on a real engine: rows in (real) PostgreSQL and events in the
ClickHouse stand-in survive backup -> `down --volumes` -> restore, on the same host and on a second,
fresh engine (a new host); a damaged archive and a wrong passphrase are refused and change nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from posthog_compose.operations.backup.retention import sidecar_path as backup_sidecar
from tests.e2e.harness import Deployment, Engine, HarnessError, free_port, start_engine, stop_engine

pytestmark = [pytest.mark.e2e, pytest.mark.lanes("local", "real")]

PASSPHRASE = "correct horse battery staple e2e"
EVENTS = [f"{n}\t$pageview\tuser-{n % 7}" for n in range(1, 501)]


def _clickhouse(deployment, sql: str, data: str | None = None) -> str:
    """A query through the clickhouse-client inside the container (credentials from its environment)."""
    result = deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query", sql, input=data)
    return result.stdout


def _env(engine: Engine) -> dict[str, str]:
    return {**engine.env, "POSTHOG_BACKUP_PASSPHRASE": PASSPHRASE}


def _with_passphrase(deployment: Deployment) -> Deployment:
    deployment.engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"] = PASSPHRASE
    return deployment


@pytest.fixture(scope="module")
def second_engine(tmp_path_factory):
    """A second private engine with its own state: the "new host" (the same scripts as the harness)."""
    # Under E2E_STATE_ROOT like the harness's own engine, so .ci/run's cleanup finds it after an interrupted run.
    state = Path(tempfile.mkdtemp(prefix="pcbk-host2-", dir=os.environ.get("E2E_STATE_ROOT") or None))
    previous = os.environ.get("E2E_STATE_DIR")
    os.environ["E2E_STATE_DIR"] = str(state)
    saved_host = os.environ.pop("E2E_DOCKER_HOST", None)
    try:
        engine = start_engine()
    except (HarnessError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"second engine could not start: {exc}", pytrace=False)
        pytest.skip(f"second engine could not start: {exc}")
    finally:
        if previous is None:
            os.environ.pop("E2E_STATE_DIR", None)
        else:
            os.environ["E2E_STATE_DIR"] = previous
        if saved_host is not None:
            os.environ["E2E_DOCKER_HOST"] = saved_host
    yield engine
    stop_engine(engine)
    shutil.rmtree(state, ignore_errors=True)


HANDBOOK = REPO / "docs" / "backups.md"
#: The README's install step, which the handbook's new-host procedure repeats as its step 2.
README_INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -e ."


def handbook_new_host_steps() -> list[tuple[int, str, list[str]]]:
    """The numbered steps of docs/backups.md's "On a new host" procedure: (number, title, commands),
    in the page's order; the procedure must stay a numbered sequence of commands."""
    text = HANDBOOK.read_text(encoding="utf-8")
    section = text[text.index("### On a new host"):]
    block = section[section.index("```bash\n") + len("```bash\n"):section.index("\n```", section.index("```bash"))]
    steps: list[tuple[int, str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("# "):
            number, _, title = line[2:].partition(". ")
            assert number.isdigit() and int(number) == len(steps) + 1, f"step {line!r} is out of sequence"
            steps.append((int(number), title, []))
        elif line.strip():
            assert steps, f"{line!r} comes before step 1"
            steps[-1][2].append(line)
    assert all(commands for _n, _t, commands in steps), "a step without a command"
    return steps


def _handbook_script(target: Path, archive: Path, commit: str) -> str:
    """The handbook's commands with its placeholders filled in for this test; step 2 (the README's
    install) becomes a link to this test's own virtual environment, to save the minute an install
    takes (test_first_hour runs the README's install for real)."""
    import shlex

    assert README_INSTALL in (REPO / "README.md").read_text(encoding="utf-8"), "the README's install step changed"
    values = {"KIT_REPOSITORY": str(REPO), "/srv/posthog": str(target), "ARCHIVE_COPY": str(archive),
              "posthog-20261126-063000.backup": archive.name, "'…'": shlex.quote(PASSPHRASE), "KIT_COMMIT": commit}
    lines = []
    steps = handbook_new_host_steps()
    assert README_INSTALL in steps[1][2], "step 2 is no longer the README's install"
    for number, title, commands in steps:
        lines.append(f"echo {shlex.quote(f'== step {number}. {title}')}")
        for command in commands:
            if command == README_INSTALL:
                command = f"ln -s {shlex.quote(str(REPO / '.venv'))} .venv"
            for placeholder, value in values.items():
                command = command.replace(placeholder, value)
            lines.append(command)
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def _make_a_git_checkout_of_the_kit(root: Path) -> str:
    """Turn the copy of the kit that `deployment` is into a checkout of this repository's HEAD (a shallow
    fetch), so that its archives record a commit that a fresh clone can check out; the commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                              timeout=300).stdout.strip()

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    git("init", "-q")
    git("fetch", "-q", "--depth", "1", f"file://{REPO}", commit)
    git("reset", "-q", "FETCH_HEAD")  # the index only: the copy's files stay as they are
    return commit


def _project_objects(engine: Engine, project: str) -> dict[str, list[str]]:
    """The containers (with their ids), volumes and networks of a Compose project, by its label."""
    label = f"label=com.docker.compose.project={project}"
    return {"containers": sorted(engine.docker("ps", "-a", "--no-trunc", "--filter", label, "--format",
                                               "{{.ID}} {{.Names}} {{.State}}").stdout.splitlines()),
            "volumes": sorted(engine.docker("volume", "ls", "-q", "--filter", label).stdout.split()),
            "networks": sorted(engine.docker("network", "ls", "-q", "--filter", label).stdout.split())}


def _drill_leaves_the_live_deployment_as_it_was(deployment: Deployment, archive: Path, rows_before: str) -> dict:
    """`invoke restore --drill` of the archive just made, beside the running deployment: it passes with
    the row counts the archive recorded, and afterwards the live deployment's containers, volumes
    (their creation times), .env and rows are as they were, and nothing of `posthog-drill` is left."""
    engine = deployment.engine
    live_before = _project_objects(engine, "posthog")
    created_before = {v: _volume_created(engine, v) for v in live_before["volumes"]}
    env_before = (deployment.root / ".env").read_bytes()
    drilled = deployment.invoke("restore", "--drill", str(archive), "--json")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    report = json.loads(drilled.stdout)
    assert report["passed"] and report["project"] == "posthog-drill"
    postgres, clickhouse = report["tables"]["postgres"], report["tables"]["clickhouse"]
    assert postgres["recorded"]["public.e2e_backup_probe"] == postgres["restored"]["public.e2e_backup_probe"] == 2000
    assert postgres["restored"] == postgres["recorded"]
    assert clickhouse["recorded"]["posthog.e2e_events"] == clickhouse["restored"]["posthog.e2e_events"] == 500
    assert "Drill phases:" in drilled.stderr and "total" in drilled.stderr
    assert _project_objects(engine, "posthog-drill") == {"containers": [], "volumes": [], "networks": []}
    assert _project_objects(engine, "posthog") == live_before
    assert {v: _volume_created(engine, v) for v in live_before["volumes"]} == created_before
    assert (deployment.root / ".env").read_bytes() == env_before
    assert deployment.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM e2e_backup_probe"
                           ).stdout == rows_before
    assert not (deployment.root / ".deploy" / "drill").exists()
    return {"seconds": report["seconds"], "phases": report["phases"]}


def test_backup_down_volumes_restore_and_a_new_host(deployment, second_engine, tmp_path):
    """Backup, a restore drill beside the running deployment, damaged archives refused, `down --volumes`
    and restore, then host loss by the handbook's own commands (docs/backups.md, "On a new host") on a
    second engine: a `git clone` of this repository (its committed state: uncommitted changes are not
    in the clone, as on a real new host; CI runs on a fresh clone), checked out at the commit the
    archive records, one copy of the archive, restore, up, status, and the data compared. Step 2, the
    README's install, reuses this test's own virtual environment (test_first_hour runs it for real);
    the clone's own tasks.py and package are what run."""
    commit = _make_a_git_checkout_of_the_kit(deployment.root)
    _with_passphrase(deployment)
    started = deployment.invoke("up", "--timeout", "300")
    assert started.returncode == 0, started.stdout + started.stderr
    deployment.psql("CREATE TABLE e2e_backup_probe (id int primary key, note text); "
                    "INSERT INTO e2e_backup_probe SELECT n, md5(n::text) FROM generate_series(1, 2000) n;")
    _clickhouse(deployment, "CREATE DATABASE IF NOT EXISTS posthog")
    _clickhouse(deployment, "CREATE TABLE posthog.e2e_events (id Int64, event String, distinct_id String) "
                            "ENGINE = MergeTree ORDER BY id")
    _clickhouse(deployment, "INSERT INTO posthog.e2e_events FORMAT TSV", "\n".join(EVENTS[:250]) + "\n")
    _clickhouse(deployment, "INSERT INTO posthog.e2e_events FORMAT TSV", "\n".join(EVENTS[250:]) + "\n")
    rows_before = deployment.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM e2e_backup_probe").stdout
    events_before = _clickhouse(deployment, "SELECT * FROM posthog.e2e_events ORDER BY id FORMAT TSV")
    assert _clickhouse(deployment, "SELECT count() FROM posthog.e2e_events").strip() == "500"
    assert _clickhouse(deployment, "SELECT version()").strip().startswith("22.")

    # Without a passphrase and without --no-encrypt: refused, nothing written.
    del deployment.engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"]
    refused = deployment.invoke("backup")
    assert refused.returncode == 1 and "no passphrase" in refused.stderr
    assert not list((deployment.root / "backups").glob("*.backup"))
    _with_passphrase(deployment)

    made = deployment.invoke("backup", "--json", "--keep", "2")
    assert made.returncode == 0, made.stdout + made.stderr
    summary = json.loads(made.stdout)
    archive = Path(summary["archive"])
    assert archive.is_file() and oct(archive.stat().st_mode & 0o777) == "0o600"
    assert PASSPHRASE.encode() not in archive.read_bytes()[:4096] and b"POSTGRES_PASSWORD" not in archive.read_bytes()
    names = {m["name"] for m in summary["members"]}
    assert {"config/.env", "config/docker-compose.yml", "config/clickhouse/users.xml", "postgres/posthog.dump",
            "volumes/clickhouse.tar", "volumes/zookeeper.tar"} <= names
    assert summary["encrypted"] is True and summary["clickhouse_pause_seconds"] is not None
    assert all(s["State"] == "running" for s in deployment.states().values())  # ClickHouse is back after the pause
    assert not list((deployment.root / "backups").glob(".*partial"))
    listed = deployment.invoke("backup", "--list", "--json")
    assert json.loads(listed.stdout)[0]["archive"].endswith(archive.name)
    verified = deployment.invoke("backup", "--verify", str(archive))
    assert verified.returncode == 0 and "OK" in verified.stdout and "made by kit" in verified.stdout
    drill = _drill_leaves_the_live_deployment_as_it_was(deployment, archive, rows_before)

    # A damaged archive and a wrong passphrase: one line each, nothing changed (the data is still there).
    damaged = tmp_path / "damaged.backup"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40
    damaged.write_bytes(bytes(data))
    env_before = (deployment.root / ".env").read_bytes()
    for args, env, message in (
            (("restore", str(damaged), "--yes"), None, "damaged"),
            # The wrong one shares no word with the message: the masking layer hides every piece of a
            # passphrase it was given, so "wrong passphrase, ..." would blank the message's own words.
            (("restore", str(archive), "--yes"), "tulip orbit 4711 granite sparrow", "wrong passphrase")):
        if env:
            deployment.engine.extra_env["POSTHOG_BACKUP_PASSPHRASE"] = env
        result = deployment.invoke(*args)
        _with_passphrase(deployment)
        assert result.returncode == 1, result.stdout + result.stderr
        error_lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(error_lines) == 1 and message in error_lines[0] and "nothing was changed" in error_lines[0]
        assert "Traceback" not in result.stderr
    assert (deployment.root / ".env").read_bytes() == env_before
    assert deployment.psql("SELECT count(*) FROM e2e_backup_probe").stdout.strip() == "2000"
    assert all(s["State"] == "running" for s in deployment.states().values())

    # Over existing data, restore asks for the project name; a wrong answer changes nothing.
    asked = deployment.invoke("restore", str(archive), input="nope\n")
    assert asked.returncode == 1 and "nothing was changed" in asked.stderr

    # down --volumes deletes everything; restore brings the same rows and events back.
    gone = deployment.invoke("down", "--volumes", "--yes")
    assert gone.returncode == 0 and "invoke backup" in gone.stdout
    clock = time.monotonic()
    restored = deployment.invoke("restore", str(archive))
    restore_seconds = time.monotonic() - clock
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "up and healthy" in restored.stdout
    assert deployment.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM e2e_backup_probe"
                           ).stdout == rows_before
    assert _clickhouse(deployment, "SELECT * FROM posthog.e2e_events ORDER BY id FORMAT TSV") == events_before
    assert (deployment.root / ".env").read_bytes() == env_before

    # A new host: a second engine, and the handbook's own commands from a fresh clone of the kit and one
    # copy of the archive. (The first deployment stops: both engines publish on this machine's loopback,
    # and the archive keeps WEB_PORT.)
    deployment.compose("down", "--timeout", "5")
    assert json.loads(backup_sidecar(archive).read_text())["kit"]["commit"] == commit
    target = tmp_path / "new-host"
    host = _with_passphrase(Deployment(target, second_engine))
    try:
        environment = {key: value for key, value in second_engine.env.items() if not key.startswith("COMPOSE_")}
        environment.pop("POSTHOG_BACKUP_PASSPHRASE", None)  # step 4 exports it
        ran = subprocess.run(["bash", "-c", _handbook_script(target, archive, commit)], cwd=tmp_path,
                             env=environment, capture_output=True, text=True, timeout=1200)
        assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
        assert f"made by kit commit {commit[:12]}" in ran.stdout  # step 5 names the commit step 6 checks out
        assert "warning:" not in ran.stdout  # the kit is the one that made the archive
        assert "up and healthy" in ran.stdout and "running and healthy" in ran.stdout
        assert subprocess.run(["git", "-C", str(target), "rev-parse", "HEAD"], capture_output=True, text=True
                              ).stdout.strip() == commit
        port_taken = deployment.values()["WEB_PORT"]
        assert host.values()["WEB_PORT"] == port_taken and host.values()["SECRET_KEY"] == deployment.values()["SECRET_KEY"]
        assert host.psql("SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM e2e_backup_probe"
                         ).stdout == rows_before
        assert _clickhouse(host, "SELECT * FROM posthog.e2e_events ORDER BY id FORMAT TSV") == events_before
    finally:
        if (target / "docker-compose.yml").exists():
            host.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "e2e-backup.json").write_text(json.dumps({
        "backup_seconds": summary["seconds"], "clickhouse_pause_seconds": summary["clickhouse_pause_seconds"],
        "archive_bytes": summary["size"], "restore_seconds": round(restore_seconds, 1),
        "drill_seconds": drill["seconds"], "drill_phases": drill["phases"]}, indent=2) + "\n")


def _volume_created(engine: Engine, name: str) -> str:
    return engine.docker("volume", "inspect", "--format", "{{.CreatedAt}}", name).stdout.strip()


def test_a_named_deployment_backs_up_and_restores_only_its_own_volumes(deployment, tmp_path):
    """Two deployments on one engine: the default `posthog` (its db running, a row in it) and one named
    `analytics` by COMPOSE_PROJECT_NAME. Backup and restore of `analytics` find its volumes, ask for its
    name, and leave every volume and container of `posthog` as they were."""
    from tests.e2e.harness import make_deployment

    engine = deployment.engine
    neighbour = deployment
    neighbour.compose("up", "--detach", "--wait", "db")
    neighbour.psql("CREATE TABLE neighbour_probe (note text); INSERT INTO neighbour_probe VALUES ('untouched');")
    neighbour_volume = _volume_created(engine, "posthog_postgres-data")
    named = _with_passphrase(make_deployment(tmp_path / "analytics", engine))
    named.set_env(COMPOSE_PROJECT_NAME="analytics")
    try:
        started = named.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        named.psql("CREATE TABLE named_probe (note text); INSERT INTO named_probe VALUES ('before the backup');")
        made = named.invoke("backup", "--json")
        assert made.returncode == 0, made.stdout + made.stderr
        archive = json.loads(made.stdout)["archive"]
        assert {"volumes/clickhouse.tar", "volumes/zookeeper.tar"} <= {m["name"] for m in json.loads(made.stdout)["members"]}
        named.psql("DELETE FROM named_probe;")

        wrong = named.invoke("restore", archive, input="posthog\n")
        assert wrong.returncode == 1 and "nothing was changed" in wrong.stderr, wrong.stdout + wrong.stderr
        assert "analytics_postgres-data" in wrong.stdout and "(analytics)" in wrong.stdout
        assert "posthog_" not in wrong.stdout
        restored = named.invoke("restore", archive, input="analytics\n")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert named.psql("SELECT note FROM named_probe").stdout.strip() == "before the backup"

        assert _volume_created(engine, "posthog_postgres-data") == neighbour_volume
        assert neighbour.states()["db"]["State"] == "running"
        assert neighbour.psql("SELECT note FROM neighbour_probe").stdout.strip() == "untouched"
        assert set(neighbour.states()) == {"db"}  # nothing of `posthog` was started or recreated
    finally:
        named.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        neighbour.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
