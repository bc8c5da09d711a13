"""`invoke probe`: the answer to "events are not showing up". One uniquely marked event goes through PostHog's
public capture endpoint (through the edge proxy when it is on), and the probe follows it through Kafka into
ClickHouse, printing when each hop was seen and every consumer group's lag; when the event stops, it names
the hop and the next step, and exits 1. Everything has one deadline (--timeout).

One part per module: path (PostHog 1.43's topics, groups and table, the hops and what to do when one stops),
send (the project and the capture request), lag (`kafka-consumer-groups --describe` in the kafka container,
parsed), stored (the row in ClickHouse), tracker (what each look says about the hops) and report (progress,
tables, JSON). This module holds ``run``, the loop with the deadline, and calls every step through its own
names, so a test can replace one here.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from posthog_compose.configuration import datastores
from posthog_compose.errors import OperatorError
from posthog_compose.operations.ingestion import lag, report, send, stored
from posthog_compose.operations.ingestion.lag import LagRow, describe, parse  # noqa: F401 - re-exported
from posthog_compose.operations.ingestion.path import (  # noqa: F401 - re-exported
    CLICKHOUSE_GROUP,
    EVENTS_TOPIC,
    HOPS,
    INGESTION_TOPIC,
    PLUGIN_GROUP,
    PROBE_EVENT,
    STOPPED,
)
from posthog_compose.operations.ingestion.report import Progress
from posthog_compose.operations.ingestion.send import Answer, Project, payload, project, target  # noqa: F401
from posthog_compose.operations.ingestion.stored import count  # noqa: F401 - re-exported
from posthog_compose.operations.ingestion.tracker import HopState, Tracker  # noqa: F401 - re-exported

#: Default deadline of the whole probe, in seconds (`--timeout`).
DEFAULT_TIMEOUT = 60
#: Pause between two looks at Kafka and ClickHouse.
POLL_INTERVAL = 0.5


def _values(root: Path) -> dict[str, str]:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    if not path.exists():
        raise OperatorError(".env does not exist: there is no deployment to probe here (run `invoke up` first)")
    return EnvFile.load(path).resolved()


def _describe(root: Path, runner, values: dict[str, str], timeout: float) -> list[LagRow]:
    return lag.describe(root, runner, values, timeout)


def _count(root: Path, runner, values: dict[str, str], team_id: int | None, distinct_id: str, timeout: float) -> int:
    return stored.count(root, runner, values, team_id, distinct_id, timeout)


def _send(values: dict[str, str], root: Path, body: bytes, timeout: float) -> send.Answer:
    return send.send(values, root, body, timeout)


def _project(root: Path, runner, values: dict[str, str], token: str | None) -> send.Project:
    return send.project(root, runner, values, token)


def _service_labels(root: Path, runner) -> dict[str, str]:
    """{service: state label} from `compose ps`; {} when Compose cannot say (the verdict does without it)."""
    from posthog_compose.operations.stack.states import service_states

    try:
        return {state.service: state.label() for state in service_states(root, runner)}
    except OperatorError:
        return {}


def next_step(tracker: Tracker, key: str, labels: dict[str, str], errors: dict[str, str], timeout: float) -> str:
    """The one line that names the hop the event stopped before and what to do."""
    state = tracker.state(key)
    number = [s.hop.key for s in tracker.states].index(key) + 1
    what, where = STOPPED[key]
    lagging = tracker.lag_detail(key)
    line = (f"the event stopped at hop {number} of {len(tracker.states)} ({state.hop.name}) within {timeout:.0f} s: "
            f"{what}")
    if lagging:
        line += f" ({lagging})"
    source = "kafka" if key in ("plugin-server", "events-topic", "clickhouse") else "clickhouse"
    for service in dict.fromkeys((state.hop.service, source)):
        label = labels.get(service)
        if not labels or label in ("healthy", "running"):
            continue
        if label in ("starting", "unhealthy"):
            return f"{line}; {service} is {label}: `invoke logs -s {service}`"
        return (f"{line}; {service} is not running ({label or 'no container'}): start it with "
                f"`invoke up -s {service}`, then read why it stopped: `invoke logs -s {service}`")
    if errors.get(source):
        return f"{line}; {errors[source]}: `invoke logs -s {source}`"
    return f"{line}: {where}"


def run(root: Path, runner, timeout: float = DEFAULT_TIMEOUT, token: str | None = None, as_json: bool = False,
        out=None) -> int:
    """Probe the ingestion path once; 0 when the event reached the end, else 1 (the hop is named)."""
    out = out or sys.stdout
    if timeout < 1:
        raise OperatorError("--timeout must be 1 second or more (the whole probe's deadline)")
    started = time.monotonic()
    deadline = started + timeout

    def elapsed() -> float:
        return time.monotonic() - started

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    values = _values(root)
    kafka_here = not datastores.is_external(values, "kafka")
    clickhouse_here = not datastores.is_external(values, "clickhouse")
    chosen = _project(root, runner, values, token)
    distinct_id = f"ingestion-probe-{secrets.token_hex(8)}"
    event = {"name": PROBE_EVENT, "distinct_id": distinct_id, "team_id": chosen.team_id, "sent_to": target(values)}
    tracker = Tracker(kafka=kafka_here, clickhouse=clickhouse_here)
    errors: dict[str, str] = {}
    stream = sys.stderr if as_json else out
    print(f"Probe: event {PROBE_EVENT!r} with distinct_id {distinct_id}"
          f"{f' for project {chosen.team_id}' if chosen.team_id is not None else ''} to {event['sent_to']} "
          f"(deadline {timeout:.0f} s)", file=stream, flush=True)

    if kafka_here:
        try:
            tracker.baseline(_describe(root, runner, values, remaining()))
        except OperatorError as exc:
            errors["kafka"] = str(exc)
    sent = time.monotonic()  # each hop's time counts from here: the look-ups before are not the path's

    def since_sent() -> float:
        return time.monotonic() - sent

    answer = _send(values, root, payload(chosen, distinct_id, datetime.now(timezone.utc).isoformat()),
                   min(15.0, max(1.0, remaining())))
    stopped: str | None = None
    step: str | None = None
    if answer.status != 200:
        tracker.state("capture").detail = answer.detail
        stopped, step = "capture", f"the event stopped at hop 1 of {len(HOPS)} (capture): {answer.detail}"
    else:
        tracker.sent(since_sent(), answer.detail)
        tracker.waiting = "the plugin server to consume it" if kafka_here else "the row in the events table"
        progress = Progress(stream, sent)
        with ThreadPoolExecutor(2) as pool:
            while not tracker.done and remaining() > 0:
                progress.update(tracker.waiting)
                looks = {}
                if kafka_here:
                    looks["kafka"] = pool.submit(_describe, root, runner, values, remaining())
                if clickhouse_here:
                    looks["clickhouse"] = pool.submit(_count, root, runner, values, chosen.team_id, distinct_id,
                                                      remaining())
                for source, future in looks.items():
                    try:
                        result = future.result()
                    except OperatorError as exc:
                        errors[source] = str(exc)
                        continue
                    errors.pop(source, None)
                    if source == "kafka":
                        tracker.observe_lag(result, since_sent())
                    else:
                        tracker.observe_stored(result, since_sent())
                if not tracker.done:
                    time.sleep(min(POLL_INTERVAL, remaining()))
        progress.finish()
        halted = tracker.stopped()
        if halted is not None:
            stopped = halted.hop.key
            step = next_step(tracker, stopped, _service_labels(root, runner), errors, timeout)

    lag_note = "" if kafka_here else "  not asked: Kafka is external (ask your provider for the lag of groups " \
                                     f"{PLUGIN_GROUP} and {CLICKHOUSE_GROUP})"
    if kafka_here and errors.get("kafka") and not tracker.rows:
        lag_note = f"  {errors['kafka']}"
    if as_json:
        print(json.dumps(report.document(tracker, event, timeout, elapsed(), stopped, step, lag_note), indent=2),
              file=out)
        if stopped:
            print(f"error: {step}", file=sys.stderr)
        return 1 if stopped else 0
    print(report.text(tracker, lag_note), file=out)
    if stopped:
        raise OperatorError(step)
    unseen = [state.hop.title for state in tracker.states if not state.observable]
    last = max(state.seconds for state in tracker.states if state.reached)
    print(f"\nThe event went through every hop seen from here in {last:.1f} s"
          f"{' (not seen from here: ' + '; '.join(unseen) + ')' if unseen else ''}.", file=out)
    return 0
