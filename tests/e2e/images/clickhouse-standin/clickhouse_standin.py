#!/usr/bin/env python3
"""ClickHouse STAND-IN (test only, not ClickHouse).

What it models: resolves from_env in /etc/clickhouse-server/{config.d,users.d} like ClickHouse (an
unset variable is logged and becomes empty); waits for ZooKeeper and the Kafka brokers of the named
collections; serves HTTP 8123 (/ping, queries authenticated with the users.xml password, wrong
credentials answered with Code 516 like ClickHouse), HTTPS on <https_port> when <openSSL><server> is
configured, TCP 9000 / <tcp_port_secure> (a one-line JSON exchange standing in for the native
protocol, authenticated like HTTP: see native_session). `SELECT version()` answers the version of
the build argument CLICKHOUSE_VERSION (a real 22.3 LTS number by default).

Data: a small SQL subset, enough for the backup tests, stored in files under /var/lib/clickhouse like
MergeTree parts: CREATE DATABASE, CREATE TABLE ... ENGINE = *MergeTree (metadata/<db>/<table>.sql),
INSERT INTO ... FORMAT TSV (each insert writes one immutable part data/<db>/<table>/all_N_N_0/ with
data.tsv, count.txt and checksums.txt, into a tmp_insert_ directory renamed when complete, as
ClickHouse does; on a full data volume refused with Code 243 NOT_ENOUGH_SPACE, as ClickHouse's
MergeTreeData::reserveSpace does),
SELECT count() FROM [WHERE column = literal AND ...] (select_where.py), SELECT * FROM ... [ORDER BY <first
column>] FORMAT TSV, and the kit's row count query on system.tables (database, name, total_rows of the
tables that store rows). Kafka-engine tables and the materialized views that read them into a table
(kafka_engine.py): the last hop of PostHog's ingestion path, a consumer group in the Kafka stand-in.
Tables and parts are read from disk, so a copied volume brings them back; at start a part whose checksums do not match is moved to
detached/broken_<part> and logged, as ClickHouse does with a broken part. Anything else is refused
with Code 62 (SYNTAX_ERROR); an unknown table or database with Code 60 / 81.

What it does not model: the native protocol's wire format, the Atomic database engine's store/<uuid> layout (the
parts live under data/<db>/<table>/ as with the Ordinary engine), merges, replication and its
ZooKeeper metadata, views other than a Kafka table's. ALTER TABLE ... FREEZE / UNFREEZE WITH NAME and the list of
MergeTree tables the backup asks system.tables for are modelled as 22.8 does them (freeze.py): the
backup copies the volume while the server serves, with the frozen parts in place of the live ones.
"""
import base64
import errno
import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, "/usr/local/lib/clickhouse-standin")
import freeze  # noqa: E402
import kafka_engine  # noqa: E402
import kafka_wire  # noqa: E402
import select_where  # noqa: E402

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
VERSION = os.environ.get("CLICKHOUSE_STANDIN_VERSION", "22.3.13.80")
DATA = "/var/lib/clickhouse"
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
LOCK = threading.Lock()


class QueryError(Exception):
    def __init__(self, code, name, message, status=400):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.status = status


def table_path(qualified):
    database, _, table = qualified.rpartition(".")
    database = database or "default"
    if not os.path.isdir(f"{DATA}/metadata/{database}"):
        raise QueryError(81, "UNKNOWN_DATABASE", f"Database {database} doesn't exist", 404)
    if not os.path.isfile(f"{DATA}/metadata/{database}/{table}.sql"):
        raise QueryError(60, "UNKNOWN_TABLE", f"Table {database}.{table} doesn't exist", 404)
    return f"{DATA}/data/{database}/{table}"


def parts(path):
    found = [name for name in os.listdir(path) if re.match(r"^all_\d+_\d+_0$", name)] if os.path.isdir(path) else []
    return sorted(found, key=lambda name: int(name.split("_")[1]))


def checksum(part):
    with open(f"{part}/data.tsv", "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def check_parts():
    """Like ClickHouse at start: a part whose files do not match its checksums is detached as broken."""
    for path in glob.glob(f"{DATA}/data/*/*"):
        for name in parts(path):
            part = f"{path}/{name}"
            try:
                good = open(f"{part}/checksums.txt").read().split() == [f"data.tsv", checksum(part)]
            except OSError:
                good = False
            if not good:
                os.makedirs(f"{path}/detached", exist_ok=True)
                os.rename(part, f"{path}/detached/broken_{name}")
                print(f"<Error> {path}: part {name} is broken (checksums do not match); detached as broken_{name}",
                      flush=True)


def insert_rows(qualified, rows):
    """One INSERT: a new immutable part of ``rows`` (TSV), written under tmp_insert_ and renamed when complete."""
    path = table_path(qualified)
    if rows and not rows.endswith("\n"):
        rows += "\n"
    with LOCK:
        number = max([int(name.split("_")[1]) for name in parts(path)] or [0]) + 1
        tmp, final = f"{path}/tmp_insert_all_{number}_{number}_0", f"{path}/all_{number}_{number}_0"
        try:
            os.makedirs(tmp)
            with open(f"{tmp}/data.tsv", "w") as handle:
                handle.write(rows)
            with open(f"{tmp}/count.txt", "w") as handle:
                handle.write(str(rows.count("\n")))
            with open(f"{tmp}/checksums.txt", "w") as handle:
                handle.write(f"data.tsv {checksum(tmp)}\n")
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            # As ClickHouse 22.x refuses an INSERT whose part it cannot reserve room for on the data disk:
            # MergeTreeData::reserveSpace (src/Storages/MergeTree/MergeTreeData.cpp, checkAndReturnReservation)
            # throws NOT_ENOUGH_SPACE, code 243, answered over HTTP with status 500.
            raise QueryError(243, "NOT_ENOUGH_SPACE", "Cannot reserve 1.00 MiB, not enough space", 500) from None
        os.rename(tmp, final)


def definition(qualified):
    """The stored definition (metadata/<db>/<table>.sql) of a table or view."""
    database, _, table = qualified.rpartition(".")
    table_path(qualified)
    with open(f"{DATA}/metadata/{database or 'default'}/{table}.sql") as handle:
        return handle.read()


def qualify(name, database):
    return name if "." in name else f"{database}.{name}"


CONSUMERS = {}


def start_consumer(view_definition):
    """The Kafka engine's consumer for a view reading a Kafka table (kafka_engine.py), once per view."""
    if view_definition["name"] in CONSUMERS:
        return
    settings = kafka_engine.kafka_settings(definition(view_definition["source"]))
    target_columns = kafka_engine.columns(definition(view_definition["target"]))
    CONSUMERS[view_definition["name"]] = kafka_engine.Consumer(
        settings, view_definition, target_columns, insert_rows, lambda line: print(line, flush=True),
        lambda brokers: kafka_wire.Client(brokers)).start()
    print(f"<Information> StorageKafka ({view_definition['source']}): consuming {settings['topic']} as group "
          f"{settings['group']} into {view_definition['target']}", flush=True)


def create_view(statement):
    found = kafka_engine.view(statement)
    if found is None:
        raise QueryError(62, "SYNTAX_ERROR", "Syntax error: the ClickHouse stand-in models only `CREATE MATERIALIZED "
                                             "VIEW v TO target AS SELECT columns FROM kafka_table`")
    database = found["name"].rpartition(".")[0] or "default"
    found.update(name=qualify(found["name"], database), target=qualify(found["target"], database),
                 source=qualify(found["source"], database))
    if kafka_engine.kafka_settings(definition(found["source"])) is None:
        raise QueryError(48, "NOT_IMPLEMENTED", f"the stand-in's views read Kafka-engine tables; {found['source']} is not one")
    definition(found["target"])
    metadata = f"{DATA}/metadata/{database}/{found['name'].rpartition('.')[2]}.sql"
    if os.path.exists(metadata):
        if found["if_not_exists"]:
            return ""
        raise QueryError(57, "TABLE_ALREADY_EXISTS", f"Table {found['name']} already exists")
    with open(metadata + ".tmp", "w") as handle:
        handle.write(statement.strip() + "\n")
    os.rename(metadata + ".tmp", metadata)
    start_consumer(found)
    return ""


def start_stored_views():
    """At start, like ClickHouse attaching its tables: every stored view on a Kafka table consumes again."""
    for path in sorted(glob.glob(f"{DATA}/metadata/*/*.sql")):
        with open(path) as handle:
            found = kafka_engine.view(handle.read())
        if found is not None:
            start_consumer(found)


def system_tables():
    """database, name, total_rows of every table that stores rows, ordered, as TSV: the kit's row count
    query (operations/backup/inventory.py). In ClickHouse total_rows is the exact count of a MergeTree
    table and NULL for a table that keeps no rows (a Kafka-engine table): those are left out, as the
    query's `total_rows IS NOT NULL` does."""
    lines = []
    for database in sorted(os.listdir(f"{DATA}/metadata")):
        for metadata in sorted(glob.glob(f"{DATA}/metadata/{database}/*.sql")):
            table = os.path.basename(metadata)[:-len(".sql")]
            path = f"{DATA}/data/{database}/{table}"
            if os.path.isdir(path):
                rows = sum(int(open(f"{path}/{name}/count.txt").read()) for name in parts(path))
                lines.append(f"{database}\t{table}\t{rows}\n")
    return "".join(lines)


def count_where(qualified, clause):
    conditions = select_where.parse(clause)
    if conditions is None:
        raise QueryError(62, "SYNTAX_ERROR", "Syntax error: the ClickHouse stand-in models only `WHERE column = "
                                             "literal [AND ...]`")
    path = table_path(qualified)
    names = [name for name, _ in kafka_engine.columns(definition(qualified))]
    unknown = [column for column, _ in conditions if column not in names]
    if unknown:
        raise QueryError(47, "UNKNOWN_IDENTIFIER", f"Missing columns: '{unknown[0]}' while processing query")
    return sum(1 for name in parts(path) for line in open(f"{path}/{name}/data.tsv").read().splitlines()
               if select_where.matches(names, line, conditions))


def run_query(query, body):
    query = query.strip().rstrip(";").strip()
    if re.fullmatch(r"SELECT 1", query, re.I):
        return "1\n"
    if re.fullmatch(r"SELECT version\(\)", query, re.I):
        return VERSION + "\n"
    match = re.fullmatch(rf"CREATE DATABASE (IF NOT EXISTS )?({NAME})", query, re.I)
    if match:
        path = f"{DATA}/metadata/{match.group(2)}"
        if os.path.isdir(path) and not match.group(1):
            raise QueryError(82, "DATABASE_ALREADY_EXISTS", f"Database {match.group(2)} already exists")
        os.makedirs(path, exist_ok=True)
        os.makedirs(f"{DATA}/data/{match.group(2)}", exist_ok=True)
        return ""
    if re.match(r"CREATE MATERIALIZED VIEW ", query, re.I):
        return create_view(query)
    match = re.fullmatch(rf"CREATE TABLE (IF NOT EXISTS )?((?:{NAME}\.)?{NAME}) (\(.*\) ENGINE = (?:\w*MergeTree|Kafka\s*\().*)",
                         query, re.I | re.S)
    if match:
        database, _, table = match.group(2).rpartition(".")
        database = database or "default"
        if not os.path.isdir(f"{DATA}/metadata/{database}"):
            raise QueryError(81, "UNKNOWN_DATABASE", f"Database {database} doesn't exist", 404)
        metadata = f"{DATA}/metadata/{database}/{table}.sql"
        if os.path.exists(metadata):
            if match.group(1):
                return ""
            raise QueryError(57, "TABLE_ALREADY_EXISTS", f"Table {database}.{table} already exists")
        if kafka_engine.kafka_settings(match.group(3)) is None:  # a Kafka-engine table keeps no data
            os.makedirs(f"{DATA}/data/{database}/{table}", exist_ok=True)
        with open(metadata + ".tmp", "w") as handle:
            handle.write(f"ATTACH TABLE _ {match.group(3)}\n")
        os.rename(metadata + ".tmp", metadata)
        return ""
    match = re.fullmatch(rf"INSERT INTO ((?:{NAME}\.)?{NAME}) FORMAT TSV", query, re.I)
    if match:
        insert_rows(match.group(1), body.decode("utf-8"))
        return ""
    match = re.fullmatch(rf"SELECT count\(\) FROM ((?:{NAME}\.)?{NAME}) WHERE (.+?)( FORMAT TSV)?", query, re.I | re.S)
    if match:
        return f"{count_where(match.group(1), match.group(2))}\n"
    match = re.fullmatch(rf"SELECT count\(\) FROM ((?:{NAME}\.)?{NAME})", query, re.I)
    if match:
        path = table_path(match.group(1))
        return f"{sum(int(open(f'{path}/{name}/count.txt').read()) for name in parts(path))}\n"
    if re.fullmatch(r"SELECT database, name, total_rows FROM system\.tables WHERE .* FORMAT TSV", query, re.I | re.S):
        return system_tables()
    match = re.fullmatch(rf"SELECT \* FROM ((?:{NAME}\.)?{NAME})( ORDER BY \w+)?( FORMAT TSV)?", query, re.I)
    if match:
        path = table_path(match.group(1))
        lines = [line for name in parts(path) for line in open(f"{path}/{name}/data.tsv").read().splitlines()]
        if match.group(2):  # the stand-in orders by the first column (numerically when it holds integers)
            first = [line.split("\t", 1)[0] for line in lines]
            numeric = all(re.fullmatch(r"-?\d+", value) for value in first)
            lines.sort(key=lambda line: int(line.split("\t", 1)[0]) if numeric else line.split("\t", 1)[0])
        return "".join(line + "\n" for line in lines)
    if freeze.TABLES.fullmatch(query):
        return "".join(f"{database}\t{table}\n" for database, table in freeze.mergetree_tables(DATA))
    match = freeze.ALTER.fullmatch(query)
    if match:  # freeze.py: FREEZE / UNFREEZE WITH NAME, as 22.8 does them
        database, table, un, name = match.groups()
        path = table_path(f"{database}.{table}")
        with LOCK:  # no insert renames a part in between: the snapshot is of one moment
            if un:
                freeze.unfreeze(DATA, database, table, name)
                return ""
            try:
                freeze.freeze(DATA, database, table, name, parts(path), freeze.engine_of(definition(f"{database}.{table}")))
            except NotImplementedError as exc:
                raise QueryError(48, "NOT_IMPLEMENTED", str(exc)) from None
        return ""
    raise QueryError(62, "SYNTAX_ERROR", f"Syntax error: the ClickHouse stand-in does not implement {query[:60]!r}")


# Like ClickHouse: the `default` database always exists.
os.makedirs(f"{DATA}/metadata/default", exist_ok=True)
os.makedirs(f"{DATA}/data/default", exist_ok=True)
check_parts()
start_stored_views()


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
        # Like ClickHouse's HTTP interface: the query in ?query= (the body is then INSERT data), else the body.
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        query = parse_qs(urlsplit(self.path).query).get("query", [None])[0]
        if query is None:
            query, body = body.decode("utf-8", "replace"), b""
        if not query.strip():
            query = "SELECT 1"  # the health probes' bare GET
        try:
            return self.reply(200, run_query(query, body))
        except QueryError as exc:
            return self.reply(exc.status, f"{exc}\n")

    do_GET = do_POST = do_HEAD = handle_query


def serve_http(port, context=None):
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def native_session(connection, context):
    """One client of the native port (9000, or <tcp_port_secure> with TLS). The real wire protocol is not
    modelled: the PostHog stand-in's Django client sends one JSON line {user, password, database, query}
    and gets one JSON line back, {"data": ...} or {"error": ...}. What is real: the port, TLS on the
    secure port, and the password check against users.xml (Code 516 on a wrong one)."""
    import json

    try:
        if context is not None:
            connection = context.wrap_socket(connection, server_side=True)
        connection.settimeout(10)
        line = b""
        while not line.endswith(b"\n"):
            chunk = connection.recv(65536)
            if not chunk:
                return
            line += chunk
        try:
            request = json.loads(line)
        except ValueError:
            return  # not our client: hang up, as ClickHouse does on an unexpected packet
        if request.get("user") != "default" or request.get("password") != PASSWORD:
            reply = {"error": f"Code: 516. DB::Exception: {request.get('user')}: Authentication failed: password is "
                              "incorrect, or there is no user with such name. (AUTHENTICATION_FAILED)"}
        else:
            try:
                reply = {"data": run_query(request.get("query") or "SELECT 1", b"")}
            except QueryError as exc:
                reply = {"error": str(exc)}
        connection.sendall(json.dumps(reply).encode() + b"\n")
    except (ssl.SSLError, OSError):
        pass
    finally:
        connection.close()


def serve_tcp(port, context=None):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(32)

    def loop():
        while True:
            connection, _ = listener.accept()
            threading.Thread(target=native_session, args=(connection, context), daemon=True).start()

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
