"""`invoke restore --drill` without an engine: the scratch deployment runs under its own project name
from the archive's own files with nothing published, never touches the live deployment, compares the
tables with the manifest's counts, times each phase, and is removed on success, on failure, on
Ctrl-C, and when an earlier drill was killed. The end-to-end proof is tests/e2e/test_backup.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.operations import backup, drill, restore
from tests.unit.test_backup import FakeRunner, engine  # noqa: F401  (fixture)

PG = {"public.posthog_team": 1, "public.e2e_probe": 2000, "public.empty_at_backup": 0}
CH = {"posthog.events": 500}
PROJECT = "posthog-drill"


class DrillEngine(FakeRunner):
    """A fake engine that remembers what each project created, answers the row counts and records the
    project and compose files every compose command ran with."""

    def __init__(self, root, counts=None, published=""):
        super().__init__(root)
        self.counts = counts or {"postgres": dict(PG), "clickhouse": dict(CH)}
        self.published = published
        self.projects: list[tuple[str | None, str | None]] = []
        self.created = {"containers": set(), "volumes": set(), "networks": set()}

    def run(self, cmd, **kwargs):
        self.commands.append(list(cmd))
        text = " ".join(cmd)
        env = self.env or {}
        if "--project-directory" in cmd:
            self.projects.append((env.get("COMPOSE_PROJECT_NAME"), env.get("COMPOSE_FILE")))
            if " up " in f" {text} " or " run " in f" {text} ":
                project = env.get("COMPOSE_PROJECT_NAME")
                self.created["containers"].add(f"{project}-db-1")
                self.created["volumes"].add(f"{project}_postgres-data")
                self.created["networks"].add(f"{project}_default")
        out = ""
        if "psql" in cmd:
            out = "".join(f"{name}\t{rows}\n" for name, rows in self.counts["postgres"].items())
        elif "clickhouse-client" in cmd:
            out = "".join(f"{name.replace('.', chr(9), 1)}\t{rows}\n" for name, rows in self.counts["clickhouse"].items())
        elif cmd[:2] == ["docker", "ps"] and "--format" in cmd:
            out = self.published
        elif cmd[:2] in (["docker", "ps"], ["docker", "volume"], ["docker", "network"]) and "--filter" in cmd:
            kind = {"ps": "containers", "volume": "volumes", "network": "networks"}[cmd[1]]
            project = cmd[cmd.index("--filter") + 1].split("=", 2)[2]
            out = "".join(f"{name}\n" for name in sorted(self.created[kind]) if name.startswith(project))
        elif cmd[:2] in (["docker", "rm"], ["docker", "volume"], ["docker", "network"]):
            for kind in self.created.values():
                kind.difference_update(cmd)
        return subprocess.CompletedProcess(cmd, 0, out, "")


@pytest.fixture
def archive(deployed, engine, monkeypatch):  # noqa: F811
    monkeypatch.setattr(backup, "postgres_counts", lambda root, runner, values: dict(PG))
    monkeypatch.setattr(backup, "clickhouse_counts", lambda root, runner: dict(CH))
    return backup.create(deployed, FakeRunner(deployed), encrypt=True).path


def _untouched(deployed, runner, env_before):
    assert (deployed / ".env").read_bytes() == env_before
    assert not (deployed / drill.SCRATCH).exists()
    assert not any(runner.created.values()), runner.created
    for project, files in runner.projects:
        assert project == PROJECT and files.split(":")[-1].endswith(drill.OVERRIDE), (project, files)
    for command in runner.commands:
        assert "down" not in command and not any(word.startswith("posthog_") for word in command), command
    assert not (deployed / ".deploy" / "journal" / "restore.json").exists()


def test_a_drill_restores_beside_the_live_deployment_checks_and_removes_everything(deployed, engine, archive,
                                                                                   capsys):
    env_before = (deployed / ".env").read_bytes()
    runner = DrillEngine(deployed)
    summary = drill.run(deployed, runner, archive.name)
    out = capsys.readouterr().out
    assert summary["passed"] and summary["project"] == PROJECT
    assert summary["tables"]["postgres"] == {"recorded": PG, "restored": PG}
    assert "PostgreSQL: OK, 3 tables and 2,001 rows recorded" in out and "ClickHouse: OK" in out
    phases = [line for line in out.splitlines() if line.startswith("Drill phases:")]
    assert len(phases) == 1 and all(p in phases[0] for p in ("verify", "load", "check", "removal", "total"))
    assert set(summary["phases"]) >= {"verify", "start db", "load", "start ClickHouse", "check", "removal"}
    assert engine.fed and set(engine.fed) == {"/var/lib/clickhouse", "/var/lib/zookeeper", "postgres"}
    _untouched(deployed, runner, env_before)


@pytest.mark.parametrize("damage,message", [
    ({"postgres": {"public.posthog_team": 1, "public.empty_at_backup": 0}}, "table public.e2e_probe is missing"),
    ({"postgres": {**PG, "public.e2e_probe": 0}}, "table public.e2e_probe is empty after the restore (2,000 rows"),
    ({"clickhouse": {}}, "ClickHouse table posthog.events is missing"),
])
def test_a_missing_or_emptied_table_fails_the_drill_and_it_is_removed(deployed, engine, archive, damage, message):
    env_before = (deployed / ".env").read_bytes()
    runner = DrillEngine(deployed, counts={"postgres": dict(PG), "clickhouse": dict(CH), **damage})
    with pytest.raises(OperatorError) as caught:
        drill.run(deployed, runner, archive.name)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "live deployment was not touched" in str(caught.value)
    _untouched(deployed, runner, env_before)


def test_rows_written_during_the_backup_are_told_not_failed(deployed, engine, archive, capsys):
    runner = DrillEngine(deployed, counts={"postgres": {**PG, "public.posthog_team": 2}, "clickhouse": dict(CH)})
    assert drill.run(deployed, runner, archive.name)["passed"]
    assert "public.posthog_team 1 -> 2" in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["load postgres", "load /var/lib/clickhouse", "ctrl-c", "sigterm", "published"])
def test_a_failure_or_ctrl_c_still_removes_the_scratch_deployment(deployed, engine, archive, monkeypatch, fault):
    env_before = (deployed / ".env").read_bytes()
    runner = DrillEngine(deployed, published="posthog-drill-db-1 0.0.0.0:5432->5432/tcp" if fault == "published" else "")
    if fault in ("ctrl-c", "sigterm"):
        original = restore._up

        def interrupted(root, runner, services, timeout, out):
            original(root, runner, services, timeout, out)
            if services == ["clickhouse"]:
                if fault == "sigterm":  # systemd stopping the unit: the drill's handler turns it into Ctrl-C
                    os.kill(os.getpid(), signal.SIGTERM)
                raise KeyboardInterrupt
        monkeypatch.setattr(restore, "_up", interrupted)
    else:
        engine.fail = fault
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt if fault in ("ctrl-c", "sigterm") else OperatorError) as caught:
        drill.run(deployed, runner, archive.name)
    assert signal.getsignal(signal.SIGTERM) == handler  # the drill's handler is gone again
    if fault not in ("ctrl-c", "sigterm"):
        assert "restore again with --yes" not in str(caught.value) and "drill of" in str(caught.value)
    _untouched(deployed, runner, env_before)


def test_what_a_killed_drill_left_is_removed_first(deployed, engine, archive, capsys):
    runner = DrillEngine(deployed)
    runner.created["volumes"].add(f"{PROJECT}_clickhouse-data")
    (deployed / drill.SCRATCH).mkdir(parents=True)
    drill.run(deployed, runner, archive.name)
    assert "Removing what an interrupted drill left" in capsys.readouterr().out
    first_removal = next(c for c in runner.commands if c[:3] == ["docker", "volume", "rm"])
    assert f"{PROJECT}_clickhouse-data" in first_removal
    assert not any(runner.created.values())


def test_latest_is_the_newest_archive_by_sequence(deployed, engine, archive):
    newer = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    sidecar = backup.sidecar_path(archive)
    meta = json.loads(sidecar.read_text())
    meta["sequence"] = 99  # the newer by sequence, whatever the names say
    sidecar.write_text(json.dumps(meta))
    assert drill.resolve(deployed, "latest") == archive
    assert drill.resolve(deployed, newer.name) == newer


def test_the_drill_compose_file_unpublishes_what_an_override_publishes(deployed):
    """Checked by Compose itself: the archive's override publishes db and ClickHouse, the drill's file
    takes those ports away."""
    (deployed / "docker-compose.override.yml").write_text(
        "services:\n  db:\n    ports: ['127.0.0.1:5432:5432']\n  clickhouse:\n    ports:\n      - target: 8123\n"
        "        published: '8123'\n")
    (deployed / drill.OVERRIDE).write_text(drill.override_text())
    files = [str(p) for p in compose.selected_files(deployed)] + [str(deployed / drill.OVERRIDE)]
    import os

    env = {**os.environ, "COMPOSE_FILE": ":".join(files), "COMPOSE_PROJECT_NAME": PROJECT}
    result = subprocess.run(compose.command(deployed, "config", "--format", "json"), capture_output=True, text=True,
                            env=env, cwd=deployed, timeout=120)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert model["name"] == PROJECT
    assert not any(model["services"][s].get("ports") for s in drill.DATASTORES if s in model["services"])
    assert model["services"]["web"].get("ports")  # the drill never starts web: its ports stay as they are


counts = st.dictionaries(st.sampled_from(["a.t", "a.u", "b.v", "b.w"]), st.integers(0, 5), max_size=4)


@settings(max_examples=300, deadline=None)
@given(recorded=st.none() | counts, found=st.none() | counts)
def test_compare_fails_exactly_on_a_missing_or_emptied_table(recorded, found):
    problems, lines = drill.compare({"postgres": recorded, "clickhouse": None},
                                    {"postgres": found, "clickhouse": {}}, {"postgres": True, "clickhouse": True})
    if found is None:
        expected = 1
    elif recorded is None:
        expected = 0
    else:
        expected = sum(1 for t, n in recorded.items() if t not in found or (n > 0 and found[t] == 0))
    assert len(problems) == expected
    assert all("\n" not in line for line in lines)
