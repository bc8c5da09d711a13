#!/usr/bin/env python3
"""kafka-consumer-groups STAND-IN (test only): cp-kafka's /usr/bin/kafka-consumer-groups (Kafka's
ConsumerGroupCommand), for what an operator asks of it here: `--bootstrap-server HOST:PORT` with `--list`, or
`--describe` with `--all-groups` or `--group G` (repeatable). The output has Kafka's form: per group a blank
line, "Consumer group 'G' has no active members." when no member is connected, then the columns GROUP TOPIC
PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID, "-" where there is no value. It asks
the stand-in broker over its own wire format (kafka_wire.py)."""
import argparse
import sys

sys.path.insert(0, "/usr/local/lib/kafka-standin")
from kafka_wire import Client, KafkaError  # noqa: E402

HEADER = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID")


def rows_of(group, state, topics):
    """One row per topic the group has an offset for or a member reads (every topic has one partition, 0)."""
    members = state["members"]
    subscribed = {topic for member in members for topic in member["topics"]}
    rows = []
    for topic in sorted(set(state["committed"]) | subscribed):
        current = state["committed"].get(topic)
        end = topics.get(topic, 0)
        member = next((m for m in members if topic in m["topics"]), None)
        rows.append((group, topic, "0", "-" if current is None else str(current), str(end),
                     "-" if current is None else str(max(0, end - current)),
                     member["client_id"] + "-member" if member else "-", member["host"] if member else "-",
                     member["client_id"] if member else "-"))
    return rows


def describe(answer, groups):
    """Kafka's text for ``groups`` (None: every group); a group that does not exist is said on stderr."""
    out = []
    for group in (sorted(answer["groups"]) if groups is None else groups):
        state = answer["groups"].get(group)
        if state is None:
            sys.stderr.write(f"\nError: Consumer group '{group}' does not exist.\n")
            continue
        if not state["members"]:
            out.append(f"\nConsumer group '{group}' has no active members.\n")
        rows = rows_of(group, state, answer["topics"])
        widths = [max([15, *(len(row[i]) for row in rows)]) if i in (0, 1, 6, 7) else (10 if i == 2 else 15)
                  for i in range(8)]
        for row in [HEADER, *rows]:
            out.append("\n" + " ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:8])) + " " + row[8])
        out.append("\n")
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kafka-consumer-groups")
    parser.add_argument("--bootstrap-server", required=True)
    parser.add_argument("--describe", action="store_true")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--all-groups", action="store_true")
    parser.add_argument("--group", action="append")
    args = parser.parse_args(argv)
    if args.describe == args.list:
        parser.error("Command must include exactly one action: --list, --describe")
    if args.describe and not (args.all_groups or args.group):
        parser.error("Option [describe] takes one of these options: [all-groups], [group]")
    client = Client(args.bootstrap_server, timeout=5.0)
    try:
        answer = client.call({"api": "describe"})
    except KafkaError as exc:
        sys.stderr.write("Error: Executing consumer group command failed due to "
                         f"org.apache.kafka.common.errors.TimeoutException: {exc}\n")
        return 1
    finally:
        client.close()
    if args.list:
        sys.stdout.write("".join(f"{group}\n" for group in sorted(answer["groups"])))
        return 0
    sys.stdout.write(describe(answer, None if args.all_groups else args.group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
