"""The gates of upgrades.yml: the checks a move between two versions must pass (a required
intermediate version, a required step), matched to the move and run before anything changes. The file
and its schema belong to configuration/upgrades.py; its text is shown here as one terminal line each.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import compose, upgrades
from posthog_compose.configuration.schema import one_line
from posthog_compose.configuration.upgrades import GATES_FILE, Gate
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.upgrade.versions import version_of


def load_gates(root: Path) -> list[Gate]:
    """The gates of upgrades.yml, checked against the file's schema (configuration/upgrades.py)."""
    return upgrades.load(root)


def applicable_gates(gates: list[Gate], current: str, target: str) -> list[Gate]:
    """The gates an upgrade from ``current`` to ``target`` crosses."""
    before, after = version_of(current), version_of(target)
    return [gate for gate in gates if before < gate.version <= after]


# ----------------------------------------------------------------------------- steps before the switch
def check_gates(root: Path, runner: Runner, gates: list[Gate]) -> None:
    """Run each applicable gate's check in its running service; stop with its instructions."""
    for gate in gates:
        print(f"Gate {gate.id}: checking that {one_line(gate.requires)} ...")
        result = runner.run(compose.command(root, "exec", "-T", gate.service, *gate.check), capture=True, check=False,
                            mutating=False, timeout=300)
        if result.returncode != 0:
            output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
            detail = output[-1][:200] if output else f"exit {result.returncode}"
            raise OperatorError(f"upgrade gate {gate.id} not passed ({one_line(detail)}). {one_line(gate.instructions)}")
