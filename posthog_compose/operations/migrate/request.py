"""What the operator asked of `migrate-datastore` (Request) and what happened (Result, also the
--json output).
"""

from __future__ import annotations

from dataclasses import dataclass, field


# ----------------------------------------------------------------------------- the run
@dataclass
class Request:
    datastore: str
    to: str | None = None
    to_file: str | None = None
    yes: bool = False
    timeout: float = 600.0
    as_json: bool = False


@dataclass
class Result:
    result: str = "refused"
    target: str = ""
    tables: int = 0
    rows: int = 0
    checksummed: int = 0
    sequences: int = 0
    dump: str | None = None
    volume: str = ""
    seconds: float = 0.0
    outage_seconds: float | None = None
    problems: list[str] = field(default_factory=list)
    message: str = ""
