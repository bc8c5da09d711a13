"""A bounded request loop for the end-to-end tests: it sends PostHog's own traffic to a deployment while an
operation runs (an upgrade, a rollback, harden, `up` after an `.env` change) and measures what clients saw.

It runs in background threads for a fixed time or until stopped, never faster than its rate (default 150
requests/s, at most 300: the loop is a witness on a small shared host, not a load test). The mix is GETs of
pages PostHog serves (`/_health`, which asks PostgreSQL whether migrations are applied; the `/preflight`
page; `/_readyz?role=web`) and POSTs of events to `/e/`, each event carrying a `uuid` made here, as PostHog
1.43 lets a client do (posthog/api/capture.py:350-360 at the tag; the stand-in: posthog-standin/capture.py).
Every request is recorded (start, latency, status or error); `summary()` gives the counts, the latency
percentiles overall and inside a window (the switch), the longest run of failures as an outage, and the
uuids PostHog accepted, which `wait_until_stored` then looks for in ClickHouse.

Targets: through the edge proxy (HTTPS verified with the deployment's private CA, the deployment's domain
sent as SNI and Host while the connection goes to 127.0.0.1, as tests/e2e/test_proxy.py does with curl's
--resolve), or web's published port without the proxy. Each request opens its own connection and closes it:
a reused connection that the server closed while idle would count a client-side race as a failed request.

The arithmetic (percentiles, outage, pacing, uuid extraction) is plain functions, tested without an engine
in tests/unit/test_loadloop.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid as uuid_module
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

DEFAULT_RATE = 150.0
#: The loop shares a two-core host with the deployment it watches: faster would measure the host, not PostHog.
MAX_RATE = 300.0
DEFAULT_THREADS = 16
#: Above the edge proxy's own retry budget for web (lb_try_duration 10s in proxy/Caddyfile): a request the
#: proxy is still placing is answered by the proxy, not cut short by this client.
DEFAULT_TIMEOUT = 15.0
EVENT_NAME = "zero-downtime-check"

#: One cycle of the mix: 4 captures, 3 /_health, 2 /preflight, 1 readiness in every 10 requests.
DEFAULT_MIX: tuple[tuple[str, str], ...] = (
    ("capture", "/e/"), ("GET", "/_health"), ("capture", "/e/"), ("GET", "/preflight"), ("capture", "/e/"),
    ("GET", "/_health"), ("GET", "/_readyz?role=web"), ("capture", "/e/"), ("GET", "/preflight"),
    ("GET", "/_health"),
)

UUID_PATTERN = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)


# --- the arithmetic --------------------------------------------------------------------------------------

def check_rate(rate: float) -> float:
    """The loop's rate, refused when it is not a positive number of requests per second up to MAX_RATE."""
    if not isinstance(rate, (int, float)) or math.isnan(rate) or rate <= 0 or rate > MAX_RATE:
        raise ValueError(f"rate must be above 0 and at most {MAX_RATE:.0f} requests/s, got {rate!r}")
    return float(rate)


def next_start(previous: float | None, now: float, rate: float) -> float:
    """When the next request may start: not before ``now``, and at least 1/rate after the previous one.

    Late threads never catch up in a burst (the slot moves to ``now``), so in any window of w seconds at most
    floor(w * rate) + 1 requests start, whatever the server's latency does to the threads."""
    if previous is None:
        return now
    return max(now, previous + 1.0 / rate)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100) of ``values``: a latency one request really had, never an
    interpolation between two. None when there are no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, got {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 50), "p95": percentile(values, 95), "p99": percentile(values, 99),
            "max": max(values) if values else None}


def longest_outage(samples: Iterable[tuple[float, bool]], end: float | None = None) -> float:
    """The longest time without a good answer, from (time, ok) samples in any order.

    A run of failures lasts from its first failed sample to the next good one (the moment service was seen
    again); a run still failing at the last sample lasts until ``end`` (default: that last sample). A single
    failure between two good samples is an outage as long as the gap to the next good one."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    longest, down_since = 0.0, None
    for at, ok in ordered:
        if not ok and down_since is None:
            down_since = at
        elif ok and down_since is not None:
            longest, down_since = max(longest, at - down_since), None
    if down_since is not None:
        last = ordered[-1][0] if end is None else max(end, ordered[-1][0])
        longest = max(longest, last - down_since)
    return longest


def engine_events(text: str) -> list[tuple[int, str, str]]:
    """`docker events` lines "TIMENANO ACTION ID" as (nanoseconds, action, container id), oldest first; a
    line of another shape (a warning, a partial last line) is left out."""
    parsed = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].isdigit():
            parsed.append((int(fields[0]), fields[1], fields[2]))
    return sorted(parsed)


def in_place_gap(events: str) -> float | None:
    """From `docker events` lines "TIMENANO ACTION ID" of one service's containers, streamed from before an
    operation: the seconds from the serving container's stop (the "kill" of its SIGTERM; serving: it was not
    created during the operation) to the start of another container after it, the part of an in-place
    switch between the old server's stop and the new one's boot. None when no container started after the
    serving one was told to stop: a switch beside it starts the new one first, and a new one that never
    served and is removed (killed) is not the serving one."""
    parsed = engine_events(events)
    created = {ident for _, action, ident in parsed if action == "create"}
    stopped = next(((at, ident) for at, action, ident in parsed if action == "kill" and ident not in created), None)
    if stopped is None:
        return None
    started = next((at for at, action, ident in parsed if action == "start" and ident != stopped[1]
                    and at >= stopped[0]), None)
    return None if started is None else (started - stopped[0]) / 1e9


class EngineEvents:
    """`docker events` of one service's containers, streamed while an operation runs: asking afterwards
    with --since is not enough, since the daemon replays only its last 256 events and the health checks'
    execs fill that in under a minute. ``text`` is what was seen, one "TIMENANO ACTION ID" line each."""

    def __init__(self, env: dict, project: str, service: str):
        self.command = ["docker", "events", "--filter", f"label=com.docker.compose.project={project}",
                        "--filter", f"label=com.docker.compose.service={service}",
                        "--format", "{{.TimeNano}} {{.Action}} {{.Actor.ID}}"]
        self.env = env
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "EngineEvents":
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                        env=self.env)
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)  # the last events on their way
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def saw(self, action: str) -> bool:
        return any(seen == action for _, seen, _ in engine_events(self.text))


def uuids_in(text: str) -> set[str]:
    """Every UUID written in ``text`` (rows as ClickHouse prints them), lower-cased."""
    return {match.lower() for match in UUID_PATTERN.findall(text)}


def wait_until_stored(read_rows: Callable[[], str], wanted: set[str], timeout: float = 120.0,
                      interval: float = 2.0, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> set[str]:
    """Read the rows until every wanted uuid is among them or ``timeout`` has passed: ingestion (Kafka, the
    plugin server, ClickHouse's Kafka engine) lags behind capture. Returns the uuids still missing."""
    wanted = {value.lower() for value in wanted}
    deadline = clock() + timeout
    while True:
        missing = wanted - uuids_in(read_rows())
        if not missing or clock() >= deadline:
            return missing
        sleep(max(0.0, min(interval, deadline - clock())))


def events_table_rows(deployment) -> str:
    """Every row of ClickHouse's events table as clickhouse-client prints it (TSV), asked in the clickhouse
    container as the probe asks it (posthog_compose/operations/ingestion/stored.py); "" when ClickHouse does
    not answer, so that a wait goes on rather than failing on one busy moment. The whole table, not a
    `WHERE uuid IN (...)`: the ClickHouse stand-in models only `WHERE column = literal`, and the tests' tables
    hold a few thousand rows."""
    database = deployment.values().get("CLICKHOUSE_DATABASE") or "posthog"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"CLICKHOUSE_DATABASE is not a plain name: {database!r}")
    result = deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query",
                                f"SELECT * FROM {database}.events FORMAT TSV", check=False)
    return result.stdout if result.returncode == 0 else ""


def missing_from_clickhouse(deployment, uuids: set[str], timeout: float = 120.0) -> set[str]:
    """The accepted events' uuids not stored in ClickHouse within ``timeout`` (empty: every one arrived)."""
    return wait_until_stored(lambda: events_table_rows(deployment), set(uuids), timeout=timeout)


# --- records and their summary ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    started: float  # time.monotonic() when the request started
    latency: float  # seconds until the answer was read, or until the error
    kind: str  # "GET" or "capture"
    path: str
    status: int | None = None
    error: str | None = None  # the exception's class, when no HTTP answer came
    event_uuid: str | None = None
    accepted: bool = False  # a capture PostHog answered 200 {"status": 1}

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def failure(self) -> str | None:
        """How it failed, grouped: "status 503", "ConnectionRefusedError", "timeout", ...; None when ok."""
        if self.ok:
            return None
        return self.error if self.error is not None else f"status {self.status}"


@dataclass(frozen=True)
class Summary:
    sent: int
    ok: int
    failed: dict[str, int]
    latency: dict[str, float | None]
    window_latency: dict[str, float | None]
    outage: float
    accepted_uuids: frozenset[str]
    seconds: float
    window: tuple[float, float] | None = None
    #: The first failed requests, when they started (from the window's start, else the loop's) and how they failed.
    first_failures: tuple[str, ...] = ()

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    def line(self, label: str, **extra: float | None) -> str:
        """One line for the test log (and the closing note): the case, its counts, latencies in ms."""
        def ms(value):
            return "-" if value is None else f"{value * 1000:.0f}"

        window = self.window_latency
        parts = [f"{label}: {self.sent} requests in {self.seconds:.0f} s ({self.sent / max(self.seconds, 1e-9):.0f}/s)",
                 f"{self.failed_total} failed" + (f" {dict(self.failed)}" if self.failed else ""),
                 f"{len(self.accepted_uuids)} events accepted",
                 f"switch window p50/p95/p99/max {ms(window['p50'])}/{ms(window['p95'])}/{ms(window['p99'])}/"
                 f"{ms(window['max'])} ms",
                 f"web outage {self.outage:.2f} s"]
        parts += [f"{name} outage {'-' if value is None else f'{value:.1f} s'}" for name, value in extra.items()]
        return "; ".join(parts)


def summarize(records: Sequence[Record], window: tuple[float, float] | None = None,
              end: float | None = None) -> Summary:
    """Counts, latencies (overall and of the requests started inside ``window``), the outage, the accepted uuids."""
    failed = Counter(record.failure for record in records if not record.ok)
    inside = [r.latency for r in records if window is not None and window[0] <= r.started <= window[1]]
    starts = [r.started for r in records]
    seconds = (max(r.started + r.latency for r in records) - min(starts)) if records else 0.0
    return Summary(
        sent=len(records), ok=sum(1 for r in records if r.ok), failed=dict(failed),
        latency=latency_summary([r.latency for r in records]), window_latency=latency_summary(inside),
        outage=longest_outage(((r.started, r.ok) for r in records), end=end),
        accepted_uuids=frozenset(r.event_uuid for r in records if r.accepted and r.event_uuid),
        seconds=seconds, window=window, first_failures=tuple(describe_failures(records, window)))


def describe_failures(records: Sequence[Record], window: tuple[float, float] | None = None,
                      limit: int = 5) -> list[str]:
    """The first ``limit`` failed requests in one phrase each: "+12.34 s POST /e/: status 502 after 3012 ms",
    the time from the window's start (negative: before it), else from the first request."""
    if not records:
        return []
    origin = window[0] if window is not None else min(record.started for record in records)
    failed = sorted((record for record in records if not record.ok), key=lambda record: record.started)
    return [f"{record.started - origin:+.2f} s {'POST' if record.kind == 'capture' else 'GET'} {record.path}: "
            f"{record.failure} after {record.latency * 1000:.0f} ms" for record in failed[:limit]]


# --- where requests go -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where the loop connects (``address``:``port``) and whom it asks for (``host``: SNI and Host header)."""

    address: str
    port: int
    host: str
    cafile: str | None = None  # HTTPS verified against this CA when set; plain HTTP otherwise

    @classmethod
    def through_proxy(cls, domain: str, https_port: int, cafile: str) -> "Target":
        return cls("127.0.0.1", https_port, domain, cafile)

    @classmethod
    def web_port(cls, port: int) -> "Target":
        return cls("127.0.0.1", port, "localhost")

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.cafile is None:
            return http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        return _ResolvedHTTPSConnection(self.address, self.host, self.port, ssl.create_default_context(cafile=self.cafile),
                                        timeout)


class _ResolvedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` with ``host`` as the name the certificate is verified against (curl's --resolve)."""

    def __init__(self, address: str, host: str, port: int, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address

    def connect(self):
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


# --- the loop --------------------------------------------------------------------------------------------

class LoadLoop:
    """Requests at up to ``rate`` per second from ``threads`` threads, until stop() or ``duration`` seconds.

        with LoadLoop(target, token) as loop:
            with loop.window():
                ... the operation ...
        summary = loop.summary()
    """

    def __init__(self, target: Target, token: str, rate: float = DEFAULT_RATE, threads: int = DEFAULT_THREADS,
                 timeout: float = DEFAULT_TIMEOUT, duration: float | None = None,
                 mix: Sequence[tuple[str, str]] = DEFAULT_MIX, distinct_id: str | None = None):
        self.target, self.token, self.rate = target, token, check_rate(rate)
        if threads < 1 or not mix:
            raise ValueError("the loop needs at least one thread and one request in its mix")
        self.threads, self.timeout, self.duration, self.mix = threads, timeout, duration, tuple(mix)
        self.distinct_id = distinct_id or f"loadloop-{uuid_module.uuid4().hex[:12]}"
        self.records: list[Record] = []
        self.windows: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._previous: float | None = None
        self._sequence = 0
        self._deadline: float | None = None
        self._workers: list[threading.Thread] = []
        self.started_at: float | None = None
        self.stopped_at: float | None = None

    # pacing: one shared schedule, each request takes the next slot
    def _take_slot(self) -> tuple[float, int] | None:
        with self._lock:
            now = time.monotonic()
            planned = next_start(self._previous, now, self.rate)
            if self._stop.is_set() or (self._deadline is not None and planned >= self._deadline):
                return None
            self._previous, self._sequence = planned, self._sequence + 1
            return planned, self._sequence - 1

    def _work(self) -> None:
        while True:
            slot = self._take_slot()
            if slot is None:
                return
            planned, sequence = slot
            delay = planned - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            record = self._send(*self.mix[sequence % len(self.mix)])
            with self._lock:
                self.records.append(record)

    def _send(self, kind: str, path: str) -> Record:
        event_uuid = str(uuid_module.uuid4()) if kind == "capture" else None
        started = time.monotonic()
        connection = self.target.connection(self.timeout)
        try:
            if kind == "capture":
                body = json.dumps({"api_key": self.token, "event": EVENT_NAME, "distinct_id": self.distinct_id,
                                   "uuid": event_uuid, "properties": {"$lib": "e2e-loadloop"}})
                connection.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                                        "Connection": "close"})
            else:
                connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            answer = response.read()
        except (socket.timeout, TimeoutError):
            return Record(started, time.monotonic() - started, kind, path, error="timeout", event_uuid=event_uuid)
        except (OSError, http.client.HTTPException) as exc:
            return Record(started, time.monotonic() - started, kind, path, error=type(exc).__name__,
                          event_uuid=event_uuid)
        finally:
            connection.close()
        latency = time.monotonic() - started
        accepted = False
        if kind == "capture" and response.status == 200:
            with contextlib.suppress(ValueError):
                accepted = json.loads(answer.decode("utf-8", "replace")) == {"status": 1}
        return Record(started, latency, kind, path, status=response.status, event_uuid=event_uuid, accepted=accepted)

    def start(self) -> "LoadLoop":
        self.started_at = time.monotonic()
        if self.duration is not None:
            self._deadline = self.started_at + self.duration
        self._workers = [threading.Thread(target=self._work, name=f"loadloop-{n}", daemon=True)
                         for n in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> None:
        """Stop taking new requests and wait for those in flight (each ends within the timeout)."""
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        self.stopped_at = time.monotonic()

    def wait(self) -> None:
        """Wait for a loop with a duration to run out."""
        for worker in self._workers:
            worker.join()
        self.stopped_at = time.monotonic()

    def __enter__(self) -> "LoadLoop":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @contextlib.contextmanager
    def window(self):
        """Mark the operation's time: the summary's window latencies are of the requests started inside it."""
        opened = time.monotonic()
        try:
            yield
        finally:
            self.windows.append((opened, time.monotonic()))

    def summary(self) -> Summary:
        with self._lock:
            records = sorted(self.records, key=lambda record: record.started)
        window = self.windows[-1] if self.windows else None
        return summarize(records, window=window, end=self.stopped_at)


# --- services' own availability, from their containers ---------------------------------------------------

class ServiceWatch:
    """Samples, every ``interval`` seconds, whether each named service has a running and healthy container
    (`docker ps` by the Compose labels), so that an operation's outage of the worker and the plugin server
    is measured from what the engine says, as the loop measures web's from what clients see."""

    def __init__(self, docker: Callable[..., object], project: str, services: Sequence[str], interval: float = 0.5):
        self.docker, self.project, self.services, self.interval = docker, project, tuple(services), interval
        self.samples: dict[str, list[tuple[float, bool]]] = {name: [] for name in self.services}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="service-watch", daemon=True)

    def _sample(self) -> None:
        listed = self.docker("ps", "--all", "--filter", f"label=com.docker.compose.project={self.project}",
                             "--format", '{{.Label "com.docker.compose.service"}}\t{{.State}}\t{{.Status}}',
                             check=False)
        at = time.monotonic()
        if getattr(listed, "returncode", 1) != 0:
            return  # the engine did not answer: no sample, rather than a made-up outage
        healthy = healthy_services(listed.stdout)
        for name in self.services:
            self.samples[name].append((at, name in healthy))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "ServiceWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def outage(self, service: str) -> float:
        return longest_outage(self.samples[service])


def healthy_services(ps_output: str) -> set[str]:
    """The services with at least one running container that is healthy, or has no health check at all,
    from `docker ps --format '{{.Label "com.docker.compose.service"}}\\t{{.State}}\\t{{.Status}}'`."""
    healthy = set()
    for line in ps_output.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        service, state, status = fields
        if state == "running" and ("(healthy)" in status or "(" not in status):
            healthy.add(service)
    return healthy
