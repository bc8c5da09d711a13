"""Recreating only what changed (operations/recreation.py): which services `up` and `harden` recreate,
decided from Compose's config hashes and the containers' labels as the engine lists them (a faked engine,
tests/unit/test_drift.py's), in which order (datastores, web, then worker and plugins) and how (web
surges only when the surge is available); then that applying the plan names only those services to
Compose. The proof on an engine is tests/e2e/test_recreate_changed.py."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.operations import lifecycle, recreation, stack
from posthog_compose.operations.engine import Runner
from posthog_compose.operations.stack import drift
from tests.conftest import REPO, set_env
from tests.unit.test_drift import HASH, FakeEngine, container, hashes_text, running  # noqa: F401 (fixture)

PROXY_OFF = "the edge proxy is off"
DATASTORES = [name for name in SERVICES if name not in ("web", "worker", "plugins")]
STATES = ("unchanged", "changed", "new image", "missing", "stopped")


def _model(monkeypatch):
    from tests.unit.test_drift import IMAGES

    model = {name: {"image": IMAGES[name], "environment": {}} for name in SERVICES}
    monkeypatch.setattr(drift, "_model", lambda root: model)


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A deployment folder with only its compose file, a Compose the faked engine answers for, and the
    model Compose would build: the eight services."""
    monkeypatch.setenv("POSTHOG_COMPOSE_BINARY", "compose-of-the-test")
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    _model(monkeypatch)
    return tmp_path


def _rows(root, states: dict[str, str]) -> list[dict]:
    rows = []
    for name, state in states.items():
        if state == "missing":
            continue
        row = container(root, name, "0" * 64 if state == "changed" else None,
                        state="exited" if state == "stopped" else "running")
        if state == "new image":  # created from an image the pinned reference no longer names
            row[drift.IMAGE_LABEL] = "sha256:" + "e" * 64
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the decision
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(states=st.fixed_dictionaries({name: st.sampled_from(STATES) for name in SERVICES}), proxy=st.booleans())
def test_the_plan_recreates_exactly_the_changed_services_in_order_and_web_surges_only_behind_the_proxy(
        bare, monkeypatch, states, proxy):
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None if proxy else PROXY_OFF)
    engine = FakeEngine(bare, _rows(bare, states), hashes=hashes_text(HASH))
    planned = recreation.plan(bare, engine)
    assert planned.error == ""
    actions = {step.service: step.action for step in planned.steps}
    assert set(actions) == set(SERVICES)
    recreated = {name for name, action in actions.items() if action in (recreation.RECREATE, recreation.SURGE)}
    assert recreated == {name for name, state in states.items() if state in ("changed", "new image")}
    assert {name for name, action in actions.items() if action == recreation.START} == \
        {name for name, state in states.items() if state in ("missing", "stopped")}
    assert set(planned.unchanged) == {name for name, state in states.items() if state == "unchanged"}
    assert (actions["web"] == recreation.SURGE) == (proxy and "web" in recreated)
    assert all(actions[name] != recreation.SURGE for name in SERVICES if name != "web")
    order = [step.service for step in planned.steps]
    assert order[:len(DATASTORES)] == DATASTORES and order[len(DATASTORES):] == ["web", "worker", "plugins"]
    lines = planned.lines()
    assert len(lines) == sum(1 for state in states.values() if state != "unchanged")  # one per service that changes
    if "web" in recreated:
        web_line = next(line for line in lines if line.startswith("web: "))
        restarting = [name for name in recreation.WEB_USES if name in recreated]
        surge_line = (f"web: surge (up through the proxy; requests that need {' or '.join(restarting)} fail while "
                      if restarting else "web: surge (no failed requests through the proxy)")
        assert web_line.startswith(surge_line if proxy else
                                   "web: recreated in place (the edge proxy is off: no answers while it stops and boots)")
    if actions["web"] != recreation.UNCHANGED:
        for name in ("worker", "plugins"):
            if name in recreated:
                assert f"{name}: recreated after web" in "\n".join(lines)
    assert not any(c for c in engine.calls if c[0] != "docker" and "up" in c)  # planning changes nothing


def test_a_plan_that_cannot_compare_leaves_compose_to_decide(bare, monkeypatch):
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: PROXY_OFF)
    planned = recreation.plan(bare, FakeEngine(bare, engine_down=True, hashes=hashes_text(HASH)))
    assert planned.error and planned.steps == [] and not planned.recreates


# ----------------------------------------------------------------------------- applying it
class Recorder:
    """stack.start_and_wait and the surge, recorded instead of run."""

    def __init__(self, monkeypatch):
        self.calls: list[list[str]] = []
        monkeypatch.setattr(stack, "start_and_wait", self.start_and_wait)
        monkeypatch.setattr(recreation, "replace_web", lambda root, runner, timeout: self.calls.append(["surge web"]))

    def start_and_wait(self, root, runner, command, services, timeout, readiness_values=None):
        self.calls.append(command[command.index("up"):])
        return 1.0


@pytest.mark.parametrize("proxy", [True, False])
def test_apply_acts_on_the_changed_services_only_datastores_then_web_then_worker_and_plugins(
        bare, monkeypatch, proxy):
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None if proxy else PROXY_OFF)
    states = {name: "unchanged" for name in SERVICES}
    states.update(redis="changed", web="changed", worker="changed", plugins="stopped")
    planned = recreation.plan(bare, FakeEngine(bare, _rows(bare, states), hashes=hashes_text(HASH)))
    recorder = Recorder(monkeypatch)
    recreation.apply(bare, Runner(bare), planned, 600, {})
    web = ["surge web"] if proxy else ["up", "--detach", "--no-deps", "web"]
    assert recorder.calls == [["up", "--detach", "--no-deps", "redis"], web,
                              ["up", "--detach", "--no-deps", "worker", "plugins"]]


def test_a_renewed_certificate_forces_its_users_and_nothing_else(bare, monkeypatch):
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: PROXY_OFF)
    engine = FakeEngine(bare, _rows(bare, {name: "unchanged" for name in SERVICES}), hashes=hashes_text(HASH))
    planned = recreation.plan(bare, engine, force={"db": "loads the renewed certificates"})
    assert planned.lines() == ["db: recreated in place; loads the renewed certificates"]
    recorder = Recorder(monkeypatch)
    recreation.apply(bare, Runner(bare), planned, 600, {})
    assert recorder.calls == [["up", "--detach", "--force-recreate", "--no-deps", "db"]]


# ----------------------------------------------------------------------------- up
def test_up_recreates_only_what_changed_in_order_before_its_usual_wait(deployed, monkeypatch, capsys):
    """`up` after an .env change that reaches worker only: worker alone is named to Compose before the
    usual `compose up` (which then finds nothing to change)."""
    from posthog_compose.configuration import checks

    monkeypatch.setattr(checks, "require_clean", lambda root: None)
    monkeypatch.setattr(lifecycle, "check_images_match", lambda *args: None)
    monkeypatch.setattr(lifecycle, "check_datastores_write", lambda *args: None)
    monkeypatch.setattr(stack, "check_url", lambda values, **kw: (True, "ok"))
    monkeypatch.setattr(lifecycle, "recover", lambda root, runner: None)
    states = {name: "unchanged" for name in SERVICES}
    states["worker"] = "changed"
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: PROXY_OFF)
    _model(monkeypatch)
    engine = FakeEngine(deployed, _rows(deployed, states), hashes=hashes_text(HASH))  # refuses any change
    recorder = Recorder(monkeypatch)
    lifecycle.up(deployed, engine, [])
    assert recorder.calls[0] == ["up", "--detach", "--no-deps", "worker"]
    assert recorder.calls[1:] == [["up", "--detach"]]
    out = capsys.readouterr().out
    assert "Recreating only what changed, in this order:\n  worker: recreated in place" in out
    assert "  left as they are: db, redis, clickhouse, zookeeper, kafka, web, plugins\n" in out


@pytest.mark.parametrize("proxy, named", [(True, []), (False, []), (True, ["worker"])])
def test_up_without_waiting_says_first_when_compose_recreates_a_web_that_would_surge(deployed, monkeypatch, capsys,
                                                                                   proxy, named):
    """Also when web is only a dependency of the service named with -s: Compose recreates it all the same."""
    from posthog_compose.configuration import checks

    monkeypatch.setattr(checks, "require_clean", lambda root: None)
    monkeypatch.setattr(lifecycle, "recover", lambda root, runner: None)
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None if proxy else PROXY_OFF)
    states = {name: "unchanged" for name in SERVICES}
    states["web"] = "changed"
    _model(monkeypatch)
    engine = FakeEngine(deployed, _rows(deployed, states), hashes=hashes_text(HASH))
    ran = []
    faked = engine.run

    def run(command, *, mutating=True, **kwargs):  # what changes is recorded; the rest the fake engine answers
        if mutating:
            ran.append(list(command))
            return subprocess.CompletedProcess(command, 0, "", "")
        return faked(command, mutating=False, **kwargs)

    monkeypatch.setattr(engine, "run", run)
    lifecycle.up(deployed, engine, named, wait=False)
    out = capsys.readouterr().out
    warned = "warning: web changed, and with --no-wait Compose recreates it in place" in out
    assert warned == proxy, out
    assert [command[command.index("up"):] for command in ran] == [["up", "--detach", *named]]


def test_up_dry_run_says_how_each_changed_service_is_recreated(running, monkeypatch, capsys):
    root, rows, image_ids = running
    set_env(root, TRUSTED_PROXIES="10.1.2.3")  # read by web and worker only
    for proxy, web_line in ((False, "  web: recreated in place (the edge proxy is off: no answers while it stops and boots)"),
                            (True, "  web: surge (no failed requests through the proxy)")):
        monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None if proxy else PROXY_OFF)
        engine = FakeEngine(root, rows, images=image_ids, real_compose=True, dry_run=True)
        lifecycle.up(root, engine, [])
        out = capsys.readouterr().out
        assert "(dry run) in this order:\n" + web_line in out
        assert "  worker: recreated after web; configuration changed since it was started (TRUSTED_PROXIES)\n" in out
        assert "  db: " not in out and "  plugins: " not in out


def test_up_dry_run_json_is_the_same_plan_for_a_machine_and_nothing_else(running, monkeypatch, capsys):
    import json

    root, rows, image_ids = running
    set_env(root, TRUSTED_PROXIES="10.1.2.3")  # read by web and worker only
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)
    lifecycle.up(root, FakeEngine(root, rows, images=image_ids, real_compose=True, dry_run=True), [])
    text = capsys.readouterr().out
    lifecycle.up(root, FakeEngine(root, rows, images=image_ids, real_compose=True, dry_run=True), [], as_json=True)
    planned = json.loads(capsys.readouterr().out)  # the whole output is one document
    assert planned["error"] is None and planned["surge_unavailable"] is None
    assert [(c["service"], c["action"]) for c in planned["changes"]] == [("web", "recreate"), ("worker", "recreate")]
    assert [(s["service"], s["action"]) for s in planned["order"]] == [("web", recreation.SURGE),
                                                                       ("worker", recreation.RECREATE)]
    for step in planned["order"]:  # the lines people read are the same
        assert f"  {step['line']}\n" in text


def test_up_json_without_dry_run_or_with_verbose_is_refused_in_one_line_and_changes_nothing(running):
    from posthog_compose.errors import OperatorError

    root, rows, image_ids = running
    with pytest.raises(OperatorError, match=r"^--json goes with --dry-run"):
        lifecycle.up(root, FakeEngine(root, rows, images=image_ids), [], as_json=True)  # refuses any change
    verbose = FakeEngine(root, rows, images=image_ids, dry_run=True)
    verbose.verbose = True  # its `$ docker ...` lines would go to stdout, inside the document
    with pytest.raises(OperatorError, match=r"^--json prints one document and nothing else: leave out --verbose"):
        lifecycle.up(root, verbose, [], as_json=True)


# ----------------------------------------------------------------------------- harden's plan
def test_harden_foresees_from_the_planned_env_which_services_it_recreates(running, monkeypatch):
    """Before .env is written, Compose's hashes of the planned text say which running services change:
    here a new SECRET_KEY reaches web, worker and plugins only. The planned text (secrets) is not left behind."""
    from posthog_compose.operations.harden import Change, predicted_recreation

    root, rows, image_ids = running
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: PROXY_OFF)
    engine = FakeEngine(root, rows, images=image_ids, real_compose=True)
    planned = predicted_recreation(root, engine, Change(items=["debug"], env={"SECRET_KEY": "x" * 50}))
    assert planned.error == ""
    assert [step.line() for step in planned.changing] == [
        "web: recreated in place (the edge proxy is off: no answers while it stops and boots); configuration changes",
        "worker: recreated after web; configuration changes", "plugins: recreated after web; configuration changes"]
    assert not [path for path in (root / ".deploy").iterdir() if path.name.startswith("planned-env")]
    unchanged = predicted_recreation(root, engine, Change(items=["debug"]))
    assert (unchanged.error, unchanged.changing) == ("", [])


def test_harden_judges_webs_image_change_as_the_applied_plan_will(running, monkeypatch):
    """`harden --only images` pins web's image to a digest: the digest stands for the tag it was pinned
    from (recorded only when the change is applied), so the foreseen plan surges as the applied one does.
    A value of POSTHOG_IMAGE in the shell is the one Compose uses, whatever .env says."""
    from posthog_compose.operations.harden import Change, predicted_recreation

    root, rows, image_ids = running
    shutil.copy(REPO / "upgrades.yml", root / "upgrades.yml")
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)  # the proxy is on
    engine = FakeEngine(root, rows, images=image_ids, real_compose=True)
    digest = "posthog/posthog@sha256:" + "b" * 64
    pinning = Change(items=["images"], env={"POSTHOG_IMAGE": digest}, pinned={digest: "posthog/posthog:release-1.43.0"})
    (web,) = [step for step in predicted_recreation(root, engine, pinning).changing if step.service == "web"]
    assert web.action == recreation.SURGE, web.line()
    unknown = Change(items=["images"], env={"POSTHOG_IMAGE": digest})  # a digest nobody pinned from a release
    (web,) = [step for step in predicted_recreation(root, engine, unknown).changing if step.service == "web"]
    assert web.action == recreation.RECREATE and "is not a numbered release" in web.line(), web.line()
    monkeypatch.setenv("POSTHOG_IMAGE", "posthog/posthog:release-1.42.0")  # .env still says 1.43.0
    (web,) = [step for step in predicted_recreation(root, engine, Change(items=["debug"], env={"SECRET_KEY": "x" * 50}))
              .changing if step.service == "web"]
    assert web.action == recreation.RECREATE and "release-1.43.0 -> release-1.42.0 is a downgrade" in web.line()


def test_a_moving_tag_pulled_again_is_judged_by_the_image_it_names_now_also_with_a_configuration_change(monkeypatch):
    """`latest` pulled since web started, and .env edited too (Compose reports the configuration, not the
    pull): the ids say the image changed, so the gate is asked and refuses a moving tag."""
    web = drift.Container("w", "posthog-web-1", {drift.SERVICE_LABEL: "web", drift.IMAGE_LABEL: "sha256:" + "1" * 64},
                          "posthog/posthog:latest", "running")
    found = drift.Survey(containers=[web], images={"web": "posthog/posthog:latest"},
                         image_ids={"posthog/posthog:latest": "sha256:" + "2" * 64})
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)  # the proxy is on
    assert "latest is not a numbered release" in recreation.surge_reason(REPO, found)
    same = drift.Survey(containers=[web], images={"web": "posthog/posthog:latest"},
                        image_ids={"posthog/posthog:latest": "sha256:" + "1" * 64})
    assert recreation.surge_reason(REPO, same) is None  # the same image: only the configuration changes
    # `harden --only images` pinned the digest of the very image web runs (`latest` before): the same content
    pinned = "posthog/posthog@sha256:" + "c" * 64
    digest = drift.Survey(containers=[web], images={"web": pinned}, image_ids={pinned: "sha256:" + "1" * 64})
    assert recreation.surge_reason(REPO, digest) is None
    other = drift.Survey(containers=[web], images={"web": pinned}, image_ids={pinned: "sha256:" + "3" * 64})
    assert "is not a numbered release" in recreation.surge_reason(REPO, other)  # a digest of another image
    # `docker ps` shows the old image's id once the reference names another: the model's reference is the one
    shown = drift.Container("w", "posthog-web-1", dict(web.labels), "sha256:" + "1" * 64, "running")
    assert recreation._created_from(drift.Survey(containers=[shown], images={"web": "posthog/posthog:latest"}),
                                    shown) == "posthog/posthog:latest"


# ----------------------------------------------------------------------------- upgrade's plan
@pytest.mark.parametrize("proxy", [True, False])
def test_the_upgrade_plan_says_how_each_service_is_recreated(deployed, monkeypatch, capsys, proxy):
    from posthog_compose.operations.upgrade.plan import Request, make_plan, print_plan

    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None if proxy else PROXY_OFF)
    request = Request(to="release-1.43.1")
    print_plan(make_plan(deployed, request), request, True, deployed)
    out = capsys.readouterr().out
    web = ("web: surge (no failed requests through the proxy); a move upgrades.yml allows" if proxy else
           "web: recreated in place (the edge proxy is off: no answers while it stops and boots)")
    assert f"\n       {web}\n       worker: recreated after web\n       plugins: recreated after web\n" in out


def test_harden_recreates_only_the_changed_services_then_waits_for_all(deployed, monkeypatch, capsys):
    from posthog_compose.operations import harden

    states = {name: "unchanged" for name in SERVICES}
    states.update(web="changed", worker="changed")
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)
    _model(monkeypatch)
    recorder = Recorder(monkeypatch)
    harden._recreate_all(deployed, FakeEngine(deployed, _rows(deployed, states), hashes=hashes_text(HASH)))
    assert recorder.calls == [["surge web"], ["up", "--detach", "--no-deps", "worker"],
                              ["up", "--detach", "--remove-orphans"]]
    assert "  web: surge (no failed requests through the proxy); configuration changed since it was started\n" \
           "  worker: recreated after web; configuration changed since it was started\n" in capsys.readouterr().out


def test_harden_prints_each_service_it_will_recreate_before_it_asks(deployed, monkeypatch, capsys):
    from posthog_compose.operations import harden

    change = harden.Change(items=["debug"], env_remove=["DEBUG"], running=True, lines=["debug: remove DEBUG"])
    monkeypatch.setattr(harden, "plan", lambda *args: (change, []))
    planned = recreation.decide(["db", "web", "worker"], {name: [drift.Container("i", name, {}, "", "running")]
                                                         for name in ("db", "web", "worker")},
                                {"web": "configuration changes", "worker": "configuration changes"}, None)
    monkeypatch.setattr(harden, "predicted_recreation", lambda root, runner, change: planned)
    assert harden._apply_planned(deployed, Runner(deployed, dry_run=True), [], True, False) == 0
    out = capsys.readouterr().out
    assert ("  - then recreate only what changes, in this order, and check health and the URL:\n"
            "      web: surge (no failed requests through the proxy); configuration changes\n"
            "      worker: recreated after web; configuration changes\n") in out
    assert out.index("worker: recreated after web") < out.index("Dry run: nothing changed.")


def test_the_upgrade_plan_keeps_web_in_place_when_the_gate_refuses_both_versions_side_by_side(deployed, monkeypatch,
                                                                                             capsys):
    from posthog_compose.operations.upgrade.plan import Request, make_plan, print_plan

    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)  # the proxy is on
    request = Request(to="a" * 40)  # a commit no entry of upgrades.yml reviews
    plan = make_plan(deployed, request)
    print_plan(plan, request, True, deployed)
    out = capsys.readouterr().out
    assert f"\n       web: recreated in place ({plan.current} and {plan.target} may not run side by side: " in out
    assert "web: surge" not in out


@pytest.mark.parametrize("current, target, basis", [
    ("release-1.43.0", "release-1.43.1", "a move upgrades.yml allows"),
    ("release-1.41.0", "release-1.41.4", "4 reviewed moves without migrations (upgrades.yml)"),
    ("release-1.41.3", "release-1.41.1", "back over 2 reviewed moves without migrations (upgrades.yml)"),
    ("release-1.41.2", "release-1.41.1", "the way back over a move upgrades.yml allows"),
])
def test_the_upgrade_plan_says_why_web_may_surge(deployed, monkeypatch, capsys, current, target, basis):
    from posthog_compose.operations.upgrade.plan import Request, make_plan, print_plan

    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)  # the proxy is on
    # 1.36 to 1.42 accept ClickHouse below 22.4 only (compatibility.yml)
    older = {"CLICKHOUSE_IMAGE": "clickhouse/clickhouse-server:22.3.20.29"} if current.startswith("release-1.41") else {}
    set_env(deployed, POSTHOG_IMAGE=f"posthog/posthog:{current}", **older)
    request = Request(to=target)
    plan = make_plan(deployed, request)
    print_plan(plan, request, True, deployed)
    out = capsys.readouterr().out
    assert f"\n       web: surge (no failed requests through the proxy); {basis}\n" in out, out


# ----------------------------------------------------------------------------- the surge gate for up and harden
@pytest.mark.parametrize("running, wanted, updated, expected", [
    # .env edited by hand across a move upgrades.yml refuses: migration 0260 under 1.40.1's web
    ("posthog/posthog:release-1.40.1", "posthog/posthog:release-1.41.0", False,
     "posthog/posthog:release-1.40.1 and posthog/posthog:release-1.41.0 may not run side by side: release-1.40.1 -> "
     "release-1.41.0: 1.41.0's PostgreSQL migration 0260"),
    ("posthog/posthog:release-1.41.4", "posthog/posthog:release-1.42.0", False, "crosses the upgrade gate"),
    ("posthog/posthog:release-1.43.0", "posthog/posthog:" + "a" * 40, False, "is not a numbered release"),
    ("posthog/posthog:latest", "posthog/posthog:latest", True, "latest is not a numbered release"),  # re-pulled
    ("posthog/posthog:release-1.43.0", "posthog/posthog:release-1.43.1", False, None),  # reviewed and allowed
    ("posthog/posthog:release-1.41.0", "posthog/posthog:release-1.41.4", False, None),  # a jump without migrations
    ("posthog/posthog:release-1.43.0", "posthog/posthog:release-1.43.0", True, None),  # a release tag pulled again
    ("posthog/posthog:latest", "posthog/posthog:latest", False, None),  # the same image: only its configuration changes
    # a mirror given up for Docker Hub: both are web's images, so PostHog's, and the same release
    ("mirror.example:5000/posthog/posthog:release-1.43.0", "posthog/posthog:release-1.43.0", False, None),
    ("mirror.example:5000/posthog/posthog:release-1.42.0", "posthog/posthog:release-1.43.0", False, "drops the table"),
])
def test_up_and_harden_ask_the_surge_gate_when_webs_image_changes(repo, running, wanted, updated, expected):
    reason = recreation.gated(repo, None, running, wanted, updated)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason and "\n" not in reason, reason
        assert "web is switched in place" not in reason  # the plan's line says "recreated in place" once
        assert "not PostHog's image" not in reason
    assert recreation.gated(repo, PROXY_OFF, running, wanted, updated) == PROXY_OFF
    assert recreation.gated(repo, None, None, wanted, updated) is None  # no web runs: nothing to run beside


def test_an_image_edited_in_env_across_a_refused_move_recreates_web_in_place_and_the_plan_says_why(
        bare, monkeypatch):
    monkeypatch.setattr(recreation, "surge_unavailable", lambda root: None)  # the proxy is on
    shutil.copy(REPO / "upgrades.yml", bare / "upgrades.yml")  # Compose's model (the fixture's) gives web 1.43.0
    states = {name: "unchanged" for name in SERVICES}
    states["web"] = "changed"
    rows = _rows(bare, states)
    row = next(row for row in rows if row[drift.SERVICE_LABEL] == "web")
    row.update({"image": "posthog/posthog:release-1.42.0", drift.IMAGE_LABEL: "sha256:" + "4" * 64})  # 1.42.0's
    planned = recreation.plan(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    (web,) = [step for step in planned.steps if step.service == "web"]
    assert web.action == recreation.RECREATE
    assert web.line().startswith("web: recreated in place (posthog/posthog:release-1.42.0 and "
                                 "posthog/posthog:release-1.43.0 may not run side by side: release-1.42.0 -> "
                                 "release-1.43.0: 1.43.0's PostgreSQL migration 0283 drops"), web.line()
    model = drift._model(bare)
    model["web"] = dict(model["web"], image="posthog/posthog:release-1.42.0")  # only web's configuration changed
    monkeypatch.setattr(drift, "_model", lambda root: model)
    planned = recreation.plan(bare, FakeEngine(bare, rows, hashes=hashes_text(HASH)))
    assert [step.action for step in planned.steps if step.service == "web"] == [recreation.SURGE]
