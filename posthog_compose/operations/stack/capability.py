"""Whether each datastore that runs here can take PostHog's writes now, and how much room the filesystem of
each data volume has. `status`, `up`, `doctor` and `upgrade`'s preflight call a datastore healthy only
when this says so.

A container can be running and "healthy" (pg_isready, ClickHouse's /ping) while every write fails: a data
volume on a filesystem of its own that is full makes every INSERT fail with "No space left on device"
while Docker's data root, the only disk measured before, has room. So each probe does what PostHog's own
writes need, and leaves nothing behind:

- PostgreSQL: in one transaction that is rolled back, CREATE TABLE and INSERT one row. The new table's
  first row needs a new 8 kB block in the data directory, so this fails ("could not extend file ...: No
  space left on device") on a full volume, where an INSERT that fits an existing page, or
  `SELECT txid_current()`, still succeeds (seen on a full PostgreSQL 13 and 15 data directory). A
  TEMP table is not enough: temp_tablespaces may put it on another disk.
- ClickHouse: INSERT one row into a small kit-owned MergeTree table (its rows expire after a day): every
  INSERT writes a new part on the data volume, and ClickHouse refuses it when it cannot reserve the space
  (NOT_ENOUGH_SPACE) or cannot write the part's files.
- Kafka: one message produced to the kit-owned topic `posthog_compose_write_probe` with
  `kafka-console-producer --sync` inside the kafka container (the tool cp-kafka ships, as the ingestion
  probe asks `kafka-consumer-groups` there), acknowledged by every in-sync replica (acks=all, as PostHog's
  producers ask). Every message Kafka takes is appended to the topic's log segment on the data volume; a
  broker that cannot write it answers KafkaStorageException ("Disk error when trying to access log file
  on the disk"). The topic is not one PostHog 1.43 reads or writes (posthog/kafka_client/topics.py:5-16,
  each `clickhouse_*`, `events_*` or `plugin_log_entries` behind KAFKA_PREFIX), so no consumer ever sees
  the probe's messages; retention (KAFKA_LOG_RETENTION_HOURS) removes them.
- ZooKeeper: the free space of its volumes' filesystems.
- every data volume: `df` inside its container on its mount point (the volume's own filesystem).

Every probe runs at once, each with its own deadline (PROBE_SECONDS); one that does not answer in time
is "cannot tell", never "failing". A probe never raises. Kafka's deadline is longer (KAFKA_PROBE_SECONDS): its
client is a JVM tool, which takes one to three seconds to start before it sends anything.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError

#: Each probe's deadline: a datastore slower than this to take one row is reported as "cannot tell".
PROBE_SECONDS = 5.0
#: Kafka's probe's deadline: the JVM's start, then the producer's own timeouts (KAFKA_CLIENT_MS each), which
#: end a produce that is not answered before this deadline kills the client, so the broker's error is read.
KAFKA_PROBE_SECONDS = 10.0
KAFKA_CLIENT_MS = 4000
#: The kit-owned topic of Kafka's probe (PostHog 1.43 neither produces to it nor consumes it).
KAFKA_PROBE_TOPIC = "posthog_compose_write_probe"
#: The producer's errors that say nothing about whether Kafka can write (no broker reached in time, a
#: leader moving, a topic not yet created): "cannot tell". Any other error is Kafka refusing the write.
KAFKA_UNSURE_ERRORS = frozenset({"TimeoutException", "NetworkException", "DisconnectException",
                                 "NotLeaderOrFollowerException", "LeaderNotAvailableException",
                                 "UnknownTopicOrPartitionException", "InterruptException"})
#: Below this much free space the filesystem of a data volume counts as full (no part, page or segment fits).
FULL_BYTES = 1024 * 1024
#: service -> (volume, mount point) of each data volume it holds (docker-compose.yml).
MOUNTS = {
    "db": (("postgres-data", "/var/lib/postgresql/data"),),
    "clickhouse": (("clickhouse-data", "/var/lib/clickhouse"),),
    "kafka": (("kafka-data", "/var/lib/kafka/data"),),
    "zookeeper": (("zookeeper-data", "/var/lib/zookeeper/data"), ("zookeeper-logs", "/var/lib/zookeeper/log")),
}
#: The services whose writes are probed (the others get the free-space check only).
WRITE_PROBES = ("db", "clickhouse", "kafka")
#: ClickHouse's table for the probe's rows (kit-owned, in PostHog's database; rows expire after a day).
CLICKHOUSE_PROBE_TABLE = "posthog_compose_write_probe"
LABELS = {"db": "PostgreSQL", "clickhouse": "ClickHouse", "kafka": "Kafka", "zookeeper": "ZooKeeper"}

OK, FAILING, CANNOT_TELL = "ok", "failing", "cannot tell"


@dataclass
class Space:
    volume: str
    total_bytes: int | None = None
    free_bytes: int | None = None

    @property
    def full(self) -> bool:
        return self.free_bytes is not None and self.free_bytes < FULL_BYTES


@dataclass
class Capability:
    """One datastore's verdict: "ok", "failing" (with the reason and a one-line fix) or "cannot tell"."""
    service: str
    verdict: str
    reason: str = ""
    fix: str = ""
    space: tuple[Space, ...] = ()

    @property
    def failing(self) -> bool:
        return self.verdict == FAILING

    def line(self) -> str:
        """`db: cannot write: ... Fix: ...` (or why it cannot be told)."""
        label = f"{self.service} ({LABELS.get(self.service, self.service)})"
        if self.verdict == FAILING:
            return f"{label}: cannot write: {self.reason}. Fix: {self.fix}"
        if self.verdict == CANNOT_TELL:
            return f"{label}: whether it can write cannot be told ({self.reason})"
        return f"{label}: takes writes"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["space"] = [asdict(space) for space in self.space]
        return data


# ----------------------------------------------------------------------------- the probes
def _postgres_sql() -> str:
    # A name of its own for each probe, so that two probes at once never wait on each other's catalog row.
    table = f"posthog_compose_write_probe_{secrets.token_hex(4)}"
    seconds = max(1, int(PROBE_SECONDS) - 1)
    return (f"SET statement_timeout = '{seconds}s';\nSET lock_timeout = '{seconds}s';\nBEGIN;\n"
            f"CREATE TABLE {table} (written_at timestamptz);\nINSERT INTO {table} VALUES (now());\nROLLBACK;\n")


def _run(runner, command: list[str], input: str | None = None, seconds: float | None = None):
    """The probe's command within its deadline: (result, None), or (None, why it could not be told)."""
    seconds = PROBE_SECONDS if seconds is None else seconds
    try:
        return runner.run(command, capture=True, check=False, input=input, mutating=False, timeout=seconds), None
    except OperatorError as exc:  # the deadline passed, or the client is missing
        text = str(exc)
        return None, (f"no answer within {seconds:.0f} s" if "did not finish" in text else text[:160])


def _not_running(text: str) -> bool:
    lowered = text.lower()
    return "is not running" in lowered or "no container found" in lowered or "is restarting" in lowered


def _last(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def probe_postgres(root: Path, runner, values: dict[str, str]) -> tuple[str, str]:
    """("ok" | "failing" | "cannot tell", reason)."""
    user, database = values.get("POSTGRES_USER") or "posthog", values.get("POSTGRES_DB") or "posthog"
    command = compose.command(root, "exec", "-T", "db", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                              "-U", user, "-d", database)
    result, why = _run(runner, command, _postgres_sql())
    if result is None:
        return CANNOT_TELL, why
    if result.returncode == 0:
        return OK, ""
    errors = [line.strip() for line in (result.stderr or "").splitlines()
              if any(mark in line for mark in ("ERROR:", "PANIC:", "No space left"))]
    if errors:
        reason = errors[0].split("ERROR:", 1)[-1].split("PANIC:", 1)[-1].strip()
        if "statement timeout" in reason or "lock timeout" in reason:
            return CANNOT_TELL, f"no answer within {PROBE_SECONDS:.0f} s"
        return FAILING, reason[:200]
    detail = _last(result.stderr) or f"psql exited {result.returncode}"
    return CANNOT_TELL, ("not running" if _not_running(detail) else detail)


def probe_clickhouse(root: Path, runner, values: dict[str, str]) -> tuple[str, str]:
    """("ok" | "failing" | "cannot tell", reason). The table is made on the first probe only (one exec
    in the common case); clickhouse-client takes the password from CLICKHOUSE_PASSWORD in the container."""
    import datetime
    import re

    database = values.get("CLICKHOUSE_DATABASE") or "posthog"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        return CANNOT_TELL, "CLICKHOUSE_DATABASE is not a plain name"
    table = f"{database}.{CLICKHOUSE_PROBE_TABLE}"
    create = (f"CREATE TABLE IF NOT EXISTS {table} (written_at DateTime) ENGINE = MergeTree ORDER BY written_at "
              "TTL written_at + INTERVAL 1 DAY")
    row = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + "\n"

    def client(query: str, data: str = ""):
        return _run(runner, compose.command(root, "exec", "-T", "clickhouse", "clickhouse-client", "--query", query),
                    data)

    insert = f"INSERT INTO {table} FORMAT TSV"
    result, why = client(insert, row)
    if result is not None and result.returncode != 0 and "UNKNOWN_TABLE" in (result.stderr or ""):
        result, why = client(create)
        if result is not None and result.returncode == 0:
            result, why = client(insert, row)
    if result is None:
        return CANNOT_TELL, why
    if result.returncode == 0:
        return OK, ""
    text = result.stderr or ""
    # A refusal by the server ("Code: N. DB::Exception: ..."): the write failed. A client that cannot
    # connect (code 209/210) says nothing about writing.
    refused = [line.strip() for line in text.splitlines() if "DB::Exception" in line]
    if refused:
        return FAILING, refused[-1].split("DB::Exception:", 1)[-1].strip()[:200]
    detail = _last(text) or f"clickhouse-client exited {result.returncode}"
    return CANNOT_TELL, ("not running" if _not_running(detail) else detail)


def kafka_command(root: Path, values: dict[str, str]) -> list[str]:
    """`kafka-console-producer` in the kafka container: one synchronous send (its ExecutionException is
    printed and the tool exits 1 when the broker refuses), acks from every in-sync replica, no retry (the
    broker's first answer is the finding), no linger, and the client's timeouts within the deadline."""
    from posthog_compose.operations.stack.here import kafka_bootstrap_server

    timeout = str(KAFKA_CLIENT_MS)
    return compose.command(root, "exec", "-T", "kafka", "kafka-console-producer", "--bootstrap-server",
                           kafka_bootstrap_server(values), "--topic", KAFKA_PROBE_TOPIC, "--sync",
                           "--request-required-acks", "all", "--message-send-max-retries", "0", "--timeout", "0",
                           "--request-timeout-ms", timeout, "--producer-property", f"max.block.ms={timeout}",
                           "--producer-property", f"delivery.timeout.ms={timeout}")


def probe_kafka(root: Path, runner, values: dict[str, str]) -> tuple[str, str]:
    """("ok" | "failing" | "cannot tell", reason): one message produced to KAFKA_PROBE_TOPIC."""
    import datetime
    import re

    message = f"write probe {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}\n"
    result, why = _run(runner, kafka_command(root, values), message, KAFKA_PROBE_SECONDS)
    if result is None:
        return CANNOT_TELL, why
    if result.returncode == 0:
        return OK, ""
    text = f"{result.stderr or ''}\n{result.stdout or ''}"
    # The producer's exception, as the tool prints it: "...ExecutionException: org.apache.kafka.common.
    # errors.KafkaStorageException: Disk error when trying to access log file on the disk."
    errors = re.findall(r"org\.apache\.kafka\.common\.errors\.(\w+)(?::[ \t]*([^\r\n]*))?", text)
    if errors:
        name, detail = errors[-1]
        reason = f"{name}: {detail.strip().rstrip('.')}".rstrip(": ")[:200]
        return (CANNOT_TELL if name in KAFKA_UNSURE_ERRORS else FAILING), reason
    detail = _last(result.stderr) or f"kafka-console-producer exited {result.returncode}"
    return CANNOT_TELL, ("not running" if _not_running(detail) else detail)


def measure_space(root: Path, runner, service: str) -> tuple[Space, ...]:
    """The free space on the filesystem of each of ``service``'s data volumes, from one `df` inside its
    container (what it sees on its mount point is the volume's own filesystem); unknown fields stay None."""
    mounts = MOUNTS.get(service, ())
    result, _ = _run(runner, compose.command(root, "exec", "-T", service, "df", "-Pk", *(path for _, path in mounts)))
    rows = parse_df_rows(result.stdout) if result is not None and result.returncode == 0 else []
    if len(rows) != len(mounts):
        rows = [(None, None)] * len(mounts)
    return tuple(Space(volume, *sizes) for (volume, _), sizes in zip(mounts, rows))


def parse_df_rows(output: str) -> list[tuple[int | None, int | None]]:
    """(total, available) bytes of each row of `df -Pk PATH...`, in the order of the paths asked."""
    found = []
    for line in (output or "").split("\n")[1:]:  # df ends its rows with \n only
        fields = line.split()
        if not fields:
            continue
        try:
            found.append((int(fields[1]) * 1024, int(fields[3]) * 1024))
        except (IndexError, ValueError):
            found.append((None, None))
    return found


PROBES = {"db": probe_postgres, "clickhouse": probe_clickhouse, "kafka": probe_kafka}


def judge(service: str, write: tuple[str, str] | None, space: tuple[Space, ...]) -> Capability:
    """One datastore's verdict from its write probe (None: not probed) and its volumes' free space."""
    full = [s for s in space if s.full]
    verdict, reason = write if write is not None else (OK, "")
    if verdict == OK and full:
        verdict, reason = FAILING, f"the filesystem of volume {full[0].volume} is full"
    if verdict != FAILING:
        return Capability(service, verdict, reason, "", space)
    where = ", ".join(s.volume for s in space) or "its data volume"
    if full or any(word in reason.lower() for word in ("space", "disk error", "storage")):
        fix = (f"free space on the filesystem of {where} or move it to a larger disk, then `invoke status` "
               "(handbook: Disk and logs)")
    else:
        fix = f"read `invoke logs -s {service} --tail 50` for why it refuses writes"
    return Capability(service, FAILING, reason, fix, space)


def check(root: Path, runner, values: dict[str, str], services: list[str]) -> dict[str, Capability]:
    """service -> Capability for each of ``services`` (the local datastores that run), probed at once."""
    wanted = [name for name in services if name in MOUNTS]
    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=2 * len(wanted)) as pool:
        writes = {name: pool.submit(PROBES[name], root, runner, values) for name in wanted if name in PROBES}
        spaces = {name: pool.submit(measure_space, root, runner, name) for name in wanted}
        return {name: judge(name, writes[name].result() if name in writes else None, spaces[name].result())
                for name in wanted}


def failing(found: dict[str, Capability]) -> list[Capability]:
    return [capability for capability in found.values() if capability.failing]


def refusal(found: dict[str, Capability]) -> str:
    """One line for an OperatorError: every datastore that cannot write, why, and the first fix."""
    bad = failing(found)
    what = "; ".join(f"{c.service} cannot write ({c.reason})" for c in bad)
    return f"{what}. Fix: {bad[0].fix}"
