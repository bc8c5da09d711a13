"""The data files an operator edits besides .env: compatibility.yml (the PostHog contract) and
upgrades.yml (the upgrade gates), each judged against its schema, so that a mistake shows at
config-check (and so before `invoke up`) rather than in the middle of an upgrade.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.findings import _Report
from posthog_compose.configuration.schema import SchemaError


def _check_data_files(root: Path, report: _Report) -> None:
    from posthog_compose.configuration import compatibility, upgrades

    for name, load in ((compatibility.COMPATIBILITY_FILE, compatibility.load), (upgrades.GATES_FILE, upgrades.load)):
        try:
            load(root)
        except SchemaError as exc:
            report.error("data-file", exc.file, None, exc.path, exc.problem, exc.fix)
        except OperatorError as exc:
            message, _, fix = str(exc).removeprefix(name).lstrip(":").strip().partition("; ")
            report.error("data-file", name, None, "", message, fix or f"restore it: git checkout -- {name}")
