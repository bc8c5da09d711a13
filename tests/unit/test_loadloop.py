"""The end-to-end request loop's arithmetic, without an engine: percentiles, the outage from a failure series,
the rate bound, the uuids read back from ClickHouse's rows, the services judged from `docker ps`, and the loop
itself against a small HTTP server in this process."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e import loadloop
from tests.e2e.loadloop import (EngineEvents, LoadLoop, Record, Target, check_rate, healthy_services, in_place_gap,
                                longest_outage, next_start, percentile, summarize, uuids_in, wait_until_stored)

FAST = settings(max_examples=300, deadline=None)
latencies = st.lists(st.floats(min_value=0, max_value=60, allow_nan=False), min_size=1, max_size=200)


# --- percentiles -----------------------------------------------------------------------------------------

@FAST
@given(latencies, st.floats(min_value=0, max_value=100))
def test_a_percentile_is_a_latency_one_request_had_and_splits_the_others_by_rank(values, q):
    result = percentile(values, q)
    assert result in values
    at_or_below = sum(1 for value in values if value <= result)
    below = sum(1 for value in values if value < result)
    # Nearest rank: at least q% of the requests took at most this long, fewer than q% strictly less.
    assert at_or_below >= q / 100 * len(values) - 1e-9
    assert below < max(1, math.ceil(q / 100 * len(values)))


@FAST
@given(latencies, st.floats(min_value=0, max_value=100), st.floats(min_value=0, max_value=100))
def test_percentiles_grow_with_q_and_end_at_the_extremes(values, a, b):
    low, high = sorted((a, b))
    assert percentile(values, low) <= percentile(values, high)
    assert percentile(values, 100) == max(values) and percentile(values, 0) == min(values)


def test_percentiles_of_a_known_series_and_of_none():
    values = [i / 1000 for i in range(1, 101)]  # 1 ms .. 100 ms
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (0.05, 0.095, 0.099)
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


# --- the outage ------------------------------------------------------------------------------------------

def test_the_outage_runs_from_the_first_failure_to_the_next_good_answer():
    samples = [(i / 10, not 10 <= i < 20) for i in range(40)]  # failing from 1.0 s, good again at 2.0 s
    assert longest_outage(samples) == pytest.approx(1.0)
    # One failed request between good ones is an outage as long as the gap to the next good one.
    assert longest_outage([(0.0, True), (0.5, False), (0.6, True)]) == pytest.approx(0.1)
    # The longest of two runs, and a run still failing at the end lasts until the end given.
    two_runs = [(0, True), (1, False), (2, True), (3, False), (4, False), (6, True)]
    assert longest_outage(two_runs) == 3
    assert longest_outage([(0, True), (1, False), (2, False)], end=5) == 4
    assert longest_outage([(0, True), (1, False), (2, False)]) == 1
    assert longest_outage([]) == 0 and longest_outage([(0, True), (9, True)]) == 0


samples = st.lists(st.tuples(st.floats(min_value=0, max_value=1000, allow_nan=False), st.booleans()), max_size=80)


@FAST
@given(samples, st.randoms(use_true_random=False))
def test_the_outage_does_not_depend_on_the_order_records_arrive_in(series, random):
    shuffled = list(series)
    random.shuffle(shuffled)
    assert longest_outage(shuffled) == longest_outage(series)


@FAST
@given(samples)
def test_the_outage_is_zero_without_failures_and_never_longer_than_the_series(series):
    outage = longest_outage(series)
    if all(ok for _, ok in series):
        assert outage == 0
    times = [at for at, _ in series]
    assert 0 <= outage <= (max(times) - min(times) if times else 0)
    if series and not any(ok for _, ok in series):
        assert outage == max(times) - min(times)  # failing throughout: the whole series


@FAST
@given(samples, st.floats(min_value=0, max_value=1000, allow_nan=False))
def test_one_more_good_answer_inside_the_series_never_lengthens_the_outage(series, at):
    times = [t for t, _ in series]
    if not times or not min(times) <= at <= max(times):
        return
    assert longest_outage([*series, (at, True)]) <= longest_outage(series)


# --- the rate bound --------------------------------------------------------------------------------------

def test_the_rate_is_bounded():
    assert check_rate(150) == 150.0 and check_rate(300) == 300.0
    for bad in (0, -1, 300.5, 1000, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="at most 300"):
            check_rate(bad)
    with pytest.raises(ValueError):
        LoadLoop(Target.web_port(1), "token", rate=301)


@FAST
@given(st.floats(min_value=0.5, max_value=300), st.lists(st.floats(min_value=0, max_value=0.05), min_size=1,
                                                            max_size=300))
def test_starts_are_never_closer_than_one_over_the_rate_nor_burst_after_a_stall(rate, steps):
    """``steps``: the time each thread asks for its next slot advances by (0: many threads at once)."""
    now, previous, starts = 0.0, None, []
    for step in steps:
        now += step
        previous = next_start(previous, now, rate)
        assert previous >= now  # never in the past
        starts.append(previous)
    gap = 1.0 / rate
    assert all(b - a >= gap * (1 - 1e-9) for a, b in zip(starts, starts[1:]))
    # In any window of w seconds, at most floor(w * rate) + 1 requests start.
    for i, first in enumerate(starts):
        for window in (0.1, 1.0):
            inside = sum(1 for start in starts[i:] if start < first + window)
            assert inside <= math.floor(window * rate + 1e-9) + 1


# --- uuids read back from ClickHouse ---------------------------------------------------------------------

row_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="-"), max_size=30)


@FAST
@given(st.lists(st.uuids(version=4), max_size=20), st.lists(row_text, max_size=20))
def test_every_uuid_in_the_rows_is_found_and_nothing_else(wanted, noise):
    # Rows as clickhouse-client prints TSV: the uuid among other columns (JSON properties, dates, names).
    rows = [f"{n}\t{u}\t{json.dumps({'x': text})}\t2026-01-01 00:00:00" for n, (u, text)
            in enumerate(zip(wanted, noise + [""] * len(wanted)))]
    assert uuids_in("\n".join(rows)) == {str(u) for u in wanted}
    assert uuids_in("\n".join(noise)) == set()
    assert uuids_in(str(wanted[0]).upper() if wanted else "") == ({str(wanted[0])} if wanted else set())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


def test_the_wait_for_ingestion_returns_once_every_event_is_stored():
    wanted = {str(uuid.uuid4()) for _ in range(3)}
    reads = iter(["", "\n".join(sorted(wanted)[:2]), "\n".join(wanted)])
    clock = FakeClock()
    assert wait_until_stored(lambda: next(reads), wanted, timeout=60, interval=2, clock=clock, sleep=clock.sleep) == set()
    assert clock.now == 4


def test_the_wait_for_ingestion_is_bounded_and_names_what_is_missing():
    wanted = {str(uuid.uuid4()) for _ in range(3)}
    stored = sorted(wanted)[0]
    clock = FakeClock()
    missing = wait_until_stored(lambda: stored, wanted, timeout=7, interval=2, clock=clock, sleep=clock.sleep)
    assert missing == wanted - {stored} and clock.now == 7  # the last sleep stops at the deadline


# --- services from `docker ps` ---------------------------------------------------------------------------

def test_a_service_counts_while_one_of_its_containers_runs_healthy():
    listing = "\n".join(["web\trunning\tUp 3 minutes (healthy)", "web\trunning\tUp 2 seconds (health: starting)",
                         "worker\texited\tExited (0) 1 second ago", "worker\trunning\tUp 1 second (health: starting)",
                         "plugins\trunning\tUp 9 minutes (unhealthy)", "kafka\trunning\tUp 9 minutes", "garbage"])
    assert healthy_services(listing) == {"web", "kafka"}


# --- the loop against a server in this process -----------------------------------------------------------

class _Server:
    """Answers like PostHog's capture and pages; fails with 503 while ``failing`` is set."""

    def __init__(self):
        self.failing = threading.Event()
        self.captured: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer(503 if server.failing.is_set() else 200, "ok")

            def do_POST(self):
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if server.failing.is_set():
                    return self._answer(503, "{}")
                server.captured.append(event["uuid"])
                self._answer(200, json.dumps({"status": 1}))

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()


def test_the_loop_keeps_its_rate_records_every_request_and_measures_an_outage():
    with _Server() as server:
        loop = LoadLoop(Target.web_port(server.http.server_address[1]), "phc_token", rate=100, threads=4)
        with loop:
            time.sleep(0.5)
            with loop.window():
                server.failing.set()
                time.sleep(0.4)
                server.failing.clear()
            time.sleep(0.5)
        summary = loop.summary()
    elapsed = loop.stopped_at - loop.started_at
    assert summary.sent == len(loop.records) <= math.floor(elapsed * 100) + 1
    assert summary.sent >= 50  # the loop did run: about 140 in 1.4 s on an idle machine
    assert summary.ok + summary.failed_total == summary.sent and set(summary.failed) == {"status 503"}
    assert 0.3 <= summary.outage <= 0.6, summary
    assert summary.accepted_uuids == set(server.captured) and summary.accepted_uuids
    assert summary.window_latency["max"] is not None and summary.latency["p50"] <= summary.latency["max"]
    assert "failed {'status 503'" in summary.line("case")


def test_a_loop_with_a_duration_stops_by_itself_and_counts_refused_connections():
    with _Server() as server:
        port = server.http.server_address[1]
    # A second of it: the threads start within it even on a loaded host (the suite runs beside engines).
    loop = LoadLoop(Target.web_port(port), "phc_token", rate=20, threads=2, duration=1.0, timeout=1).start()
    loop.wait()
    summary = loop.summary()
    assert 1 <= summary.sent <= 21 and summary.ok == 0
    assert set(summary.failed) == {"ConnectionRefusedError"} and not summary.accepted_uuids


def test_a_summary_counts_window_latencies_only_inside_the_window():
    records = [Record(started=float(i), latency=0.01 * (i + 1), kind="GET", path="/_health", status=200)
               for i in range(10)]
    summary = summarize(records, window=(3.0, 5.0))
    assert summary.window_latency["max"] == pytest.approx(0.06) and summary.window_latency["p50"] == pytest.approx(0.05)
    assert summary.latency["max"] == pytest.approx(0.10) and summary.failed == {} and summary.outage == 0
    assert loadloop.MAX_RATE == 300


def test_the_first_failures_say_when_from_the_window_start_which_request_and_how():
    records = [Record(10.0, 0.02, "GET", "/_health", status=200),
               Record(12.5, 3.012, "capture", "/e/", status=502),
               Record(9.0, 15.0, "GET", "/preflight", error="timeout"),
               Record(13.0, 0.01, "capture", "/e/", error="ConnectionResetError")]
    summary = summarize(records, window=(10.0, 20.0))
    assert summary.first_failures == ("-1.00 s GET /preflight: timeout after 15000 ms",
                                      "+2.50 s POST /e/: status 502 after 3012 ms",
                                      "+3.00 s POST /e/: ConnectionResetError after 10 ms")
    assert summarize(records[:1]).first_failures == ()


# --- the in-place switch's own part, from the engine's events ---------------------------------------------

COMPOSE_RECREATE = """1796646245800808125 create new0000
1796646245823440710 kill old00000
1796646246403012075 die old00000
1796646246502113888 stop old00000
1796646246516717904 destroy old00000
1796646246518529436 rename new0000
1796646246929119529 start new0000
1796646252472196898 health_status: healthy new0000
"""


def test_the_in_place_gap_runs_from_the_old_ones_sigterm_to_the_new_ones_start():
    # Compose v2 and later create the new container first, then stop the old one, then start the new one.
    assert in_place_gap(COMPOSE_RECREATE) == pytest.approx(1.105678819)


def test_a_switch_beside_the_old_one_has_no_in_place_gap():
    beside = ("100000000000 create new\n200000000000 start new\n300000000000 connect new\n"
              "400000000000 kill old\n500000000000 die old\n600000000000 destroy old\n")
    assert in_place_gap(beside) is None
    assert in_place_gap("") is None and in_place_gap("garbage\n\n1 2\n") is None


def test_a_new_container_removed_before_it_served_is_not_the_serving_one_stopped():
    """The broken version's container (created, started, killed by `docker rm --force`), then another new
    one beside the serving one: nothing was stopped before its successor started."""
    events = ("1000 create broken\n2000 start broken\n3000 kill broken\n4000 destroy broken\n"
              "5000 create new\n6000 start new\n7000 kill old\n8000 destroy old\n")
    assert in_place_gap(events) is None


ACTIONS = st.sampled_from(["create", "start", "kill", "die", "stop", "destroy", "rename", "exec_start",
                           "health_status: healthy"])
EVENTS = st.lists(st.tuples(st.integers(0, 10**12), ACTIONS, st.sampled_from(["a", "b", "c", "d"])), max_size=14)


def _lines(events) -> str:
    return "".join(f"{at} {action} {ident}\n" for at, action, ident in events)


@FAST
@given(EVENTS, st.integers(-10**6, 10**6), st.randoms(use_true_random=False))
def test_the_in_place_gap_does_not_depend_on_the_order_of_the_lines_or_the_clocks_origin(events, shift, rnd):
    gap = in_place_gap(_lines(events))
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert in_place_gap(_lines(shuffled)) == gap
    assert in_place_gap(_lines([(at + 10**6 + shift, action, ident) for at, action, ident in events])) == \
        (None if gap is None else pytest.approx(gap))
    assert gap is None or gap >= 0


@FAST
@given(EVENTS, st.integers(0, 10**12), st.integers(0, 10**12))
def test_an_in_place_gap_needs_the_serving_containers_kill_and_a_start_of_another_after_it(events, kill, later):
    created = {ident for _, action, ident in events if action == "create"}
    quiet = [(at, action, ident) for at, action, ident in events if action not in ("kill", "start")]
    assert in_place_gap(_lines(quiet)) is None  # no stop, or no start: nothing to measure
    # Containers created during the operation and killed (never the serving one) alone make no gap.
    assert in_place_gap(_lines(quiet + [(at, "kill", ident) for at, _, ident in events if ident in created])) is None
    # The serving one ("old", never created here) stopped at `kill`, a new one started `later` ns after it:
    measured = in_place_gap(_lines([*quiet, (kill, "kill", "old"), (kill + later, "start", "new")]))
    assert measured == pytest.approx(later / 1e9)


def test_what_the_event_stream_saw_is_read_from_whole_lines_only():
    events = EngineEvents({}, "p", "web")
    events.lines = ["1000 create abc\n", "garbage kill\n", "1001 start abc\n", "1002 ki"]
    assert events.saw("start") and events.saw("create")
    assert not events.saw("kill")  # neither the malformed line nor the partial last one counts
