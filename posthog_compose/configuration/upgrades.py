"""upgrades.yml, the upgrade gates an operator may edit: its schema and loading. What a gate is and when
it applies is said in the file's own header; `invoke upgrade` runs the gates (operations/upgrade/gates.py),
config-check judges the file before anything starts. A missing, empty or malformed file is an error,
never "no gates": the gates stand between an upgrade and PostHog's half-finished async migrations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from posthog_compose.errors import OperatorError

GATES_FILE = "upgrades.yml"
HINT = "the handbook's Upgrading page, section Upgrade gates, describes the file"
_VERSION_RE = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}")
# An argument is handed to `docker compose exec` as is: no NUL (the kernel refuses it) and no other
# control character (nothing a PostHog command takes).
_ARGUMENT_RE = re.compile(r"[^\x00-\x1f\x7f]+")


@dataclass
class Gate:
    id: str
    version: tuple[int, int, int]
    service: str
    check: list[str]
    requires: str
    instructions: str


def _schema():
    from posthog_compose.configuration import schema as s

    gate = s.Fields(
        required={
            "id": s.pattern(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", "an id of letters, digits, . _ - such as "
                                                              "async-migrations-before-1.33"),
            "version": s.Text("a version like 1.43.0", _VERSION_RE.fullmatch),
            "check": s.ListOf(s.Text("a command argument (text without control characters)", _ARGUMENT_RE.fullmatch),
                              min_items=1, expected="a command as a list of arguments, e.g. [python, manage.py, "
                                                    "run_async_migrations, --check]"),
            "requires": s.Text(),
            "instructions": s.Text(),
        },
        optional={"service": s.pattern(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", "a Compose service name such as web")})
    # `gates: []` says "no gates" on purpose; an empty file or a bare `gates:` does not.
    return s.Fields(required={"gates": s.ListOf(gate, unique="id", expected="a list of gates")})


def check(data, path: Path) -> None:
    """Raise a one-line SchemaError unless ``data`` (the parsed file) is what upgrades.yml must hold."""
    from posthog_compose.configuration import schema

    schema.check(_schema(), data, Path(path).name, HINT)


def load(root: Path) -> list[Gate]:
    """The gates of the deployment at ``root``, checked against the file's schema before any is used."""
    from posthog_compose.configuration.manifest import load_yaml

    path = Path(root) / GATES_FILE
    if not path.exists():
        raise OperatorError(f"{GATES_FILE} is missing (without it no upgrade gate is checked); restore it: "
                            f"git checkout -- {GATES_FILE}")
    data = load_yaml(path)
    check(data, path)
    return [Gate(raw["id"], tuple(int(part) for part in raw["version"].split(".")), raw.get("service", "web"),
                 list(raw["check"]), raw["requires"], raw["instructions"].strip())
            for raw in data["gates"]]
