#!/usr/bin/env python3
"""Kafka STAND-IN (test only): validates cp-kafka's variables, registers broker KAFKA_BROKER_ID in ZooKeeper
as an ephemeral znode like a real broker, and serves port 9092.

It carries messages as PostHog 1.43's ingestion path needs them (see posthog-standin/BOUNDARIES.md,
"Ingestion path"): topics with one partition each, created on first use; per consumer group, the
committed offset of each topic and the members (open connections) that fetched for it, which
`kafka-consumer-groups --describe` reports with Kafka's columns. Topics live in
/var/lib/kafka/data/<topic>-0/ and the committed offsets in /var/lib/kafka/data/__consumer_offsets-0/, so
both survive a restart as Kafka's do. The wire format is the stand-in's own (kafka_wire.py); retention,
replication and partitioning by key are not modelled."""
import json
import os
import signal
import socket
import sys
import threading
import time

DATA = "/var/lib/kafka/data"
LOG_NAME = "00000000000000000000.log"  # a partition's first segment is named after its base offset


class Broker:
    """The topics, the groups' committed offsets and their members, kept in memory and on disk under ``data``."""

    def __init__(self, data=DATA):
        self.data = data
        self.lock = threading.Lock()
        self.logs = {}  # topic -> [message dict]
        self.committed = {}  # group -> {topic: next offset to read}
        self.members = {}  # group -> {connection id: {"client_id", "host", "topics"}}
        self.load()

    def _offsets_file(self):
        return os.path.join(self.data, "__consumer_offsets-0", "offsets.json")

    def load(self):
        if not os.path.isdir(self.data):
            return
        for entry in sorted(os.listdir(self.data)):
            path = os.path.join(self.data, entry, LOG_NAME)
            if entry.endswith("-0") and not entry.startswith("__") and os.path.isfile(path):
                with open(path) as handle:
                    self.logs[entry[:-2]] = [json.loads(line) for line in handle if line.strip()]
        if os.path.isfile(self._offsets_file()):
            with open(self._offsets_file()) as handle:
                self.committed = json.load(handle)

    def _topic(self, topic):
        if not topic or "/" in topic or topic.startswith("."):
            raise ValueError(f"invalid topic name {topic!r}")
        if topic not in self.logs:
            os.makedirs(os.path.join(self.data, f"{topic}-0"), exist_ok=True)
            self.logs[topic] = []
        return self.logs[topic]

    def produce(self, topic, key, value):
        with self.lock:
            try:
                log = self._topic(topic)
                message = {"offset": len(log), "key": key, "value": value, "timestamp": time.time()}
                with open(os.path.join(self.data, f"{topic}-0", LOG_NAME), "a") as handle:
                    handle.write(json.dumps(message) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                # Kafka answers a produce it cannot append to the log with KAFKA_STORAGE_ERROR (error code 56)
                # and the message is not acknowledged; the stand-in keeps serving (Kafka takes the log
                # directory offline, and the broker stops once all of them are).
                return {"error": f"KAFKA_STORAGE_ERROR: {exc.strerror or exc}"}
            log.append(message)
            return {"partition": 0, "offset": message["offset"]}

    def fetch(self, connection, group, topics, client_id="", host="", reset="latest", limit=100):
        with self.lock:
            self.members.setdefault(group, {})[connection] = {"client_id": client_id or connection, "host": host,
                                                             "topics": list(topics)}
            positions = self.committed.setdefault(group, {})
            messages = []
            for topic in topics:
                log = self._topic(topic)
                if topic not in positions:  # where a new group starts; remembered as its first position
                    positions[topic] = 0 if reset == "earliest" else len(log)
                    self._save_offsets()
                for message in log[positions[topic]:]:
                    if len(messages) >= limit:
                        break
                    messages.append({"topic": topic, "partition": 0, **message})
            return {"messages": messages}

    def commit(self, group, offsets):
        with self.lock:
            positions = self.committed.setdefault(group, {})
            for topic, offset in offsets.items():
                positions[topic] = max(0, min(int(offset), len(self._topic(topic))))
            self._save_offsets()
            return {"ok": True}

    def _save_offsets(self):
        path = self._offsets_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as handle:
            json.dump(self.committed, handle)
        os.replace(path + ".tmp", path)

    def leave(self, connection):
        with self.lock:
            for members in self.members.values():
                members.pop(connection, None)

    def describe(self):
        with self.lock:
            groups = {group: {"committed": dict(self.committed.get(group, {})),
                              "members": list(self.members.get(group, {}).values())}
                      for group in sorted(set(self.committed) | {g for g, m in self.members.items() if m})}
            return {"topics": {topic: len(log) for topic, log in sorted(self.logs.items())}, "groups": groups}

    def answer(self, connection, host, request):
        api = request.get("api")
        try:
            if api == "produce":
                return self.produce(request["topic"], request.get("key"), request.get("value"))
            if api == "fetch":
                return self.fetch(connection, request["group"], request["topics"], request.get("client_id", ""),
                                  host, request.get("reset", "latest"), int(request.get("max", 100)))
            if api == "commit":
                return self.commit(request["group"], request["offsets"])
            if api == "describe":
                return self.describe()
        except (KeyError, TypeError, ValueError) as exc:
            return {"error": f"bad request: {exc}"}
        return {"error": f"unknown api {api!r}"}

    def session(self, connection, peer):
        """One client connection: a line in, a line out, until it closes (a health check's connect-and-close
        ends here at once). A consumer's membership ends with its connection."""
        name = f"{peer[0]}:{peer[1]}"
        reader = connection.makefile("rb")
        try:
            for line in reader:
                try:
                    request = json.loads(line)
                except ValueError:
                    break  # not a client of this stand-in: hang up, as Kafka does on a malformed request
                connection.sendall(json.dumps(self.answer(name, f"/{peer[0]}", request)).encode() + b"\n")
        except OSError:
            pass
        finally:
            self.leave(name)
            reader.close()
            connection.close()


def serve(broker, listener):
    while True:
        try:
            connection, peer = listener.accept()
        except OSError:
            return  # the listener was closed
        threading.Thread(target=broker.session, args=(connection, peer), daemon=True).start()


def main():
    from kazoo.client import KazooClient
    from kazoo.exceptions import NodeExistsError

    # Like the real server: SIGTERM (docker stop) ends it at once (a PID 1 without a handler ignores it).
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))

    env = os.environ
    for required in ("KAFKA_ZOOKEEPER_CONNECT", "KAFKA_ADVERTISED_LISTENERS"):
        if not env.get(required):
            print(f"{required} is required.", flush=True)
            sys.exit(1)
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        if int(env.get(name, "1")) > 1:
            print(f"ERROR [KafkaApi-1] Number of alive brokers '1' does not meet the required replication factor "
                  f"'{env[name]}' ({name}). This error can be ignored if the cluster is starting up.", flush=True)
            sys.exit(1)
    broker_id = int(env.get("KAFKA_BROKER_ID", "1"))
    os.makedirs(DATA, exist_ok=True)
    with open(f"{DATA}/meta.properties", "w") as handle:
        handle.write(f"version=0\nbroker.id={broker_id}\n")

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    zk = KazooClient(hosts=env["KAFKA_ZOOKEEPER_CONNECT"], timeout=10)
    deadline = time.time() + 120
    while True:
        try:
            zk.start(timeout=10)
            break
        except Exception as exc:  # the real broker also retries until ZooKeeper answers
            if time.time() > deadline:
                print(f"ERROR Timed out waiting for connection to ZooKeeper: {exc}", flush=True)
                sys.exit(1)
            time.sleep(2)
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")[0]
    host, port = advertised.split("://", 1)[1].rsplit(":", 1)
    registration = json.dumps({"endpoints": [advertised], "host": host, "port": int(port), "version": 5}).encode()
    while True:
        try:
            zk.create(f"/brokers/ids/{broker_id}", registration, ephemeral=True, makepath=True)
            break
        except NodeExistsError:  # the previous session's node lingers until its timeout, as with Kafka
            if time.time() > deadline:
                print(f"ERROR Broker id {broker_id} is already registered in ZooKeeper", flush=True)
                sys.exit(1)
            time.sleep(2)

    broker = Broker()
    listener.bind(("0.0.0.0", 9092))
    listener.listen(64)
    print(f"[KafkaServer id={broker_id}] started (kafka.server.KafkaServer) [stand-in, retention "
          f"{env.get('KAFKA_LOG_RETENTION_HOURS', '168')}h, {len(broker.logs)} topic(s)]", flush=True)
    threading.Thread(target=serve, args=(broker, listener), daemon=True).start()
    # Like the real broker: a ZooKeeper that is away for less than the session timeout (kazoo's
    # SUSPENDED, e.g. while `invoke backup` copies ZooKeeper's volumes) keeps the session and the
    # registration; only an expired session (LOST) ends this stand-in.
    lost = threading.Event()
    zk.add_listener(lambda state: lost.set() if state == "LOST" else None)
    while True:
        time.sleep(5)
        if lost.is_set():
            print("ERROR lost ZooKeeper session", flush=True)
            sys.exit(1)


if __name__ == "__main__":
    main()
