"""Whether an upgrade of PostHog may run as a surge (the new web starts and migrates while the old web
keeps serving) or must switch web in place: the rule and its data (upgrades.yml) live here.
"""

from __future__ import annotations

from pathlib import Path


def surge_refusal(root: Path, current: str, target: str) -> str | None:
    """None when an upgrade from image ``current`` to image ``target`` may surge; else one line saying
    why web must be switched in place."""
    return None
