"""Image references as versions: --to checked against the current reference (`latest` refused
unless allowed), the version a tag stands for (commit-SHA tags and digests after every numbered release),
and the PostgreSQL major version of an image.
"""

from __future__ import annotations

import re

from posthog_compose.configuration import images
from posthog_compose.errors import OperatorError


#: Read as "newer than every numbered release": commit-SHA tags and digests came after 1.43.x.
AFTER_NUMBERED_RELEASES = (1, 43, 10 ** 6)


# ----------------------------------------------------------------------------- tags and plan
def target_reference(current: str, to: str | None, service: str, allow_latest: bool) -> str:
    """The new image reference for ``--to`` (a tag or a digest), validated before anything runs."""
    if not to:
        raise OperatorError("--to is required, e.g. `invoke upgrade --to release-1.43.0` (or --history)")
    ref = images.parse(current)
    value = to.strip()
    if ("/" in value or (":" in value and not value.startswith("sha256:"))) and _parses(value):
        raise OperatorError(f"--to takes a tag or a digest, not an image reference ({value!r}); the repository "
                            f"stays {ref.repository} (change it in .env if you really mean another one)")
    if service == "posthog":
        kind = images.posthog_tag_kind(value, allow_latest=allow_latest, last_release=last_numbered_release())
    elif value.startswith("sha256:"):
        kind = "digest"
    elif value in images.MOVING_TAGS and not allow_latest:
        raise OperatorError(f"--to {value!r} is a moving tag: the deployment could change version on the next pull; "
                            "pin an exact version or a digest (or pass --allow-latest)")
    else:
        kind = "tag"
    new = ref.with_digest(value) if kind == "digest" else ref.with_tag(value)
    return str(new)


def last_numbered_release() -> tuple[int, int, int]:
    """PostHog's last `release-X.Y.Z` tag: what compatibility.yml's `latest-release` alias is frozen at
    (no release tag exists past it, so none is suggested)."""
    from posthog_compose.configuration import compatibility

    try:
        found = tuple(int(part) for part in compatibility.load().aliases.get("latest-release", "").split("."))
    except (OperatorError, ValueError, AttributeError):
        return images.LAST_NUMBERED_RELEASE
    return found if len(found) == 3 else images.LAST_NUMBERED_RELEASE  # type: ignore[return-value]


def _parses(reference: str) -> bool:
    try:
        images.parse(reference)
    except OperatorError:
        return False
    return True


def version_of(reference: str) -> tuple[int, int, int]:
    """The PostHog version a reference stands for, for the gates (see upgrades.yml)."""
    ref = images.parse(reference)
    return images.release_version(ref.tag) or AFTER_NUMBERED_RELEASES


def postgres_major(reference: str) -> str | None:
    """'15' for postgres:15.12-alpine; None when the tag does not say (a digest, latest)."""
    tag = images.parse(reference).tag or ""
    match = re.match(r"^(\d+)", tag)
    return match.group(1) if match else None
