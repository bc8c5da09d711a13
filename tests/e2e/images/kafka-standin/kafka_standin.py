#!/usr/bin/env python3
"""Kafka STAND-IN (test only): validates cp-kafka's variables, registers broker
KAFKA_BROKER_ID in ZooKeeper as an ephemeral znode like a real broker, and accepts TCP
connections on 9092. It carries no messages."""
import json
import os
import signal
import socket
import sys
import threading
import time

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
os.makedirs("/var/lib/kafka/data", exist_ok=True)
with open("/var/lib/kafka/data/meta.properties", "w") as handle:
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

listener.bind(("0.0.0.0", 9092))
listener.listen(64)
print(f"[KafkaServer id={broker_id}] started (kafka.server.KafkaServer) [stand-in, retention "
      f"{env.get('KAFKA_LOG_RETENTION_HOURS', '168')}h]", flush=True)


def serve():
    while True:
        connection, _ = listener.accept()
        connection.close()


threading.Thread(target=serve, daemon=True).start()
while True:
    time.sleep(5)
    if not zk.connected:
        print("ERROR lost ZooKeeper session", flush=True)
        sys.exit(1)
