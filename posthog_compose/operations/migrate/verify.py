"""Step 4: prove the copy: tables, row counts and sequence values on both sides, md5 checksums of
every table up to CHECKSUM_MAX_ROWS rows.
"""

from __future__ import annotations

from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.request import Result
from posthog_compose.operations.migrate.servers import (
    CHECKSUM_MAX_ROWS,
    SEQUENCES_SQL,
    Servers,
    TABLES_SQL,
    checksum_sql,
    count_sql,
)


def verify(servers: Servers, result: Result, out) -> None:
    """Both sides hold the same tables, row counts and sequence values, and the same rows in every table up to
    CHECKSUM_MAX_ROWS rows. Raises one line naming the first differences."""
    print("Verifying the copy (row counts, sequences, checksums) ...", file=out, flush=True)
    tables = {side: [row["table"] for row in servers.sql(side, TABLES_SQL)] for side in ("local", "target")}
    missing = sorted(set(tables["local"]) - set(tables["target"]))
    extra = sorted(set(tables["target"]) - set(tables["local"]))
    if missing or extra:
        raise OperatorError(f"verification failed: tables missing on the target ({', '.join(missing[:5]) or 'none'})"
                            f" or only there ({', '.join(extra[:5]) or 'none'})")
    names = tables["local"]
    counts = {side: {row["table"]: int(row["rows"]) for row in servers.sql(side, count_sql(names), timeout=3600)}
              for side in ("local", "target")}
    differ = [f"{t} {counts['local'].get(t)} vs {counts['target'].get(t)}" for t in names
              if counts["local"].get(t) != counts["target"].get(t)]
    if differ:
        raise OperatorError(f"verification failed: row counts differ ({'; '.join(differ[:5])})")
    sequences = {side: {row["sequence"]: row["last"] for row in servers.sql(side, SEQUENCES_SQL)}
                 for side in ("local", "target")}
    if sequences["local"] != sequences["target"]:
        wrong = sorted(k for k in set(sequences["local"]) | set(sequences["target"])
                       if sequences["local"].get(k) != sequences["target"].get(k))
        raise OperatorError(f"verification failed: sequence values differ ({', '.join(wrong[:5])})")
    small = [t for t in names if counts["local"][t] <= CHECKSUM_MAX_ROWS]
    if small:
        sums = {side: {row["table"]: row["md5"] for row in servers.sql(side, checksum_sql(small), timeout=3600)}
                for side in ("local", "target")}
        differ = [t for t in small if sums["local"].get(t) != sums["target"].get(t) or not sums["local"].get(t)]
        if differ:
            raise OperatorError(f"verification failed: the rows of {', '.join(differ[:5])} differ (md5)")
    result.tables, result.rows = len(names), sum(counts["local"].values())
    result.checksummed, result.sequences = len(small), len(sequences["local"])
    print(f"Verified: {result.tables} tables, {result.rows:,} rows, {result.sequences} sequences; "
          f"{result.checksummed} of them compared row by row (md5).", file=out, flush=True)
