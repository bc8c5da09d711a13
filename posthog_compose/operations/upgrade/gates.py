"""The gates of upgrades.yml: the checks a move between two versions must pass (a required
intermediate version, a required step), loaded, matched to the move, and run before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.upgrade.versions import version_of


GATES_FILE = "upgrades.yml"


@dataclass
class Gate:
    id: str
    version: tuple[int, int, int]
    service: str
    check: list[str]
    requires: str
    instructions: str


def load_gates(root: Path) -> list[Gate]:
    from posthog_compose.configuration.manifest import load_yaml

    path = Path(root) / GATES_FILE
    if not path.exists():
        return []
    data = load_yaml(path) or {}
    gates = []
    for index, raw in enumerate(data.get("gates") or []):
        try:
            major, minor, patch = (int(part) for part in str(raw["version"]).split("."))
            check = raw["check"]
            if not isinstance(check, list) or not all(isinstance(arg, str) for arg in check) or not check:
                raise ValueError("check must be a list of arguments")
            gates.append(Gate(str(raw["id"]), (major, minor, patch), str(raw.get("service", "web")), check,
                              str(raw.get("requires", "")), str(raw.get("instructions", "")).strip()))
        except (KeyError, TypeError, ValueError) as exc:
            raise OperatorError(f"{GATES_FILE}: gate {index + 1} is malformed ({exc}); it needs id, version X.Y.Z, "
                                "service and a check argument list")
    return gates


def applicable_gates(gates: list[Gate], current: str, target: str) -> list[Gate]:
    """The gates an upgrade from ``current`` to ``target`` crosses."""
    before, after = version_of(current), version_of(target)
    return [gate for gate in gates if before < gate.version <= after]


# ----------------------------------------------------------------------------- steps before the switch
def check_gates(root: Path, runner: Runner, gates: list[Gate]) -> None:
    """Run each applicable gate's check in its running service; stop with its instructions."""
    for gate in gates:
        print(f"Gate {gate.id}: checking that {gate.requires} ...")
        result = runner.run(compose.command(root, "exec", "-T", gate.service, *gate.check), capture=True, check=False,
                            mutating=False, timeout=300)
        if result.returncode != 0:
            output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
            detail = output[-1][:200] if output else f"exit {result.returncode}"
            raise OperatorError(f"upgrade gate {gate.id} not passed ({detail}). {gate.instructions}")
