"""upgrades.yml, what the kit knows about moving PostHog between two versions, which an operator may
edit: its schema and loading. It holds the upgrade gates (what a gate is and when it applies is said in
the file's own header; `invoke upgrade` runs them, operations/upgrade/gates.py) and the surge reviews
(which moves may start the new web beside the old one; operations/upgrade/surge_gate.py decides).
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


#: A surge review's verdict: `allowed` (the previous release's code works on the migrated schema) or
#: `refused` (it does not: web is switched in place).
SURGE_VERDICTS = ("allowed", "refused")
#: What a review found between the two tags (optional): `none` (no migration of any kind: PostgreSQL,
#: ClickHouse, async) or `some`. Only reviewed moves with `none` chain into a jump over several releases.
MIGRATION_FINDINGS = ("none", "some")


@dataclass
class Gate:
    id: str
    version: tuple[int, int, int]
    service: str
    check: list[str]
    requires: str
    instructions: str


@dataclass(frozen=True)
class SurgeReview:
    """One move between two releases, reviewed for running the target's migrations while the current
    release's web keeps serving."""

    from_version: tuple[int, int, int]
    to_version: tuple[int, int, int]
    surge: str
    reason: str
    sources: tuple[str, ...]
    migrations: str = ""  # "none", "some", or "" when the review does not say

    @property
    def schema_unchanged(self) -> bool:
        """Allowed, and no migration of any kind between the two tags: the schema is the same on both."""
        return self.surge == "allowed" and self.migrations == "none"


def _version(text: str) -> tuple[int, int, int]:
    return tuple(int(part) for part in text.split("."))  # type: ignore[return-value]


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _schema():
    from posthog_compose.configuration import schema as s

    version = s.Text("a version like 1.43.0", _VERSION_RE.fullmatch)
    review = s.Fields(required={
        "from": version,
        "to": version,
        "surge": s.Choice(SURGE_VERDICTS),
        "reason": s.Text(),
        "sources": s.ListOf(s.Text("a source (text)"), min_items=1,
                            expected="a list of sources (a file and line at a PostHog tag, a PR, a page)"),
    }, optional={"migrations": s.Choice(MIGRATION_FINDINGS)})

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
    # Without `surge` no move is reviewed, so every upgrade switches web in place: the safe default.
    return s.Fields(required={"gates": s.ListOf(gate, unique="id", expected="a list of gates")},
                    optional={"surge": s.ListOf(review, expected="a list of reviewed moves")})


def _check_reviews(data, file: str) -> None:
    """What the structure alone cannot say: a review goes up, says each move once, and allows no surge
    across a gate (such a release reworks PostHog's ClickHouse schema and is switched in place)."""
    from posthog_compose.configuration.schema import SchemaError

    gates = [(gate["id"], _version(gate["version"])) for gate in data["gates"]]
    seen: dict[tuple, int] = {}
    for index, raw in enumerate(data.get("surge") or []):
        where, before, after = f"surge[{index}]", _version(raw["from"]), _version(raw["to"])
        move = f"{_shown(before)} -> {_shown(after)}"
        if before >= after:
            raise SchemaError(file, where, f"`from` {_shown(before)} is not below `to` {_shown(after)}",
                              "a review is of an upgrade: correct the versions or remove the entry")
        if (before, after) in seen:
            raise SchemaError(file, where, f"{move} repeats surge[{seen[before, after]}]",
                              "keep one review per move")
        seen[before, after] = index
        crossed = [gate_id for gate_id, version in gates if before < version <= after]
        if raw["surge"] == "allowed" and crossed:
            raise SchemaError(file, f"{where}.surge", f"allows a surge across the upgrade gate {crossed[0]}",
                              "a move across a gate switches web in place: set `surge: refused` or remove the entry")


def check(data, path: Path) -> None:
    """Raise a one-line SchemaError unless ``data`` (the parsed file) is what upgrades.yml must hold."""
    from posthog_compose.configuration import schema

    schema.check(_schema(), data, Path(path).name, HINT)
    _check_reviews(data, Path(path).name)


def _load_checked(root: Path):
    from posthog_compose.configuration.manifest import load_yaml

    path = Path(root) / GATES_FILE
    if not path.exists():
        raise OperatorError(f"{GATES_FILE} is missing (without it no upgrade gate is checked); restore it: "
                            f"git checkout -- {GATES_FILE}")
    data = load_yaml(path)
    check(data, path)
    return data


def load(root: Path) -> list[Gate]:
    """The gates of the deployment at ``root``, checked against the file's schema before any is used."""
    data = _load_checked(root)
    return [Gate(raw["id"], tuple(int(part) for part in raw["version"].split(".")), raw.get("service", "web"),
                 list(raw["check"]), raw["requires"], raw["instructions"].strip())
            for raw in data["gates"]]


def load_surge_reviews(root: Path) -> list[SurgeReview]:
    """The surge reviews of the deployment at ``root`` (none when the file has no `surge`), the whole
    file checked first."""
    data = _load_checked(root)
    return [SurgeReview(_version(raw["from"]), _version(raw["to"]), raw["surge"], raw["reason"].strip(),
                        tuple(raw["sources"]), raw.get("migrations", ""))
            for raw in data.get("surge") or []]
