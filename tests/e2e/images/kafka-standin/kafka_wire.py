"""The Kafka STAND-IN's wire format and its client (test only), shared by every stand-in that talks to it:
the PostHog stand-in's capture (producer) and plugin server (consumer and producer), the ClickHouse
stand-in's Kafka engine (consumer) and the stand-in's own `kafka-consumer-groups`.

Kafka's binary protocol is not modelled: a client keeps one TCP connection to a broker of its list (port,
broker list and reconnection are real) and sends one JSON object per line, answered by one line:

- {"api": "produce", "topic", "key", "value"} -> {"partition": 0, "offset": N}; a missing topic is created
  (Kafka's auto.create.topics.enable, on by default).
- {"api": "fetch", "group", "topics", "client_id", "reset": "earliest"|"latest", "max"} -> {"messages": [...]}:
  the messages after the group's committed offset. The connection becomes a member of the group until it
  closes (a consumer that stops or dies leaves it, as kafkajs and librdkafka do with LeaveGroup or the
  session timeout). A group without a committed offset on a topic starts at ``reset``.
- {"api": "commit", "group", "offsets": {topic: next offset}} -> {"ok": true}
- {"api": "describe"} -> {"topics": {topic: log-end offset}, "groups": {group: {"committed": {...},
  "members": [{"client_id", "host", "topics"}]}}}
Errors are {"error": "..."}. Every topic has one partition, 0 (cp-kafka's num.partitions default is 1).
"""
import json
import socket


class KafkaError(Exception):
    """No broker of the list answers, or the broker refused the request."""


def split_hosts(hosts):
    """host:port entries (a list, or a comma-separated string); an entry without a port is skipped."""
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    found = []
    for entry in hosts:
        host, _, port = entry.strip().rpartition(":")
        if host and port.isdigit():
            found.append((host, int(port)))
    return found


class Client:
    """One connection to the first broker of ``hosts`` that answers; call() sends a request, returns the answer."""

    def __init__(self, hosts, timeout=5.0):
        self.hosts = split_hosts(hosts)
        self.timeout = timeout
        self.sock = None
        self.reader = None

    def connect(self):
        errors = []
        for host, port in self.hosts:
            try:
                self.sock = socket.create_connection((host, port), timeout=self.timeout)
                self.reader = self.sock.makefile("rb")
                return
            except OSError as exc:
                errors.append(f"{host}:{port}: {exc}")
        raise KafkaError("no broker answers (" + ("; ".join(errors) or "no host:port in the list") + ")")

    def call(self, request):
        if self.sock is None:
            self.connect()
        try:
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            line = self.reader.readline()
        except OSError as exc:
            self.close()
            raise KafkaError(f"the broker connection broke: {exc}")
        if not line:
            self.close()
            raise KafkaError("the broker closed the connection")
        answer = json.loads(line)
        if "error" in answer:
            raise KafkaError(answer["error"])
        return answer

    def close(self):
        for thing in (self.reader, self.sock):
            try:
                if thing is not None:
                    thing.close()
            except OSError:
                pass
        self.sock = self.reader = None


def produce(hosts, topic, key, value, timeout=10.0):
    """One message, acknowledged by the broker: (partition, offset). Raises KafkaError."""
    client = Client(hosts, timeout=timeout)
    try:
        answer = client.call({"api": "produce", "topic": topic, "key": key, "value": value})
        return answer["partition"], answer["offset"]
    finally:
        client.close()
