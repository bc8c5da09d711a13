"""`invoke probe` on a real engine: on a healthy deployment a marked event goes from capture through Kafka into
ClickHouse's events table and the probe prints when each hop was seen; with `plugins` stopped it names the
plugin server's hop, with `clickhouse` stopped ClickHouse's, each with the next step, and exits 1.

The stand-ins carry the event along PostHog 1.43's path (posthog-standin/BOUNDARIES.md, "Ingestion path").
The project is written into PostgreSQL as PostHog's signup writes it (the stand-in has no signup page)."""

from __future__ import annotations

import json
import re
import time

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.lanes(
    "local", reason="the project is written straight into PostgreSQL's posthog_team, the stand-in's table; the real "
                    "image makes its first project through the signup page")]

TOKEN = "phc_e2eProbeProjectKey0123456789"


def _hop_times(output: str) -> dict[int, float]:
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^(\d)\. .*?\s(\d+\.\d+) s\s", output, re.M)}


def _clickhouse_count(deployment, distinct_id: str) -> str:
    query = f"SELECT count() FROM posthog.events WHERE distinct_id = '{distinct_id}'"
    return deployment.compose("exec", "-T", "clickhouse", "clickhouse-client", "--query", query).stdout.strip()


def test_probe_follows_an_event_and_names_the_hop_where_it_stops(deployment):
    try:
        up = deployment.invoke("up", "--timeout", "300")
        assert up.returncode == 0, up.stdout + up.stderr

        # A fresh install has no project yet: the probe says where one comes from, and sends nothing.
        none_yet = deployment.invoke("probe")
        assert none_yet.returncode == 1 and "PostHog has no project yet" in none_yet.stderr, none_yet.stderr
        deployment.psql(f"INSERT INTO posthog_team (api_token, name) VALUES ('{TOKEN}', 'e2e');")

        healthy = deployment.invoke("probe")
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        times = _hop_times(healthy.stdout)
        assert sorted(times) == [1, 2, 3, 4, 5], healthy.stdout
        assert all(times[n] <= times[n + 1] for n in range(1, 5)), times
        assert "The event went through every hop seen from here in" in healthy.stdout
        assert TOKEN not in healthy.stdout + healthy.stderr
        distinct_id = re.search(r"distinct_id (ingestion-probe-[0-9a-f]+)", healthy.stdout).group(1)
        assert _clickhouse_count(deployment, distinct_id) == "1"  # the row, asked without the probe
        print(f"\nhealthy probe, hop times (s): {times}")

        as_json = deployment.invoke("probe", "--json", "--token", TOKEN)
        document = json.loads(as_json.stdout)
        assert as_json.returncode == 0 and document["ok"] and document["stopped_before"] is None, as_json.stdout
        assert {row["group"] for row in document["lag"]} >= {"clickhouse-ingestion", "group1"}
        print(f"json probe, hop times (s): {[hop['seconds'] for hop in document['hops']]}")

        # The plugin server stopped: capture still takes the event, its group falls behind.
        deployment.compose("stop", "plugins")
        stopped = deployment.invoke("probe", "--timeout", "20")
        assert stopped.returncode == 1, stopped.stdout
        assert "the event stopped at hop 2 of 5 (plugin server)" in stopped.stderr, stopped.stderr
        assert "plugins is not running" in stopped.stderr and "`invoke logs -s plugins`" in stopped.stderr
        assert re.search(r"clickhouse-ingestion\s+events_plugin_ingestion\s+0\s+\d+\s+\d+\s+[1-9]", stopped.stdout), \
            stopped.stdout  # the lag table shows the backlog

        # Back: the backlog drains and the probe passes again.
        deployment.compose("start", "plugins")
        deadline = time.monotonic() + 120
        while True:
            again = deployment.invoke("probe", "--timeout", "30")
            if again.returncode == 0 or time.monotonic() > deadline:
                break
        assert again.returncode == 0, again.stdout + again.stderr

        # ClickHouse stopped: the plugin server still produces the row, group1 falls behind.
        deployment.compose("stop", "clickhouse")
        no_clickhouse = deployment.invoke("probe", "--timeout", "20")
        assert no_clickhouse.returncode == 1, no_clickhouse.stdout
        assert "the event stopped at hop 4 of 5 (ClickHouse)" in no_clickhouse.stderr, no_clickhouse.stderr
        assert "clickhouse is not running" in no_clickhouse.stderr
        assert "`invoke logs -s clickhouse`" in no_clickhouse.stderr
        print(f"stopped plugins: {stopped.stderr.strip()}\nstopped clickhouse: {no_clickhouse.stderr.strip()}")
    finally:
        deployment.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
