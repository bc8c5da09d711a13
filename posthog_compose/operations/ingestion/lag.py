"""Consumer lag, asked as an operator asks it: `kafka-consumer-groups --describe --all-groups` inside the kafka
container (cp-kafka's command; the e2e Kafka stand-in has one with the same output), parsed into rows of
group, topic, partition, committed offset, log-end offset, lag and member.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError

#: Kafka's columns (ConsumerGroupCommand), in its order.
COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID")


@dataclass(frozen=True)
class LagRow:
    """One partition a consumer group reads; an offset is None where Kafka prints "-"."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int | None
    lag: int | None
    member: str  # the consumer's client id, or "-" when no member of the group reads the partition

    def as_dict(self) -> dict:
        return asdict(self)


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def parse(output: str) -> list[LagRow]:
    """The rows of `--describe` output: every line under a GROUP ... header, up to the next blank line.
    Lines Kafka prints around them ("Consumer group 'x' has no active members.") are not rows."""
    rows: list[LagRow] = []
    in_table = False
    for line in output.splitlines():
        words = line.split(None, len(COLUMNS) - 1)
        if not words:
            in_table = False
            continue
        if tuple(words[:6]) == COLUMNS[:6]:
            in_table = True
            continue
        if not in_table or len(words) < 6 or not (words[2].isdigit() or words[2] == "-"):
            continue
        client = words[8].strip() if len(words) > 8 else "-"
        rows.append(LagRow(group=words[0], topic=words[1], partition=_number(words[2]) or 0,
                           committed=_number(words[3]), end=_number(words[4]), lag=_number(words[5]),
                           member=client or "-"))
    return rows


def bootstrap_server(values: dict[str, str]) -> str:
    """The broker as the kafka container knows itself (stack/here.py: the write probe asks it too)."""
    from posthog_compose.operations.stack.here import kafka_bootstrap_server

    return kafka_bootstrap_server(values)


def command(root: Path, values: dict[str, str]) -> list[str]:
    return compose.command(root, "exec", "-T", "kafka", "kafka-consumer-groups", "--bootstrap-server",
                           bootstrap_server(values), "--describe", "--all-groups")


def describe(root: Path, runner, values: dict[str, str], timeout: float = 30.0) -> list[LagRow]:
    """Every consumer group's rows, or OperatorError naming why Kafka could not be asked."""
    cmd = command(root, values)
    result = runner.run(cmd, capture=True, check=False, mutating=False, timeout=max(1.0, timeout))
    if result.returncode != 0:
        detail = " ".join((result.stderr or result.stdout or "").strip().splitlines()[-1:])[:200]
        raise OperatorError(f"Kafka's consumer groups could not be asked (`kafka-consumer-groups` in the kafka "
                            f"container exited {result.returncode}{': ' + detail if detail else ''})")
    return parse(result.stdout or "")


def offsets(rows: list[LagRow], group: str, topic: str) -> dict[int, tuple[int | None, int | None]]:
    """{partition: (committed, end)} of ``group`` on ``topic``."""
    return {row.partition: (row.committed, row.end) for row in rows if row.group == group and row.topic == topic}


def topic_ends(rows: list[LagRow], topic: str) -> dict[int, int]:
    """The log-end offset of each partition of ``topic``, as any group reports it (0 when none does)."""
    ends: dict[int, int] = {}
    for row in rows:
        if row.topic == topic and row.end is not None:
            ends[row.partition] = max(ends.get(row.partition, 0), row.end)
    return ends
