"""The plugin server's ingestion consumer (STAND-IN, test only): the second hop of the ingestion path
(BOUNDARIES.md, "Ingestion path"). At the 1.43.0 tag, with PLUGIN_SERVER_MODE unset (config.ts:99), the
plugin server has every capability (capabilities.ts:9-16), so its one IngestionConsumer:

- joins the group `clickhouse-ingestion` (KAFKA_PREFIX first: kafka-queue.ts:67-75) and reads
  events_plugin_ingestion (KAFKA_CONSUMPTION_TOPIC: config.ts:41) and clickhouse_events_json (async
  handlers: kafka-queue.ts:41-64), a new group from the end of each topic (kafkajs's default, subscribe
  without fromBeginning: kafka-queue.ts:101);
- turns each ingestion message into the event (formPipelineEvent: utils/event.ts:91-101, `data` merged
  under the message's own fields), and produces the row ClickHouse stores to clickhouse_events_json
  (CLICKHOUSE_JSON_EVENTS_KAFKA_TOPIC: config.ts:86), keyed by the event's uuid (process-event.ts:229-254);
- commits what it processed (kafka-queue.ts:104-110).
Not modelled: plugins, persons and groups (person_id and the group columns stay empty), the timestamp's
clock-skew correction (timestamps.ts), the conversion buffer. Async handlers have nothing to run here: their
messages are committed."""
import json
import os
import time
import uuid
from datetime import datetime, timezone


def names(environ=None):
    """(group, ingestion topic, events topic) as 1.43's plugin server derives them."""
    environ = os.environ if environ is None else environ
    prefix = environ.get("KAFKA_PREFIX", "")  # config/kafka-topics.ts:6
    return (f"{prefix}clickhouse-ingestion", environ.get("KAFKA_CONSUMPTION_TOPIC") or f"{prefix}events_plugin_ingestion",
            environ.get("CLICKHOUSE_JSON_EVENTS_KAFKA_TOPIC") or f"{prefix}clickhouse_events_json")


def clickhouse_timestamp(moment):
    """castTimestampOrNow(..., TimestampFormat.ClickHouse): 'yyyy-MM-dd HH:mm:ss.u' in UTC (utils/utils.ts:235-261)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse(value):
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def clickhouse_event(value, now=None):
    """The RawClickHouseEvent (process-event.ts:229-244) for one events_plugin_ingestion message."""
    now = now or datetime.now(timezone.utc)
    raw = json.loads(value)
    data = json.loads(raw.pop("data", "{}") or "{}")
    event = {**data, **raw}  # formPipelineEvent: the message's own fields win over the payload's
    properties = event.get("properties") if isinstance(event.get("properties"), dict) else {}
    if event.get("ip") and "$ip" not in properties:
        properties = {**properties, "$ip": event["ip"]}  # process-event.ts:155-157 (anonymize_ips is capture's)
    timestamp = _parse(event.get("timestamp")) or _parse(event.get("now")) or now
    return {
        "uuid": str(event.get("uuid") or uuid.uuid4()),
        "event": str(event.get("event", "")),
        "properties": json.dumps(properties),
        "timestamp": clickhouse_timestamp(timestamp),
        "team_id": event.get("team_id"),
        "distinct_id": str(event.get("distinct_id", "")),
        "elements_chain": "",
        "created_at": clickhouse_timestamp(now),
    }


def consume_once(client, environ=None, now=None):
    """One fetch, process and commit; the number of ingestion messages it turned into events."""
    group, ingestion, events = names(environ)
    answer = client.call({"api": "fetch", "group": group, "topics": [ingestion, events], "client_id": "plugin-server",
                          "reset": "latest", "max": 100})
    done, produced = {}, 0
    for message in answer["messages"]:
        if message["topic"] == ingestion:
            row = clickhouse_event(message["value"], now)
            client.call({"api": "produce", "topic": events, "key": row["uuid"], "value": json.dumps(row)})
            produced += 1
        done[message["topic"]] = message["offset"] + 1
    if done:
        client.call({"api": "commit", "group": group, "offsets": done})
    return produced


def run(hosts, consumer, log, interval=0.2):
    """Consume for ever; ``consumer["ready"]`` tells /_ready whether the group is joined (http-server.ts:17-31)."""
    from kafka_wire import Client, KafkaError

    client = Client(hosts)
    while True:
        try:
            count = consume_once(client)
            if not consumer["ready"]:
                log(f"✅ Kafka consumer joined group {names()[0]}!")  # kafka-queue.ts:197
            consumer["ready"] = True
            if count:
                log(f"🕒 Processed {count} events")
            time.sleep(interval if not count else 0)
        except (KafkaError, OSError, ValueError) as exc:
            if consumer["ready"]:
                log(f"⚠️ Kafka consumer group {names()[0]} crashed: {exc}")
            consumer["ready"] = False
            client.close()
            time.sleep(2)
