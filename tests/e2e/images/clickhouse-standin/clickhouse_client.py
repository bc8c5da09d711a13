#!/usr/bin/env python3
"""clickhouse-client STAND-IN (test only): sends one query to the stand-in server on 127.0.0.1:8123.

Like clickhouse-client 22.3, the credentials come from the environment variables CLICKHOUSE_USER and
CLICKHOUSE_PASSWORD when they are set, and then win over --user/--password (ClickHouse issue #38909,
changed only in 23.4 by PR #48440); so `docker compose exec clickhouse clickhouse-client` needs no
password on its command line. `--query Q` or the query on stdin; with --query, stdin is INSERT data. With
--multiquery (-n) the statements of Q separated by `;` run one after the other, stopping at the first
error; without it a second statement is refused with Code 62 ("Multi-statements are not allowed"), as
the real client does.
Errors go to stderr and the exit code is the ClickHouse error code modulo 256, like the real client."""
import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

parser = argparse.ArgumentParser(prog="clickhouse-client", add_help=False)
parser.add_argument("--query", "-q")
parser.add_argument("--user", "-u", default="default")
parser.add_argument("--password", default="")
parser.add_argument("--host", "-h", default="127.0.0.1")
parser.add_argument("--port", default="9000")
parser.add_argument("--multiquery", "-n", action="store_true")
args = parser.parse_args()
user = os.environ.get("CLICKHOUSE_USER") or args.user
password = os.environ["CLICKHOUSE_PASSWORD"] if "CLICKHOUSE_PASSWORD" in os.environ else args.password
if args.query is None:
    query, data = sys.stdin.read(), b""
else:
    query = args.query
    data = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
statements = [part.strip() for part in query.split(";") if part.strip()] or [query]
if len(statements) > 1 and not args.multiquery:
    sys.stderr.write("Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed). (SYNTAX_ERROR)\n")
    sys.exit(62)
try:
    for statement in statements:
        request = urllib.request.Request(f"http://{args.host}:8123/?query={urllib.parse.quote(statement)}",
                                         data=data, method="POST",
                                         headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password})
        with urllib.request.urlopen(request, timeout=60) as response:
            sys.stdout.write(response.read().decode())
except urllib.error.HTTPError as exc:
    message = exc.read().decode().strip()
    sys.stderr.write(f"Received exception from server (version 22.3):\n{message}\n")
    try:
        code = int(message.split(".")[0].split()[1])
    except (IndexError, ValueError):
        code = 1
    sys.exit(code % 256 or 1)
except OSError as exc:
    sys.stderr.write(f"Code: 210. DB::NetException: Connection refused ({args.host}:{args.port}). ({exc})\n")
    sys.exit(210)
