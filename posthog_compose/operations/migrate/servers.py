"""Talking to both PostgreSQL servers through `db`: psql against the local database or the target
(its settings only in the child's environment), the inspection and verification SQL, and waiting for a long
client with a progress line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import time
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.target import FROM_ENVIRONMENT, Target


#: Tables with at most this many rows are compared row by row (md5 over the ordered row hashes).
CHECKSUM_MAX_ROWS = 200_000

#: Session settings that make a row's text form the same on both servers (for the checksums).
STABLE_TEXT = ("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET extra_float_digits = 3; "
               "SET bytea_output = 'hex'; SET IntervalStyle = 'postgres';\n")


# ----------------------------------------------------------------------------- talking to the servers
class Servers:
    """psql, pg_dump and pg_restore inside `db`: against the local database (the socket, as its owner) or
    the target (its settings only in the child's environment, named with `exec -e NAME`)."""

    def __init__(self, root: Path, runner: Runner, values: dict[str, str], target: Target):
        self.root, self.runner, self.target = Path(root), runner, target
        self.user = values.get("POSTGRES_USER", "posthog")
        self.database = values.get("POSTGRES_DB", "posthog")
        base = dict(runner.env if runner.env is not None else os.environ)
        self.target_runner = dataclasses.replace(runner, env={**base, **target.environment()})

    def local_command(self, program: str, *args: str) -> list[str]:
        return compose.command(self.root, "exec", "-T", "db", program, "-U", self.user, "-d", self.database, *args)

    def target_command(self, program: str, *args: str) -> list[str]:
        names = [item for name in self.target.environment() for item in ("-e", name)]
        return compose.command(self.root, "exec", "-T", *names, "db", program, f"--dbname={FROM_ENVIRONMENT}", *args)

    def sql(self, side: str, script: str, timeout: float = 600) -> list[dict]:
        """Run ``script`` (each result row one JSON object) on ``side`` ("local" or "target")."""
        args = ("-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1")
        if side == "local":
            command, runner = self.local_command("psql", *args), self.runner
        else:
            command, runner = self.target_command("psql", *args), self.target_runner
        result = runner.run(command, capture=True, check=False, input=script, mutating=False, timeout=timeout)
        if result.returncode != 0:
            raise OperatorError(f"{self.describe(side)}: {psql_error(result.stderr, result.returncode)}")
        rows = []
        for line in (result.stdout or "").splitlines():
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
        return rows

    def describe(self, side: str) -> str:
        return "the local PostgreSQL (db)" if side == "local" else f"the target PostgreSQL ({self.target.where})"


def psql_error(stderr: str | None, code: int) -> str:
    """The useful line of a psql/pg_restore failure (libpq puts the reason after 'FATAL:' or 'error:')."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        for marker in ("FATAL:", "error:", "ERROR:"):
            if marker in line:
                return line.split(marker, 1)[1].strip()[:300]
    return lines[-1][:300] if lines else f"exit {code}"


INSPECT_SQL = (
    "SELECT json_build_object("
    "'version', current_setting('server_version_num')::int, "
    "'size', pg_database_size(current_database()), "
    "'user', current_user, "
    "'create', has_schema_privilege('public', 'CREATE'), "
    "'encoding', current_setting('server_encoding'), "
    "'extensions', (SELECT coalesce(json_agg(extname ORDER BY extname), '[]') FROM pg_extension "
    "  WHERE extname <> 'plpgsql'), "
    "'available', (SELECT coalesce(json_agg(name ORDER BY name), '[]') FROM pg_available_extensions), "
    "'relations', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'), "
    "'examples', (SELECT string_agg(name, ', ') FROM (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
    "  AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "  ORDER BY 1 LIMIT 3) AS first));\n")

TABLES_SQL = (
    "SELECT json_build_object('table', name) FROM (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
    "AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND n.nspname NOT LIKE 'pg\\_temp%') AS found ORDER BY name COLLATE \"C\";\n")

SEQUENCES_SQL = (
    "SELECT json_build_object('sequence', name, 'last', last_value) FROM (SELECT quote_ident(schemaname) || '.' "
    "|| quote_ident(sequencename) AS name, last_value FROM pg_sequences) AS found ORDER BY name COLLATE \"C\";\n")


#: A literal is written with doubled quotes only: that is a literal's whole grammar once
#: standard_conforming_strings is on (a server configured with it off would read a backslash as an escape).
LITERALS_AS_WRITTEN = "SET standard_conforming_strings = on;\n"
#: schema.table as the server's quote_ident() writes it: a lower-case word, or a double-quoted name with
#: every double quote doubled. The verification SQL names the tables the server listed; a name of any other
#: shape (a server that does not answer as PostgreSQL does) is refused rather than run as SQL.
_QUOTED_PART = r'(?:[a-z_][a-z0-9_]*|"(?:[^"\x00]|"")+")'
QUOTED_NAME_RE = re.compile(rf"{_QUOTED_PART}\.{_QUOTED_PART}")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _quoted_names(tables: list[str]) -> list[str]:
    for table in tables:
        if not QUOTED_NAME_RE.fullmatch(table):
            raise OperatorError(f"the server listed a table as {table[:80]!r}, which is not a name as PostgreSQL's "
                                "quote_ident writes it; nothing was verified. Check the server, then run the "
                                "migration again")
    return tables


def count_sql(tables: list[str]) -> str:
    """One row count per table; ``tables`` are quoted identifiers (schema.table) from the server."""
    return LITERALS_AS_WRITTEN + "".join(
        f"SELECT json_build_object('table', {_literal(t)}, 'rows', (SELECT count(*) FROM {t}));\n"
        for t in _quoted_names(tables))


def checksum_sql(tables: list[str]) -> str:
    """An md5 per table over the md5 of every row's text, in a collation-free order (the same on any server)."""
    tables = _quoted_names(tables)
    return LITERALS_AS_WRITTEN + STABLE_TEXT + "".join(
        f"SELECT json_build_object('table', {_literal(t)}, 'md5', (SELECT md5(coalesce(string_agg(h, '' ORDER BY h "
        f"COLLATE \"C\"), '')) FROM (SELECT md5(r::text) AS h FROM {t} AS r) AS rows));\n" for t in tables)


def version_tuple(number: int) -> tuple[int, int, int]:
    """server_version_num -> (major, minor, 0): 130022 -> (13, 22, 0); 90624 -> (9, 6, 24)."""
    if number >= 100000:
        return (number // 10000, number % 10000, 0)
    return (number // 10000, number // 100 % 100, number % 100)


def _wait_with_progress(process: subprocess.Popen, grows: Path | None, what: str, out) -> tuple[bytes, bytes]:
    """Wait for ``process``, printing a line every PROGRESS_SECONDS (the size of ``grows`` when given)."""
    import threading

    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read() if process.stderr else b""),
                              daemon=True)
    reader.start()
    began = time.monotonic()
    try:
        while True:
            try:
                process.wait(timeout=PROGRESS_SECONDS)
                break
            except subprocess.TimeoutExpired:
                size = f" ({grows.stat().st_size / 1024 ** 2:,.1f} MiB)" if grows and grows.exists() else ""
                print(f"  ... {what}{size}, {time.monotonic() - began:.0f} s", file=out, flush=True)
    except BaseException:
        process.kill()
        process.wait()
        raise
    reader.join(timeout=10)
    return b"", b"".join(errors)


PROGRESS_SECONDS = 10.0
