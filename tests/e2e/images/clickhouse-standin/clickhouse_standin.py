#!/usr/bin/env python3
"""ClickHouse STAND-IN (test only). Resolves from_env in /etc/clickhouse-server/{config.d,users.d}
like ClickHouse (an unset variable is logged and becomes empty), waits for ZooKeeper and the
Kafka brokers of the named collections, then serves HTTP 8123 (/ping, authenticated SELECT 1),
HTTPS on <https_port> when <openSSL><server> is configured, and TCP 9000 / <tcp_port_secure>."""
import base64
import glob
import os
import signal
import socket
import ssl
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Like the real server: SIGTERM (docker stop) ends it at once (a PID 1 without a handler ignores it).
signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))

CONFIG = "/etc/clickhouse-server"


def load(pattern):
    merged = []
    for path in sorted(glob.glob(f"{CONFIG}/{pattern}/*.xml")):
        root = ET.parse(path).getroot()
        for element in root.iter():
            name = element.get("from_env")
            if name is not None:
                if name not in os.environ:
                    print(f"<Warning> Env variable is not set: {name}", flush=True)
                element.text = os.environ.get(name, "")
        merged.append(root)
    return merged


configs, users_files = load("config.d"), load("users.d")


def find(roots, path):
    for root in roots:
        found = root.find(path)
        if found is not None:
            return found
    return None


password_node = find(users_files, "users/default/password")
PASSWORD = (password_node.text or "") if password_node is not None else ""
zk_host = find(configs, "zookeeper/node/host")
zk_port = find(configs, "zookeeper/node/port")
brokers = [b.text for root in configs for b in root.iter("kafka_broker_list") if b.text]


def wait_for(host, port, what, greeting=b""):
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=3) as connection:
                if greeting:  # ZooKeeper logs an exception for a connection that says nothing
                    connection.sendall(greeting)
                    connection.recv(1024)
            print(f"<Information> connected to {what} at {host}:{port}", flush=True)
            return
        except (OSError, ValueError):
            time.sleep(1)
    print(f"<Error> cannot reach {what} at {host}:{port}", flush=True)
    sys.exit(1)


if zk_host is None or not (zk_port.text if zk_port is not None else ""):
    print("<Error> no <zookeeper> node configured (PostHog's ON CLUSTER DDL needs it)", flush=True)
    sys.exit(1)
wait_for(zk_host.text, zk_port.text, "ZooKeeper", b"srvr")
if not brokers:
    print("<Error> no kafka_broker_list configured (PostHog's Kafka-engine tables need it)", flush=True)
    sys.exit(1)
for broker in brokers[0].split(","):
    host, port = broker.strip().rsplit(":", 1)
    wait_for(host, port, "Kafka")
os.makedirs("/var/lib/clickhouse", exist_ok=True)
open("/var/lib/clickhouse/standin-marker", "w").write("clickhouse stand-in data\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def credentials(self):
        query = parse_qs(urlsplit(self.path).query)
        user = self.headers.get("X-ClickHouse-User") or query.get("user", ["default"])[0]
        key = self.headers.get("X-ClickHouse-Key") or query.get("password", [""])[0]
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        return user, key

    def handle_query(self):
        if urlsplit(self.path).path == "/ping":
            return self.reply(200, "Ok.\n")
        user, key = self.credentials()
        if user != "default" or key != PASSWORD:
            return self.reply(516, f"Code: 516. DB::Exception: {user}: Authentication failed: password is incorrect, "
                                   "or there is no user with such name. (AUTHENTICATION_FAILED)\n")
        return self.reply(200, "1\n")

    do_GET = do_POST = do_HEAD = handle_query


def serve_http(port, context=None):
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def serve_tcp(port, context=None):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(32)

    def loop():
        while True:
            connection, _ = listener.accept()
            try:
                if context is not None:
                    connection = context.wrap_socket(connection, server_side=True)
            except (ssl.SSLError, OSError):
                pass
            connection.close()

    threading.Thread(target=loop, daemon=True).start()


serve_http(8123)
serve_tcp(9000)
certificate = find(configs, "openSSL/server/certificateFile")
if certificate is not None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.text, find(configs, "openSSL/server/privateKeyFile").text)
    https_port = find(configs, "https_port")
    secure_port = find(configs, "tcp_port_secure")
    if https_port is not None:
        serve_http(int(https_port.text), context)
    if secure_port is not None:
        serve_tcp(int(secure_port.text), context)
    print("<Information> TLS enabled", flush=True)
print("<Information> Application: Ready for connections. [stand-in]", flush=True)
while True:
    time.sleep(3600)
