"""Drift without an engine: a faked runner answers the engine's commands (`docker ps`, `docker image
inspect`, `docker inspect`) and Compose's `config --hash` as they answer, so that each reason status and
`up --dry-run` give is shown to come from what the engine and Compose say. The last tests run the real
Compose on a deployment copy, so that the hashes compared are the ones Compose computes.
The real proof on an engine is tests/e2e/test_drift.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.configuration import compose
from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.operations import lifecycle, stack
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.stack import drift
from tests.conftest import compose_command, set_env

HASH = {name: f"{index:x}" * 64 for index, name in enumerate(SERVICES, start=1)}
POSTHOG = "posthog/posthog:release-1.43.0"
IMAGES = {"db": "postgres:13.22-alpine", "redis": "redis:6.2.20-alpine", "clickhouse": "clickhouse/server:22.8",
          "zookeeper": "zookeeper:7.5.3", "kafka": "kafka:7.5.3", "web": POSTHOG, "worker": POSTHOG, "plugins": POSTHOG}
IMAGE_IDS = {reference: "sha256:" + hashlib.sha256(reference.encode()).hexdigest()
             for reference in set(IMAGES.values())}


def hashes_text(wanted: dict[str, str]) -> str:
    return "".join(f"{name} {value}\n" for name, value in sorted(wanted.items()))


class FakeEngine(Runner):
    """A Runner whose engine is a list of containers and a set of images. Compose's `config --hash`
    answers ``hashes`` (or, with ``real_compose``, the real Compose runs); its `ps` answers the states."""

    def __init__(self, root: Path, containers=(), images=None, hashes: str | None = None, dry_run=False,
                 real_compose=False, engine_down=False, config_error: str | None = None):
        super().__init__(Path(root), dry_run=dry_run, env=dict(os.environ), task="status")
        self.containers = list(containers)
        self.images = dict(IMAGE_IDS if images is None else images)
        self.hashes = hashes
        self.real_compose = real_compose
        self.engine_down = engine_down
        self.config_error = config_error
        self.calls: list[list[str]] = []

    def run(self, cmd, *, capture=False, check=True, input=None, mutating=True, timeout=None):
        cmd = list(cmd)
        self.calls.append(cmd)
        if self.dry_run and mutating:
            return super().run(cmd, capture=capture, check=check, input=input, mutating=mutating, timeout=timeout)
        assert not mutating, f"a command that changes something ran: {cmd}"
        if cmd[0] != "docker":
            return self._compose(cmd, capture=capture, check=check, timeout=timeout)
        if self.engine_down:
            return subprocess.CompletedProcess(cmd, 1, "", "Cannot connect to the Docker daemon at unix:///x.sock")
        if cmd[1] == "ps":
            return subprocess.CompletedProcess(cmd, 0, "".join(json.dumps(c) + "\n" for c in self.containers), "")
        if cmd[1:3] == ["image", "inspect"]:
            references = cmd[5:]
            found = [self.images[r] for r in references if r in self.images]
            missing = [r for r in references if r not in self.images]
            errors = "".join(f"Error response from daemon: No such image: {r}\n" for r in missing)
            return subprocess.CompletedProcess(cmd, 1 if missing else 0, "".join(f"{i}\n" for i in found), errors)
        if cmd[1] == "inspect":
            rows = [{"id": c["id"], "env": [f"{k}={v}" for k, v in c.get("_env", {}).items()], "image": c["image"]}
                    for c in self.containers if c["id"] in cmd[4:]]
            return subprocess.CompletedProcess(cmd, 0, "".join(json.dumps(row) + "\n" for row in rows), "")
        return subprocess.CompletedProcess(cmd, 1, "", "not faked")  # system df, info: status copes

    def _compose(self, cmd, **kwargs):
        if "config" in cmd and "--hash" in cmd and not self.real_compose:
            if self.config_error is not None:
                return subprocess.CompletedProcess(cmd, 1, "", self.config_error)
            return subprocess.CompletedProcess(cmd, 0, self.hashes or "", "")
        if "ps" in cmd:
            rows = [{"Service": c[drift.SERVICE_LABEL], "State": c["state"],
                     "Health": "healthy" if c["state"] == "running" else "", "ExitCode": 0, "Status": c["status"],
                     "Image": c["image"], "Publishers": []}
                    for c in self.containers if c.get(drift.PROJECT_LABEL) == "posthog" and c.get(drift.SERVICE_LABEL)]
            return subprocess.CompletedProcess(cmd, 0, "".join(json.dumps(r) + "\n" for r in rows), "")
        return super().run(cmd, mutating=False, **kwargs)

    def compose_config_calls(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] != "docker" and "config" in c and "--hash" in c]


def container(root: Path, service: str, config_hash: str | None = None, *, state="running", name=None,
              project="posthog", image=None, image_id=None, env=None, workdir=None, files=None, oneoff=False,
              networks="posthog_default", labels=True) -> dict:
    """A row as `docker ps --format drift._ps_format()` prints it."""
    row = {"id": f"id-{name or service}", "name": name or f"{project}-{service}-1", "state": state,
           "status": "Up 5 minutes (healthy)" if state == "running" else "Exited (137) 2 minutes ago",
           "image": image or IMAGES.get(service, "busybox"), "networks": networks, "_env": env or {}}
    if labels:
        row.update({drift.PROJECT_LABEL: project, drift.SERVICE_LABEL: service,
                    drift.HASH_LABEL: config_hash if config_hash is not None else HASH.get(service, ""),
                    drift.IMAGE_LABEL: image_id or IMAGE_IDS.get(image or IMAGES.get(service, ""), ""),
                    drift.WORKDIR_LABEL: str(workdir or root),
                    drift.FILES_LABEL: ",".join(files or [str(Path(root) / "docker-compose.yml")]),
                    drift.ONEOFF_LABEL: "True" if oneoff else "False"})
    return row


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A deployment folder with only its compose file (no .env: the project is `posthog`), a Compose that
    is never started (the fake answers for it) and the model Compose would build: the eight services."""
    monkeypatch.setenv("POSTHOG_COMPOSE_BINARY", "compose-of-the-test")
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    model = {name: {"image": IMAGES[name], "environment": {"TRUSTED_PROXIES": "", "SECRET_KEY": "s3cret"}
                    if name in ("web", "worker") else {}} for name in SERVICES}
    monkeypatch.setattr(drift, "_model", lambda root: model)
    return tmp_path


def every_service(root: Path, **changed_hashes) -> list[dict]:
    return [container(root, name, changed_hashes.get(name)) for name in SERVICES]


# ----------------------------------------------------------------------------- each reason
def test_nothing_drifts_when_every_label_matches_and_compose_is_asked_once(bare):
    engine = FakeEngine(bare, every_service(bare), hashes=hashes_text(HASH))
    found = drift.survey(bare, engine)
    assert (found.findings, found.error) == ([], "")
    assert found.active == list(SERVICES)
    assert engine.compose_config_calls() == [[ "compose-of-the-test", "--project-directory", str(bare), "config",
                                               "--hash", "*"]]


def test_a_changed_hash_flags_that_service_with_the_names_that_differ_and_never_their_values(bare):
    rows = every_service(bare, web="0" * 64, worker="1" * 64)
    rows[SERVICES.index("web")]["_env"] = {"TRUSTED_PROXIES": "", "SECRET_KEY": "old-secret", "PATH": "/bin"}
    rows[SERVICES.index("worker")]["_env"] = {"TRUSTED_PROXIES": "10.0.0.9", "SECRET_KEY": "s3cret"}
    found = drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    assert [(f.service, f.kind, f.changed) for f in found.findings] == [
        ("web", "config", ("SECRET_KEY",)), ("worker", "config", ("TRUSTED_PROXIES",))]
    assert found.lines() == [
        "web: configuration changed since it was started (SECRET_KEY): run `invoke up` to recreate it",
        "worker: configuration changed since it was started (TRUSTED_PROXIES): run `invoke up` to recreate it"]
    said = json.dumps(found.to_dict()) + "\n".join(found.lines())
    assert "s3cret" not in said and "old-secret" not in said and "10.0.0.9" not in said


def test_an_image_pinned_but_not_on_the_engine_flags_every_service_that_runs_it(bare):
    images = {r: i for r, i in IMAGE_IDS.items() if r != POSTHOG}
    found = drift.survey(bare, FakeEngine(bare, every_service(bare), images=images, hashes=hashes_text(HASH)))
    assert [(f.service, f.kind) for f in found.findings] == [("web", "image-missing"), ("worker", "image-missing"),
                                                             ("plugins", "image-missing")]
    assert found.findings[0].reason == f"the image {POSTHOG} is not on this engine yet: `invoke up` pulls it"


def test_an_image_pulled_since_the_start_is_an_updated_image(bare):
    rows = every_service(bare)
    rows[SERVICES.index("redis")][drift.IMAGE_LABEL] = "sha256:" + "e" * 64
    found = drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    assert [(f.service, f.kind) for f in found.findings] == [("redis", "image-updated")]
    assert "names another image than the one it was started from" in found.findings[0].why


def test_containers_started_by_hand_are_told_by_name_or_network_and_others_left_alone(bare):
    rows = every_service(bare)
    rows[SERVICES.index("web")] = container(bare, "web", labels=False)  # docker run --name posthog-web-1
    rows += [container(bare, "x", name="debugger", labels=False),  # docker run --network posthog_default
             container(bare, "x", name="unrelated", labels=False, networks="bridge"),
             container(bare, "db", name="other-db-1", project="other", networks="other_default")]
    found = drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    assert [(f.service, f.kind, f.container) for f in found.findings] == [
        ("web", "by-hand", "posthog-web-1"), ("", "by-hand", "debugger")]
    assert "it holds the name Compose needs: `docker rm -f posthog-web-1`, then `invoke up`" in found.lines()[0]
    assert found.lines()[1].startswith("Container debugger was started by hand, not by Compose")


def test_a_container_made_from_another_directory_or_file_is_told(bare, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    rows = every_service(bare)
    rows[SERVICES.index("redis")] = container(bare, "redis", workdir=str(elsewhere))
    rows[SERVICES.index("kafka")] = container(bare, "kafka", files=[str(bare / "docker-compose.yml"),
                                                                    str(elsewhere / "debug.yml")])
    found = drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    assert [(f.service, f.kind) for f in found.findings] == [("redis", "elsewhere"), ("kafka", "elsewhere")]
    assert f"from another directory ({elsewhere})" in found.findings[0].why
    assert "debug.yml, which is not a file of this deployment" in found.findings[1].why


def test_a_file_of_the_deployment_that_is_not_selected_now_is_no_drift(bare):
    # Enabling then disabling the proxy leaves its file on the labels of the services it did not change.
    (bare / "docker-compose.proxy.yml").write_text("services: {}\n")
    rows = every_service(bare)
    rows[0] = container(bare, "db", files=[str(bare / "docker-compose.yml"), str(bare / "docker-compose.proxy.yml")])
    assert drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH))).findings == []


def test_an_orphan_is_a_container_of_the_project_whose_service_no_file_declares(bare):
    rows = every_service(bare) + [container(bare, "oldsvc", "f" * 64)]
    found = drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    assert [(f.service, f.kind, f.container) for f in found.findings] == [("", "orphan", "posthog-oldsvc-1")]
    assert "`docker rm -f posthog-oldsvc-1` removes it" in found.findings[0].fix


def test_one_off_containers_and_services_whose_profile_is_off_are_not_drift(bare, monkeypatch):
    model = {name: {"image": IMAGES[name]} for name in SERVICES if name != "db"}  # db is external
    monkeypatch.setattr(drift, "_model", lambda root: model)
    rows = every_service(bare, db="0" * 64) + [container(bare, "web", "0" * 64, name="posthog-web-run-1", oneoff=True)]
    wanted = {k: v for k, v in HASH.items() if k != "db"}
    assert drift.survey(bare, FakeEngine(bare, rows, hashes=hashes_text(wanted))).findings == []


def test_compose_rejecting_the_configuration_or_an_old_compose_is_said_not_guessed(bare):
    rows = every_service(bare, web="0" * 64) + [container(bare, "x", name="debugger", labels=False)]
    rejected = drift.survey(bare, FakeEngine(bare, rows, config_error="required variable SITE_URL is missing"))
    assert rejected.error == "Compose rejects the configuration (`invoke config-check` says why)"
    assert [f.kind for f in rejected.findings] == ["by-hand"]  # needs no model
    old = drift.survey(bare, FakeEngine(bare, rows, config_error="unknown flag: --hash"))
    assert "cannot print configuration hashes" in old.error


def test_an_engine_that_does_not_answer_is_one_reason(bare):
    found = drift.survey(bare, FakeEngine(bare, engine_down=True, hashes=hashes_text(HASH)))
    assert found.findings == [] and found.error.startswith("the engine did not list its containers (Cannot connect")


def test_the_wanted_hashes_are_remembered_while_the_inputs_are_unchanged(bare, monkeypatch):
    key = {"value": "k1"}
    monkeypatch.setattr(drift.compose, "_validation_key", lambda root: key["value"])
    engine = FakeEngine(bare, every_service(bare), hashes=hashes_text(HASH))
    drift.survey(bare, engine)
    drift.survey(bare, engine)
    assert len(engine.compose_config_calls()) == 1
    assert oct((bare / drift.HASHES_CACHE).stat().st_mode & 0o777) == "0o600"
    key["value"] = "k2"  # .env or a compose file changed
    engine.hashes = hashes_text({**HASH, "web": "0" * 64})
    assert [f.service for f in drift.survey(bare, engine).findings] == ["web"]
    assert len(engine.compose_config_calls()) == 2


# ----------------------------------------------------------------------------- up --dry-run's plan
def test_changes_say_what_up_would_do_to_each_service(bare):
    rows = every_service(bare, web="0" * 64)
    rows[SERVICES.index("plugins")] = container(bare, "plugins", state="exited")
    del rows[SERVICES.index("kafka")]
    rows[SERVICES.index("redis")] = container(bare, "redis", labels=False)  # blocks the name
    images = {r: i for r, i in IMAGE_IDS.items() if r != IMAGES["db"]}
    found = drift.survey(bare, FakeEngine(bare, rows, images=images, hashes=hashes_text(HASH)))
    plan, unchanged = drift.changes(found, found.active)
    assert [(c.service, c.action) for c in plan] == [("db", "pull"), ("redis", "cannot create"),
                                                     ("kafka", "create"), ("web", "recreate"), ("plugins", "start")]
    assert plan[-1].why == "exited (137)"
    assert unchanged == ["clickhouse", "zookeeper", "worker"]


# ----------------------------------------------------------------------------- parsers
_names = st.from_regex(r"[a-z][a-z0-9_-]{0,12}", fullmatch=True)
_hashes = st.text("0123456789abcdef", min_size=64, max_size=64)
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_noise = st.one_of(st.just(""), st.just("   "),
                   _text.filter(lambda line: len(line.splitlines()) <= 1 and len(line.split()) != 2),
                   st.builds(lambda a, b: f"{a} {b}", _names, st.sampled_from(["-", "xyz!", "sha256:"])))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_names, _hashes, max_size=10), st.lists(_noise, max_size=5), st.randoms())
def test_hash_output_parses_to_exactly_its_services_whatever_else_it_holds(wanted, noise, rnd):
    lines = [f"{' ' * rnd.randint(0, 2)}{name}{' ' * rnd.randint(1, 3)}{value.upper() if rnd.random() < .2 else value}"
             for name, value in wanted.items()]
    lines += [line for line in noise if "\n" not in line and "\r" not in line]
    rnd.shuffle(lines)
    assert drift.parse_hashes("\n".join(lines)) == wanted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wanted_services=st.sets(st.sampled_from(SERVICES)), running=st.sets(st.sampled_from(SERVICES)),
       changed=st.sets(st.sampled_from(SERVICES)), extra=st.sets(_names, max_size=3))
def test_only_a_service_compose_names_with_another_hash_is_flagged(bare, wanted_services, running, changed, extra):
    """Extra services in Compose's answer (the proxy) and services it leaves out never make a finding of
    their own; a config finding is exactly a running service whose hash Compose gives and differs."""
    wanted = {name: HASH[name] for name in wanted_services} | {name: "a" * 64 for name in extra}
    rows = [container(bare, name, "0" * 64 if name in changed else HASH[name]) for name in SERVICES if name in running]
    services = {name: {"image": IMAGES[name]} for name in SERVICES}
    found = drift.judge(bare, "posthog", wanted, services, IMAGE_IDS, [drift.parse_listing(json.dumps(r))[0]
                                                                      for r in rows], set(SERVICES))
    assert {f.service for f in found if f.kind == "config"} == wanted_services & running & changed
    assert all(f.kind == "config" for f in found)


_label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.fixed_dictionaries({"id": _names, "name": _label_text, "state": st.sampled_from(["running", "exited", ""]),
                           "status": _label_text, "networks": _label_text},
                          optional={label: _label_text for label in drift._LABELS}).map(json.dumps),
    _label_text, st.just("[1, 2]"), st.just('{"id": ""}')), max_size=8))
def test_any_listing_parses_without_raising_and_keeps_each_row_s_labels(lines):
    text = "\n".join(lines)
    parsed = drift.parse_listing(text)
    rows = [json.loads(line) for line in text.splitlines() if _is_row(line)]
    assert [c.id for c in parsed] == [row["id"] for row in rows]
    for row, found in zip(rows, parsed):
        assert found.labels == {label: row[label] for label in drift._LABELS if row.get(label)}


def _is_row(line: str) -> bool:
    try:
        row = json.loads(line)
    except ValueError:
        return False
    return isinstance(row, dict) and bool(row.get("id"))


# ----------------------------------------------------------------------------- status and up --dry-run, real Compose
@pytest.fixture
def running(deployed, monkeypatch):
    """The deployment copy with its eight containers as Compose created them: their labels carry the
    hashes the real Compose computes for the copy's files and .env, and their environment is the model's."""
    result = subprocess.run(compose_command(deployed, "config", "--hash", "*"), cwd=deployed, capture_output=True,
                            text=True, check=True)
    wanted = drift.parse_hashes(result.stdout)
    assert set(wanted) == set(SERVICES), result.stdout
    model = compose.effective_services(deployed)
    image_ids = {model[name]["image"]: "sha256:" + hashlib.sha256(model[name]["image"].encode()).hexdigest()
                 for name in SERVICES}
    rows = []
    for name in SERVICES:
        row = container(deployed, name, wanted[name], image=model[name]["image"],
                        image_id=image_ids[model[name]["image"]])
        row["_env"] = {key: str(value) for key, value in (model[name].get("environment") or {}).items()
                       if value is not None}
        rows.append(row)
    monkeypatch.setattr(stack, "readiness", lambda values, timeout=3.0: (True, True, "/_readyz answered 200"))
    return deployed, rows, image_ids


def test_status_flags_exactly_the_services_that_read_a_changed_value_and_exits_0(running, capsys):
    root, rows, image_ids = running
    set_env(root, TRUSTED_PROXIES="10.1.2.3")  # read by web and worker only (variables.yml)
    engine = FakeEngine(root, rows, images=image_ids, real_compose=True)
    lifecycle.status(root, engine, as_json=True)
    report = json.loads(capsys.readouterr().out)
    flagged = {row["service"]: row["drift"] for row in report["services"] if row["drift"]}
    assert set(flagged) == {"web", "worker"}
    reason = "configuration changed since it was started (TRUSTED_PROXIES): run `invoke up` to recreate it"
    assert flagged["web"] == [{"service": "web", "container": "posthog-web-1", "kind": "config", "reason": reason,
                               "changed": ["TRUSTED_PROXIES"]}]
    assert report["drift"]["checked"] is True and len(report["drift"]["findings"]) == 2
    lifecycle.status(root, engine)  # returns: drift does not make status fail
    text = capsys.readouterr().out.splitlines()
    assert f"web: {reason}" in text and f"worker: {reason}" in text
    assert text[-1] == "8 of 8 services running and healthy; not as the files say: web, worker (see above)."
    assert len(engine.compose_config_calls()) == 1  # one for every service, then remembered while .env is unchanged


def test_up_dry_run_lists_what_it_would_recreate_and_why_and_changes_nothing(running, capsys):
    root, rows, image_ids = running
    set_env(root, TRUSTED_PROXIES="10.1.2.3")
    rows = [row for row in rows if row[drift.SERVICE_LABEL] != "kafka"]
    engine = FakeEngine(root, rows, images=image_ids, real_compose=True, dry_run=True)
    lifecycle.up(root, engine, [])
    out = capsys.readouterr().out
    assert "(dry run) up would change:\n" in out
    assert "  kafka   create: not created\n" in out
    assert "  web     recreate: configuration changed since it was started (TRUSTED_PROXIES)\n" in out
    assert "  worker  recreate: configuration changed since it was started (TRUSTED_PROXIES)\n" in out
    assert "  left as they are (running as the files say): db, redis, clickhouse, zookeeper, plugins\n" in out
    assert out.rstrip().endswith(" up --detach")  # Compose's command is shown, not run (FakeEngine refuses it)
    narrowed = FakeEngine(root, rows, images=image_ids, real_compose=True, dry_run=True)
    lifecycle.up(root, narrowed, ["plugins"])  # Compose also acts on what plugins depends on
    out = capsys.readouterr().out
    assert "  web    recreate" in out and "  kafka  create" in out and "worker" not in out
