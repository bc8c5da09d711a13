"""Kafka-engine tables and the materialized views that read them (ClickHouse STAND-IN, test only): the last
hop of PostHog 1.43's ingestion path (posthog-standin/BOUNDARIES.md, "Ingestion path").

What it models of ClickHouse 22.x as PostHog uses it (posthog/models/event/sql.py:95-141,
posthog/clickhouse/kafka_engine.py:7,38-41): a table `ENGINE = Kafka('brokers', 'topic', 'group',
'JSONEachRow')` holds no data; once a materialized view `TO target AS SELECT ... FROM` it exists, ClickHouse
consumes the topic with that consumer group (a new group from the first message), writes each message's
JSON fields into the target table's columns of the same name (the virtual columns _timestamp and _offset
from the message), then commits the offsets: a stopped ClickHouse leaves the group's lag growing in Kafka.
Not modelled: expressions in the view's SELECT (only column names), kafka_skip_broken_messages beyond
skipping a message that is not JSON, several consumers per table, block sizes and flush intervals (the
stand-in polls twice a second)."""
import json
import re
import socket
import threading
import time
from datetime import datetime, timezone

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
QUALIFIED = rf"(?:{NAME}\.)?{NAME}"
KAFKA_ENGINE = re.compile(r"ENGINE\s*=\s*Kafka\s*\(\s*'([^']*)'\s*,\s*'([^']*)'\s*,\s*'([^']*)'\s*,\s*'([^']*)'\s*\)", re.I)
VIEW = re.compile(rf"CREATE MATERIALIZED VIEW (IF NOT EXISTS )?({QUALIFIED})(?: ON CLUSTER '[^']*')?\s+TO ({QUALIFIED})\s+"
                  rf"AS SELECT\s+(.*?)\s+FROM ({QUALIFIED})\s*$", re.I | re.S)
ZERO = {"UUID": "00000000-0000-0000-0000-000000000000", "DateTime": "1970-01-01 00:00:00"}


def split_top_level(text, separator=","):
    """``text`` split at ``separator`` outside parentheses and quotes."""
    parts, depth, quote, current = [], 0, False, []
    for char in text:
        if char == "'" and (not current or current[-1] != "\\"):
            quote = not quote
        elif not quote and char == "(":
            depth += 1
        elif not quote and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def columns(definition):
    """[(name, type)] of a table definition `(... ) ENGINE = ...`, as stored in its metadata file; an
    INDEX or PROJECTION entry is not a column."""
    start = definition.index("(")
    depth = 0
    for end in range(start, len(definition)):
        depth += {"(": 1, ")": -1}.get(definition[end], 0)
        if depth == 0:
            break
    found = []
    for item in split_top_level(definition[start + 1:end]):
        words = item.split(None, 2)
        if len(words) >= 2 and words[0].upper() not in ("INDEX", "PROJECTION", "CONSTRAINT"):
            found.append((words[0].strip("`"), words[1]))
    return found


def kafka_settings(definition):
    """{broker_list, topic, group, format} of a Kafka-engine table, or None for another engine."""
    match = KAFKA_ENGINE.search(definition)
    if not match:
        return None
    return dict(zip(("broker_list", "topic", "group", "format"), match.groups()))


def view(statement):
    """{name, target, columns, source} of `CREATE MATERIALIZED VIEW name TO target AS SELECT cols FROM source`."""
    match = VIEW.fullmatch(statement.strip().rstrip(";").strip())
    if not match:
        return None
    selected = [item.strip("` \n") for item in split_top_level(match.group(4))]
    if not all(re.fullmatch(NAME, item) for item in selected):
        return None  # only plain column names are modelled
    return {"name": match.group(2), "target": match.group(3), "columns": selected, "source": match.group(5),
            "if_not_exists": bool(match.group(1))}


def tsv(value):
    """A value in ClickHouse's TabSeparated escaping."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def default(column_type):
    """ClickHouse's default of a type, as TSV (what a column missing from the message gets)."""
    if re.match(r"U?Int|Float|Decimal", column_type):
        return "0"
    if column_type.startswith("DateTime"):
        return ZERO["DateTime"]
    return ZERO.get(column_type, "")


def row(target_columns, selected, message):
    """One TSV line for the target table from one Kafka message (its JSONEachRow value)."""
    fields = json.loads(message["value"])
    if not isinstance(fields, dict):
        raise ValueError("not a JSON object")
    fields["_timestamp"] = datetime.fromtimestamp(message["timestamp"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    fields["_offset"] = message["offset"]
    cells = []
    for name, column_type in target_columns:
        value = fields.get(name) if name in selected else None
        cells.append(default(column_type) if value is None else tsv(value))
    return "\t".join(cells)


class Consumer:
    """The consumer of one Kafka-engine table with a view attached: fetch, write to the target, commit."""

    def __init__(self, settings, view_definition, target_columns, insert, log, client_factory, interval=0.5):
        self.settings = settings
        self.view = view_definition
        self.target_columns = target_columns
        self.insert = insert  # insert(target, tsv_text)
        self.log = log
        self.client_factory = client_factory  # client_factory(broker_list) -> a kafka_wire.Client
        self.interval = interval
        self.client_id = f"ClickHouse-{socket.gethostname()}-{self.view['source'].replace('.', '-')}"

    def once(self, client):
        answer = client.call({"api": "fetch", "group": self.settings["group"], "topics": [self.settings["topic"]],
                              "client_id": self.client_id, "reset": "earliest", "max": 500})
        lines, last = [], None
        for message in answer["messages"]:
            try:
                lines.append(row(self.target_columns, self.view["columns"], message))
            except (ValueError, TypeError) as exc:  # kafka_skip_broken_messages
                self.log(f"<Warning> StorageKafka ({self.view['source']}): skipped a broken message: {exc}")
            last = message["offset"]
        if last is None:
            return 0
        if lines:
            self.insert(self.view["target"], "".join(line + "\n" for line in lines))
        client.call({"api": "commit", "group": self.settings["group"], "offsets": {self.settings["topic"]: last + 1}})
        return len(lines)

    def run(self):
        client = None
        while True:
            try:
                client = client or self.client_factory(self.settings["broker_list"])
                if not self.once(client):
                    time.sleep(self.interval)
            except Exception as exc:  # noqa: BLE001 - like StorageKafka: log, back off, try again
                self.log(f"<Error> StorageKafka ({self.view['source']}): {exc}")
                if client is not None:
                    client.close()
                client = None
                time.sleep(2)

    def start(self):
        threading.Thread(target=self.run, daemon=True).start()
        return self
