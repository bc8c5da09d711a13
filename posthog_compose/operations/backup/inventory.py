"""The row count of every table, in PostgreSQL and in ClickHouse: taken by `invoke backup` into the
manifest's "tables" (just before the data is copied) and again by the restore drill on what it
restored, which then compares the two (drill.py). Counting never fails a backup: a server that cannot
answer gives None, recorded as "not counted".
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner

#: Every ordinary or partitioned table outside the system schemas, with its exact row count (one
#: statement: query_to_xml runs a count per table inside the same transaction).
POSTGRES_COUNTS = (
    "SELECT n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
    "AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1")
#: Every table that stores rows (total_rows is NULL for views, Kafka-engine tables and the like).
CLICKHOUSE_COUNTS = (
    "SELECT database, name, total_rows FROM system.tables WHERE database NOT IN "
    "('system', 'INFORMATION_SCHEMA', 'information_schema') AND NOT is_temporary AND total_rows IS NOT NULL "
    "ORDER BY database, name FORMAT TSV")
MAX_TABLES = 4096


def parse_counts(text: str) -> dict[str, int] | None:
    """Tab-separated lines whose last field is a row count, as {the other fields joined by ".": rows}
    ("public.posthog_team" from psql, "posthog.events" from ClickHouse's database and name); None when
    a line is not one, or when there are more than MAX_TABLES."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        *name, rows = line.split("\t")
        if not name or not rows.isascii() or not rows.isdigit():
            return None
        counts[".".join(name)] = int(rows)
    return counts if len(counts) <= MAX_TABLES else None


def postgres_counts(root: Path, runner: Runner, values: dict[str, str]) -> dict[str, int] | None:
    command = compose.command(root, "exec", "-T", "db", "psql", "-X", "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-U", values.get("POSTGRES_USER", "posthog"), "-d", values.get("POSTGRES_DB", "posthog"),
                              "-c", POSTGRES_COUNTS)
    result = runner.run(command, capture=True, check=False, mutating=False, timeout=600)
    return parse_counts(result.stdout or "") if result.returncode == 0 else None


def clickhouse_counts(root: Path, runner: Runner) -> dict[str, int] | None:
    command = compose.command(root, "exec", "-T", "clickhouse", "clickhouse-client", "--query", CLICKHOUSE_COUNTS)
    result = runner.run(command, capture=True, check=False, mutating=False, timeout=300)
    return parse_counts(result.stdout or "") if result.returncode == 0 else None
