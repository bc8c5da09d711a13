#!/usr/bin/env python3
"""./bin/plugin-server (STAND-IN): reads the plugin server's names (KAFKA_HOSTS, not KAFKA_URL), validates ENCRYPTION_SALT_KEYS like PostHog's plugin server,
decrypts every stored value with all the keys, and serves /_health on 6738."""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, "/code")
import standin  # noqa: E402
from datastores_tls import node_redis_client  # noqa: E402

# Noise the real image prints at start (its Django migration check), which `invoke logs --errors` filters.
standin.log("Skipping async migrations setup. This is unsafe in production!")
standin.log("DeprecationWarning: pkg_resources is deprecated as an API")
standin.log("GeoLite2 MMDB file not found")
settings = standin.plugin_server_setup()
cipher = standin.fernet()
connection = standin.connect_db(node=True)  # node-postgres's reading of DATABASE_URL (datastores_tls.py)
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
with connection, connection.cursor() as cursor:
    cursor.execute("SELECT id, ciphertext FROM posthog_standin_encrypted")
    rows = cursor.fetchall()
for row_id, ciphertext in rows:
    try:
        cipher.decrypt(ciphertext.encode())
    except Exception:
        standin.log(f"Error: cannot decrypt plugin config {row_id}: no key in ENCRYPTION_SALT_KEYS matches")
        sys.exit(1)
standin.log(f"Decrypted {len(rows)} plugin secret(s) with ENCRYPTION_SALT_KEYS")


class Health(BaseHTTPRequestHandler):
    """:6738/_health (alive) and /_ready (ready to consume), as PostHog's plugin server serves them."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/_health":
            code, body = 200, {"status": "ok"}
        elif path == "/_ready":
            ready = standin.kafka_reachable(settings["KAFKA_HOSTS_LIST"])
            code, body = (200, {"status": "ok"}) if ready else (503, {"status": "error"})
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
