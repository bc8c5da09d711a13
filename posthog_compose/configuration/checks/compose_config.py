"""The real `docker compose config`, run in the background while the Python rules run, and
its verdict turned into findings with every secret's value masked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.findings import COMPOSE, _Report


# ----------------------------------------------------------------------------- Compose itself
def _start_compose(root: Path, report: _Report):
    from posthog_compose.configuration import compose

    try:
        return compose.start_config_check(root)
    except OperatorError as exc:
        report.error("compose-missing", COMPOSE, None, "", str(exc).rstrip("."), "install Docker Compose v2, then rerun")
        return None


def _finish_compose(process, root: Path, report: _Report, secrets: list[str], quiet: bool = False):
    """Compose's verdict as findings; returns its model of the deployment (None when it failed).
    With ``quiet`` (no usable .env: one error says so already), Compose's complaints about unset
    variables are left out."""
    if process is None:
        return None
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        report.error("compose", COMPOSE, None, "", "`docker compose config` did not answer within 60 s",
                     "run it by hand to see why")
        return None
    if process.returncode == 0:
        return process.model
    if quiet:
        return None
    seen = set()
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line in seen:
            continue
        seen.add(line)
        for secret in secrets:
            line = line.replace(secret, "***")
        report.error("compose", COMPOSE, None, "", f"docker compose config: {line}",
                     "see the message; `invoke init` fills in missing variables")
    return None


def _secret_values(manifest, values) -> list[str]:
    if manifest is None or not values:
        return []
    found = [values[v.name] for v in manifest.secrets if values.get(v.name)]
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)
