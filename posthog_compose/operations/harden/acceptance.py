"""The operator's explicit acceptances of a checklist item that fails on purpose (`invoke harden --accept
NAME --reason TEXT`), kept in .deploy/harden-accepted.json with the reason and the date, and the item that
uses one: app-private (the app answers only ALLOWED_IP_BLOCKS, or its being public was accepted).

An acceptance is a recorded decision, not a default: nothing else writes it, `--check` shows its reason,
and `--accept NAME --withdraw` removes it. Ingestion stays public either way (PostHog's public endpoints).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write

ACCEPT_FILE = ".deploy/harden-accepted.json"
#: what may be accepted -> the checklist item it makes pass
ACCEPTABLE = {"app-public": "app-private"}
MAX_REASON = 300


def read(root: Path) -> dict[str, dict[str, str]]:
    """The recorded acceptances (name -> {"reason", "at"}); a missing or unreadable file holds none."""
    try:
        data = json.loads((Path(root) / ACCEPT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {name: entry for name, entry in data.items()
            if name in ACCEPTABLE and isinstance(entry, dict) and isinstance(entry.get("reason"), str)
            and entry["reason"].strip()}


def _reason_problem(reason: str | None) -> str | None:
    from posthog_compose.configuration.formats import text_problem

    if reason is None or not reason.strip():
        return "--reason is missing: say why, e.g. --reason \"the team works from changing addresses\""
    if len(reason) > MAX_REASON:
        return f"--reason is {len(reason)} characters; keep it under {MAX_REASON}"
    trouble = text_problem(reason)
    if trouble or "\n" in reason:
        return "--reason must be one line of plain text"
    return None


def record(root: Path, name: str, reason: str | None, withdraw: bool = False) -> str:
    """Record (or with ``withdraw`` remove) an acceptance; returns the line to print. Holds the
    deployment lock: it edits the deployment's state like any other task."""
    from posthog_compose import journal

    if name not in ACCEPTABLE:
        raise OperatorError(f"--accept {name!r} is not something harden accepts; choose one of: "
                            + ", ".join(sorted(ACCEPTABLE)))
    if not withdraw:
        problem = _reason_problem(reason)
        if problem:
            raise OperatorError(f"{problem} (nothing was recorded)")
    root = Path(root)
    with journal.deployment_lock(root, "harden"):
        accepted = read(root)
        if withdraw:
            if accepted.pop(name, None) is None:
                return f"{name} was not accepted; nothing changed."
            message = f"Withdrawn: {name}. `invoke harden --check` judges {ACCEPTABLE[name]} again."
        else:
            accepted[name] = {"reason": reason.strip(), "at": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
            message = (f"Accepted: {name} ({accepted[name]['reason']}). `invoke harden --check` passes "
                       f"{ACCEPTABLE[name]} with this reason; withdraw it with `invoke harden --accept {name} --withdraw`.")
        (root / ACCEPT_FILE).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(root / ACCEPT_FILE, json.dumps(accepted, indent=2, sort_keys=True) + "\n", mode=0o600)
    return message


def app_private(state) -> tuple[str, str, str]:
    """The app-private item: pass with an allow-list that is not 0.0.0.0/0 and that config-check does not
    refuse, or with the recorded acceptance of app-public; else fail."""
    from posthog_compose.configuration import access

    refused = [f for f in state.findings if f.severity == "error"
               and (f.rule == access.RULE or (f.subject == access.NAME and f.rule == "format"))]
    if refused:
        return "fail", f"config-check refuses the allow-list: {refused[0].message}", refused[0].fix
    if access.is_private(state.values):
        return ("pass", f"only {state.values.get(access.NAME, '').strip()} reach the app; ingestion and the public "
                        "endpoints answer everyone", "")
    accepted = read(state.root).get("app-public")
    if accepted:
        return "pass", f"public by decision ({accepted.get('at', '?')}): {accepted['reason']}", ""
    return ("fail", "ALLOWED_IP_BLOCKS is empty (or 0.0.0.0/0): the login page, admin and API answer the whole "
                    "internet on a 2023 release whose Django no longer gets security fixes",
            "set ALLOWED_IP_BLOCKS to your networks and run `invoke up`, or accept it: "
            "`invoke harden --accept app-public --reason \"...\"`")
