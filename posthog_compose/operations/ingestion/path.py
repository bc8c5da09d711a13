"""The path an event takes through PostHog 1.43 on this deployment, as the probe follows it: the names
(topics, consumer groups, the events table) and the hops in order, each with the service that carries it
and what the operator does when an event stops there.

The names are PostHog 1.43.0's, cited where the e2e stand-ins model them
(tests/e2e/images/posthog-standin/BOUNDARIES.md, "Ingestion path"): capture produces to
events_plugin_ingestion; the plugin server reads it as group clickhouse-ingestion and produces the row to
clickhouse_events_json; ClickHouse's Kafka-engine table kafka_events_json reads that as group group1 and
its view writes the row into `events`. KAFKA_PREFIX, which 1.43 puts in front of every topic and of the
plugin server's group (not of ClickHouse's), is not a variable of this kit.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The capture endpoint the probe posts to: posthog-python's (posthog/urls.py:158, capture.get_event).
CAPTURE_PATH = "/capture/"
#: The topic capture produces to (posthog/settings/data_stores.py:142-149).
INGESTION_TOPIC = "events_plugin_ingestion"
#: The plugin server's consumer group (plugin-server/src/main/ingestion-queues/kafka-queue.ts:67-75).
PLUGIN_GROUP = "clickhouse-ingestion"
#: The topic the plugin server produces the ClickHouse row to (posthog/kafka_client/topics.py:5).
EVENTS_TOPIC = "clickhouse_events_json"
#: The consumer group of ClickHouse's kafka_events_json (posthog/clickhouse/kafka_engine.py:38).
CLICKHOUSE_GROUP = "group1"
#: The table the event lands in (posthog/models/event/sql.py:156-163, or :9 without replication).
EVENTS_TABLE = "events"
#: The name of the probe's event: it stays in the project, like any event.
PROBE_EVENT = "ingestion probe"


@dataclass(frozen=True)
class Hop:
    """One step of the path: ``key`` names it in --json, ``name`` in one line, ``title`` in the table;
    ``service`` carries it."""

    key: str
    name: str
    title: str
    service: str


HOPS = (
    Hop("capture", "capture", f"web took it, Kafka acknowledged it ({INGESTION_TOPIC})", "web"),
    Hop("plugin-server", "plugin server", f"plugin server consumed it (group {PLUGIN_GROUP})", "plugins"),
    Hop("events-topic", EVENTS_TOPIC, f"plugin server produced its row to {EVENTS_TOPIC}", "plugins"),
    Hop("clickhouse", "ClickHouse", f"ClickHouse consumed it (group {CLICKHOUSE_GROUP})", "clickhouse"),
    Hop("stored", "events table", f"the row is in the {EVENTS_TABLE} table", "clickhouse"),
)
HOP = {hop.key: hop for hop in HOPS}

#: What stopped means at each hop, and where to look (the service's state is added when it is not running).
STOPPED = {
    "plugin-server": ("the plugin server has not consumed it", "`invoke logs -s plugins`"),
    "events-topic": (f"the plugin server consumed it but produced nothing to {EVENTS_TOPIC} (a plugin or the "
                     "project's settings may drop events)", "`invoke logs -s plugins --tail 200`"),
    "clickhouse": (f"ClickHouse has not read it from {EVENTS_TOPIC}", "`invoke logs -s clickhouse`"),
    "stored": (f"ClickHouse read it but no row is in {EVENTS_TABLE}", "`invoke logs -s clickhouse`"),
}
