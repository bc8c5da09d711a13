"""The probe's last hop: is the event's row in ClickHouse's events table? Asked with clickhouse-client in the
clickhouse container (the password read there from its environment, never on this host's command line),
filtered on the table's sort key (team_id, event) and the probe's distinct_id.
"""

from __future__ import annotations

import re
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.operations.ingestion.path import EVENTS_TABLE, PROBE_EVENT

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: What the probe puts in a query as a literal: its own distinct_id and event name, nothing from outside.
SAFE_LITERAL = re.compile(r"[A-Za-z0-9 _-]+")


def table(values: dict[str, str]) -> str:
    database = values.get("CLICKHOUSE_DATABASE") or "posthog"
    if not IDENTIFIER.fullmatch(database):
        raise OperatorError(f"CLICKHOUSE_DATABASE in .env is not a plain name ({database[:40]!r}): the probe cannot "
                            "ask for its events table; `invoke config-check` says more")
    return f"{database}.{EVENTS_TABLE}"


def query(values: dict[str, str], team_id: int | None, distinct_id: str) -> str:
    if not SAFE_LITERAL.fullmatch(distinct_id) or not SAFE_LITERAL.fullmatch(PROBE_EVENT):
        raise ValueError("the probe's own literals are letters, digits, spaces, _ and -")
    team = f"team_id = {int(team_id)} AND " if team_id is not None else ""
    return f"SELECT count() FROM {table(values)} WHERE {team}event = '{PROBE_EVENT}' AND distinct_id = '{distinct_id}'"


def command(root: Path, sql: str) -> list[str]:
    # An argument, never a shell script; clickhouse-client reads CLICKHOUSE_PASSWORD from the container's
    # environment itself (as backup's and the write probe's queries do).
    return compose.command(root, "exec", "-T", "clickhouse", "clickhouse-client", "--query", sql)


def count(root: Path, runner, values: dict[str, str], team_id: int | None, distinct_id: str,
          timeout: float = 30.0) -> int:
    """How many rows of the probe's event are stored; OperatorError when ClickHouse cannot be asked."""
    result = runner.run(command(root, query(values, team_id, distinct_id)), capture=True, check=False,
                        mutating=False, timeout=max(1.0, timeout))
    answer = (result.stdout or "").strip()
    if result.returncode != 0 or not answer.isdigit():
        detail = " ".join((result.stderr or result.stdout or "").strip().splitlines()[-1:])[:200]
        raise OperatorError(f"ClickHouse could not be asked for the row (clickhouse-client in the clickhouse "
                            f"container exited {result.returncode}{': ' + detail if detail else ''})")
    return int(answer)
