"""Zero failed requests behind the edge proxy, measured on a real engine: PostHog's own traffic (pages,
readiness, captured events each with its own uuid; tests/e2e/loadloop.py) runs through the proxy at up to
150 requests/s while the deployment changes under it:

  (a) a good `invoke upgrade` (v1 -> v2),
  (b) the automatic rollback of a version whose web never gets ready (v2 -> broken -> v2), then
      `invoke upgrade --to` the previous version (v2 -> v1),
  (c) a live `invoke harden` of an item that recreates web (an insecure SECRET_KEY, `--only secrets`),
  (d) an `.env` change that touches web (TRUSTED_PROXIES), then `invoke up`.

Each case: 0 failed requests, web never stopped before its successor started, and every event PostHog
accepted is stored in ClickHouse afterwards. Then, without the proxy, a good upgrade leaves web's published
port unanswered only while it switches (at most 2 s, from the old web's SIGTERM to the new one's start) and
boots (see MAX_IN_PLACE_SWITCH).

One deployment serves every case in order (each starts from where the previous one left it): its images
come from a registry on the engine, as in tests/e2e/test_upgrade.py. Each case prints one line: requests,
failed, latency p50/p95/p99/max of the requests started during the operation, the outage clients saw of
web, and the worker's and plugin server's outages from their containers' health during the operation."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e import harness
from tests.e2e.harness import free_port, free_proxy_subnet, make_deployment, start_registry
from tests.e2e.loadloop import EngineEvents, LoadLoop, ServiceWatch, Target, in_place_gap, missing_from_clickhouse

pytestmark = [pytest.mark.e2e, pytest.mark.lanes(
    "local", reason="switches between stand-in tags pushed to a registry built here (v1, v2, broken) and writes "
                    "the project straight into the stand-in's posthog_team")]

REPOSITORY = "posthog/posthog"
# Numbered releases one patch apart, moves upgrades.yml reviewed and allowed to run side by side (a commit-SHA
# tag or a downgrade is switched in place: operations/upgrade/surge_gate.py).
V1, V2, BROKEN = "release-1.41.0", "release-1.41.1", "release-1.41.2"
TOKEN = "phc_e2eZeroDowntimeKey0123456789"
DOMAIN = "posthog.test"
#: Without the proxy web's published port belongs to one container, so an in-place switch leaves it unanswered
#: while the old web stops and the new one boots. Two parts, bounded apart:
#: - the switch itself, from the old container's SIGTERM to the new container's start (gunicorn's stop, at
#:   most its 1 s select with nothing in flight, then Docker removing one container and starting the other,
#:   which Compose created before it stopped the old one): the part the kit decides, at most 2 s;
#: - the new web's boot, which the image decides: its start runs PostHog's migrations and their check (eight
#:   Django management commands, bin/migrate and bin/migrate-check at 1.43.0) before gunicorn listens. On the
#:   stand-in images that is 0.7 s on a quiet host and 2-9 s on a loaded 2-core one; PostHog's own takes
#:   tens of seconds. The whole outage clients see is bounded by this (no pull, backup or health wait of the
#:   kit's happens while web is down).
MAX_IN_PLACE_SWITCH = 2.0
MAX_WEB_OUTAGE_WITHOUT_PROXY = 15.0

#: Seconds the loop runs before the operation starts and after it ends.
BEFORE_AND_AFTER = 2.0

MEASURED: dict[str, dict] = {}


@pytest.fixture(scope="module")
def live(e2e_engine, tmp_path_factory):
    """A running deployment at v1 with a project, its images from a registry on the engine; removed with its
    volumes (the proxy's too) after the module, also when a case failed."""
    registry = start_registry(e2e_engine)
    deployment = None
    try:
        prefix = "posthog-compose-e2e/posthog-standin"
        registry.publish(f"{prefix}:v1", REPOSITORY, V1)
        registry.publish(f"{prefix}:v2", REPOSITORY, V2)
        registry.publish(f"{prefix}:broken", REPOSITORY, BROKEN)
        deployment = make_deployment(tmp_path_factory.mktemp("zero-downtime") / "deployment", e2e_engine)
        third = int(free_proxy_subnet()[1].split(".")[2])  # a /29 no bridge here routes, in this worker's band
        deployment.set_env(POSTHOG_IMAGE=f"{registry.address}/{REPOSITORY}:{V1}", PROXY_HTTP_PORT=str(free_port()),
                           PROXY_HTTPS_PORT=str(free_port()), PROXY_SUBNET=f"10.254.{third}.0/29",
                           PROXY_ADDRESS=f"10.254.{third}.6")
        started = deployment.invoke("up", "--timeout", "300")
        assert started.returncode == 0, started.stdout + started.stderr
        deployment.psql(f"INSERT INTO posthog_team (api_token, name) VALUES ('{TOKEN}', 'e2e');")
        enabled = deployment.invoke("proxy", "--enable", "--domain", DOMAIN)
        assert enabled.returncode == 0, enabled.stdout + enabled.stderr
        yield deployment
    finally:
        if deployment is not None:
            deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
            # Once the proxy is off, its volumes are no longer in the files `down --volumes` reads.
            e2e_engine.docker("volume", "rm", "posthog_proxy-data", "posthog_proxy-config", check=False)
        registry.stop()
        if MEASURED:
            harness.progress("zero-downtime measurements: " + json.dumps(MEASURED))


def _through_proxy(deployment) -> Target:
    values = deployment.values()
    return Target.through_proxy(DOMAIN, int(values["PROXY_HTTPS_PORT"]), str(deployment.root / "certs" / "ca.crt"))


def _measure(deployment, case: str, target: Target, *operation: str, expect_exit: int = 0):
    """Run `invoke OPERATION` under the loop, the watch of web, worker and plugins and the stream of web's
    container events; print the case's line. Returns (the task's result, the loop's summary, the accepted
    events missing in ClickHouse, the in-place switch's seconds or None: loadloop.in_place_gap)."""
    project = deployment.values().get("COMPOSE_PROJECT_NAME") or "posthog"
    loop = LoadLoop(target, TOKEN)
    with loop, EngineEvents(deployment.engine.env, project, "web") as events:
        with ServiceWatch(deployment.engine.docker, project, ("web", "worker", "plugins")) as watch:
            time.sleep(BEFORE_AND_AFTER)  # answers before the operation: the target works to begin with
            with loop.window():
                result = deployment.invoke(*operation)
            time.sleep(BEFORE_AND_AFTER)  # and after it: what the task left serves too
    # Every case starts a new web container (a broken one too): the stream of events was live by then.
    assert events.saw("start"), f"no start of a web container among the engine's events: {events.text!r}"
    switch = in_place_gap(events.text)
    summary = loop.summary()
    outages = {service: round(watch.outage(service), 1) for service in ("web", "worker", "plugins")}
    missing = missing_from_clickhouse(deployment, set(summary.accepted_uuids)) if summary.accepted_uuids else set()
    line = summary.line(case, worker=outages["worker"], plugins=outages["plugins"])
    line += f"; web container outage {outages['web']:.1f} s; {len(missing)} accepted events missing in ClickHouse"
    if switch is not None:
        line += f"; in-place switch (old web's SIGTERM to new web's start) {switch:.2f} s"
    # The task's own line on how web was switched (beside the old one, or in place and why), as it printed it.
    switched = [text.strip() for text in result.stdout.splitlines()
                if text.startswith("web") and ("beside" in text or "in place" in text)]
    line += f"; {switched[0] if switched else 'the task said nothing of how web was switched'}"
    if summary.first_failures:
        line += f"; first failures: {'; '.join(summary.first_failures)}"
    harness.progress(f"  {line}")
    print(line)
    window = summary.window_latency
    MEASURED[case] = {"requests": summary.sent, "failed": summary.failed_total, "failed_by_kind": summary.failed,
                      "accepted_events": len(summary.accepted_uuids), "missing_in_clickhouse": len(missing),
                      "window_ms": {k: None if v is None else round(v * 1000) for k, v in window.items()},
                      "web_outage_s": round(summary.outage, 2), "container_outage_s": outages,
                      "task_exit": result.returncode, "web_switch": switched,
                      "in_place_switch_s": None if switch is None else round(switch, 2)}
    assert result.returncode == expect_exit, result.stdout + result.stderr
    return result, summary, missing, switch


def _assert_no_failed_request_and_every_event_stored(summary, missing, switch) -> None:
    assert switch is None, f"web was stopped {switch:.2f} s before a new one started: not a switch beside it"
    assert summary.sent > 0 and summary.accepted_uuids, summary
    assert summary.failed_total == 0, \
        f"{summary.failed_total} failed requests: {summary.failed}; first: {'; '.join(summary.first_failures)}"
    assert not missing, f"{len(missing)} accepted events are not in ClickHouse, e.g. {sorted(missing)[:3]}"


def _web_containers(deployment) -> list[dict]:
    ids = deployment.engine.docker("ps", "--all", "--quiet", "--filter", "label=com.docker.compose.project=posthog",
                                   "--filter", "label=com.docker.compose.service=web").stdout.split()
    return json.loads(deployment.engine.docker("inspect", *ids).stdout) if ids else []


def _all_containers(deployment) -> set[str]:
    return set(deployment.engine.docker("ps", "--all", "--quiet", "--no-trunc", "--filter",
                                        "label=com.docker.compose.project=posthog").stdout.split())


def _one_web_unpinned_and_settled(deployment, version: str) -> dict:
    """After a switch beside the old web: exactly one web container, running ``version``; the proxy's
    /etc/hosts as Docker wrote it (the drain's pin taken out again); a plain `compose up -d` recreates
    nothing (the new container carries the configuration hash Compose expects)."""
    hosts = deployment.compose("exec", "-T", "proxy", "cat", "/etc/hosts").stdout
    assert "posthog-compose" not in hosts and "\tweb\t" not in hosts, hosts
    (web,) = _web_containers(deployment)
    assert web["Config"]["Image"].endswith(f":{version}") and web["State"]["Status"] == "running", web["Config"]
    before = _all_containers(deployment)
    deployment.compose("up", "--detach")
    assert _all_containers(deployment) == before
    return web


def _image(deployment) -> str:
    return deployment.values()["POSTHOG_IMAGE"]


def test_a_good_upgrade_through_the_proxy_fails_no_request(live):
    result, summary, missing, switch = _measure(live, "(a) upgrade v1 -> v2 through the proxy", _through_proxy(live),
                                        "upgrade", "--to", V2, "--timeout", "240")
    assert _image(live).endswith(f":{V2}")
    assert "web: replaced beside the running container behind the edge proxy" in result.stdout, result.stdout
    assert "the proxy now dials it alone" in result.stdout  # drained before the old one stopped
    _one_web_unpinned_and_settled(live, V2)
    _assert_no_failed_request_and_every_event_stored(summary, missing, switch)


def test_the_automatic_rollback_of_a_broken_version_fails_no_request_through_the_proxy(live):
    before = _image(live)
    (serving,) = _web_containers(live)
    result, summary, missing, switch = _measure(live, "(b) upgrade to a broken version, rolled back through the proxy",
                                        _through_proxy(live), "upgrade", "--to", BROKEN, "--timeout", "90",
                                        expect_exit=1)
    assert "back on" in result.stdout and _image(live) == before, result.stdout + result.stderr
    # The broken web never turned ready, so it never joined; the messages say so, and the serving
    # container was never touched.
    assert "web was not replaced" in result.stdout + result.stderr
    assert "web: replaced beside" not in result.stdout and "nothing to replace" in result.stdout, result.stdout
    (after,) = _web_containers(live)
    assert after["Id"] == serving["Id"]
    _assert_no_failed_request_and_every_event_stored(summary, missing, switch)


def test_going_back_to_the_previous_version_through_the_proxy_fails_no_request(live):
    _, summary, missing, switch = _measure(live, "(b) upgrade --to the previous version v2 -> v1 through the proxy",
                                   _through_proxy(live), "upgrade", "--to", V1, "--timeout", "240")
    assert _image(live).endswith(f":{V1}")
    _assert_no_failed_request_and_every_event_stored(summary, missing, switch)


def test_a_live_harden_that_recreates_web_through_the_proxy_fails_no_request(live):
    # An insecure SECRET_KEY in .env (short), not yet applied: harden's secrets item replaces it, and the new
    # key reaches web, worker and plugins.
    live.set_env(SECRET_KEY="e2e-short-secret-key")
    _, summary, missing, switch = _measure(live, "(c) harden --only secrets through the proxy", _through_proxy(live),
                                   "harden", "--only", "secrets", "--yes")
    assert live.values()["SECRET_KEY"] != "e2e-short-secret-key"
    _assert_no_failed_request_and_every_event_stored(summary, missing, switch)


def test_an_env_change_to_web_then_up_through_the_proxy_fails_no_request(live):
    values = live.values()
    # One more trusted proxy address inside the proxy's own network: web's (and the worker's) environment
    # changes, what they do with requests does not.
    extra = values["PROXY_ADDRESS"].rsplit(".", 1)[0] + ".5"
    live.set_env(TRUSTED_PROXIES=f"{values['TRUSTED_PROXIES']},{extra}")
    _, summary, missing, switch = _measure(live, "(d) .env change to web, then up, through the proxy", _through_proxy(live),
                                   "up", "--timeout", "300")
    _assert_no_failed_request_and_every_event_stored(summary, missing, switch)


def test_a_pin_left_in_the_proxy_is_named_by_status_and_taken_out_by_up(live):
    """A switch killed before its undo, with its journal entry gone too: the proxy would send every request
    to an address nobody answers. status names it (the proxy degraded), and up takes it out."""
    from posthog_compose.operations.surge import drain

    stale = "203.0.113.7"  # TEST-NET-3: no container has it
    live.compose("exec", "-T", "proxy", "tee", "-a", "/etc/hosts", input=f"{stale}\tweb\t{drain.MARK}\n")
    status = live.invoke("status", "--json")
    proxy = next(row for row in json.loads(status.stdout)["services"] if row["service"] == "proxy")
    assert proxy["verdict"].startswith("degraded: ") and proxy["web_pinned_to"]["addresses"] == [stale], proxy
    assert proxy["web_pinned_to"]["stale"] is True
    said = live.invoke("status")
    assert f"pins web to {stale}, which no web container has" in said.stdout, said.stdout
    up = live.invoke("up", "--timeout", "300")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"still pinned web to {stale}" in up.stdout and "taking that out" in up.stdout, up.stdout
    assert "posthog-compose" not in live.compose("exec", "-T", "proxy", "cat", "/etc/hosts").stdout
    proxy = next(row for row in json.loads(live.invoke("status", "--json").stdout)["services"]
                 if row["service"] == "proxy")
    assert proxy["verdict"] == "ok" and "web_pinned_to" not in proxy, proxy


def test_an_image_edited_in_env_across_a_refused_move_is_planned_in_place_by_up(live):
    """POSTHOG_IMAGE changed in .env by hand, not through `invoke upgrade`: `up` asks the same gate, so a
    move upgrades.yml refuses never runs its migrations beside the old web (the plan, read as JSON)."""
    before = live.values()["POSTHOG_IMAGE"]
    try:
        live.set_env(POSTHOG_IMAGE=before.rsplit(":", 1)[0] + ":release-1.42.0")  # crosses the gate before 1.42
        planned = live.invoke("up", "--dry-run", "--json")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        (web,) = [step for step in json.loads(planned.stdout)["order"] if step["service"] == "web"]
        assert web["action"] == "recreate in place", web
        assert "may not run side by side" in web["line"] and "crosses the upgrade gate" in web["line"], web
    finally:
        live.set_env(POSTHOG_IMAGE=before)
    planned = json.loads(live.invoke("up", "--dry-run", "--json").stdout)
    assert not [step for step in planned["order"] if step["service"] == "web"], planned  # nothing left to do


def test_without_the_proxy_a_good_upgrade_leaves_web_unanswered_only_while_it_boots(live):
    disabled = live.invoke("proxy", "--disable")
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr
    target = Target.web_port(int(live.values()["WEB_PORT"]))
    _, summary, missing, switch = _measure(live, "upgrade v1 -> v2 without the proxy (web's published port)", target,
                                   "upgrade", "--to", V2, "--timeout", "240")
    assert _image(live).endswith(f":{V2}")
    # Without the proxy web's port belongs to one container: an in-place switch costs its outage, bounded here
    # in its two parts (see MAX_IN_PLACE_SWITCH); every event PostHog did accept is still stored.
    assert switch is not None, "the engine saw no stop of the old web and start of a new one"
    assert switch <= MAX_IN_PLACE_SWITCH, f"the in-place switch took {switch:.2f} s"
    assert 0 < summary.outage <= MAX_WEB_OUTAGE_WITHOUT_PROXY, summary.line("without the proxy")
    assert not missing, f"{len(missing)} accepted events are not in ClickHouse"
