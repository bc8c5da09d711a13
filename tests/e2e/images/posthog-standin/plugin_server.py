#!/usr/bin/env python3
"""The plugin server's Node process (STAND-IN for plugin-server/dist/index.js, started by bin/plugin-server).
Its start follows createHub (plugin-server/src/utils/db/hub.ts) and startPluginsServer
(plugin-server/src/main/pluginsServer.ts) at the 1.43.0 tag:

1. ClickHouse: `SELECT 1` over HTTP(S) (hub.ts:141-160; 8443/https when CLICKHOUSE_SECURE, whose default is
   false: config.ts:31). A failure is a "Launchpad failure" and exit 1 (pluginsServer.ts:387-392).
2. Kafka: a producer connects to KAFKA_HOSTS (hub.ts:162-176; host:port entries, default kafka:9092:
   config.ts:33; kafkajs retries 10 times, then the same exit 1).
3. PostgreSQL pool (lazy: hub.ts:181-183), then Redis, waited for with retries (ioredis).
4. The Kafka consumer starts (ingestion_consumer.py: group clickhouse-ingestion, events_plugin_ingestion in,
   clickhouse_events_json out); /_ready answers 200 once it has joined (http-server.ts:17-31).
5. Only then the HTTP server on 6738 (pluginsServer.ts:380-383): /_health answers once the hub is up.
It does not read ENCRYPTION_SALT_KEYS: no 1.43 code does."""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, "/code")
import ingestion_consumer  # noqa: E402
import standin  # noqa: E402
from datastores_tls import node_redis_client  # noqa: E402

settings = standin.plugin_server_setup()
standin.log("🤔 Connecting to ClickHouse...")
try:
    standin.clickhouse_http_query("SELECT 1", timeout=0, settings=settings, verify=True)
except SystemExit:
    standin.log("💥 Launchpad failure! Error: cannot query ClickHouse")
    raise
standin.log("👍 ClickHouse ready")
standin.log("🤔 Connecting to Kafka...")
for attempt in range(11):  # hub.ts:171-173: retries 10
    if standin.kafka_connects(settings["KAFKA_HOSTS_LIST"]):
        break
    time.sleep(0.5)
else:
    standin.log(f"💥 Launchpad failure! KafkaJSNumberOfRetriesExceeded: cannot connect to {','.join(settings['KAFKA_HOSTS_LIST'])}")
    sys.exit(1)
standin.log("👍 Kafka ready")
connection = standin.connect_db(node=True)  # node-postgres's reading of DATABASE_URL (datastores_tls.py)
connection.close()
# The hub's Redis client (ioredis, maxRetriesPerRequest: -1): the plugin server waits for it, retrying
# and logging each error, and serves nothing until Redis answers (plugin-server/src/utils/utils.ts).
redis = node_redis_client()
while True:
    try:
        redis.set("standin:plugin-server:started", standin.VERSION)
        break
    except Exception as exc:
        standin.log(f"🔴 Redis error encountered! Trying to reconnect... {exc}")
        time.sleep(2)
standin.log("✅ Connected to Redis!")

consumer = {"ready": False}
# The ingestion queue's Kafka consumer (ingestion_consumer.py): ready once it has joined its group, not
# ready while no broker answers.
threading.Thread(target=ingestion_consumer.run, args=(settings["KAFKA_HOSTS_LIST"], consumer, standin.log),
                 daemon=True).start()


class Health(BaseHTTPRequestHandler):
    """:6738/_health (alive) and /_ready (ready to consume), as PostHog's plugin server serves them."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/_health":
            code, body = 200, {"status": "ok"}
        elif path == "/_ready":
            code, body = (200, {"status": "ok"}) if consumer["ready"] else (503, {"status": "error"})
        else:
            code, body = 404, {"status": "not found"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


standin.log(f"Plugin server started (stand-in {standin.VERSION})")
ThreadingHTTPServer(("0.0.0.0", 6738), Health).serve_forever()
