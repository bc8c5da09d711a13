"""Whether an upgrade of PostHog may run as a surge (the new web starts and runs PostHog's migrations
while the old web keeps serving) or must switch web in place. Owns the rule; its data are the surge
reviews of upgrades.yml (configuration/upgrades.py).

The rule, most certain first: a datastore never surges; the same release on both sides surges (nothing
migrates); a side that is not a numbered release (a commit-SHA tag, a digest the kit did not pin, a moving
tag) does not, as the kit cannot tell which migrations it brings; nor a downgrade, except the way back over
a reviewed and allowed move (the rollback pairs the same two releases as that move's own surge); nor a
move across an upgrade gate; any other move surges only when upgrades.yml reviewed exactly that move
and allowed it, or when it is a jump over reviewed moves that each bring no migration of any kind (the
schema is then the same at both ends, as for one such move), either way.
PostHog checks a migration against the code one deploy earlier, never one release against the next,
so any other move, a jump over several releases included, is switched in place.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import images, upgrades
from posthog_compose.configuration.images import ImageRef
from posthog_compose.configuration.schema import one_line
from posthog_compose.errors import OperatorError

#: PostHog's image on Docker Hub, as `docker image inspect` spells it.
POSTHOG_REPOSITORY = "posthog/posthog"
_IN_PLACE = "web is switched in place"


def side_by_side_refusal(root: Path, current: str, target: str, web: bool = False) -> str | None:
    """None when web from image ``current`` and web from ``target`` may run side by side; else why not,
    in words that follow "recreated in place (...)" in a plan: the two images and the gate's reason.
    ``web``: both are web's images, PostHog whatever registry they come from (see decide)."""
    refusal, _ = decide(root, current, target, web)
    return None if refusal is None else side_by_side(current, target, refusal)


def side_by_side(current: str, target: str, refusal: str) -> str:
    """A refusal of ``decide`` as a plan says it after "recreated in place (": the two images, then why."""
    return f"{current} and {target} may not run side by side: {refusal.removeprefix(_IN_PLACE + ': ')}"


def surge_refusal(root: Path, current: str, target: str) -> str | None:
    """None when an upgrade from image ``current`` to image ``target`` may surge; else one line saying
    why web must be switched in place."""
    refusal, _ = decide(root, current, target)
    return refusal


def decide(root: Path, current: str, target: str, web: bool = False) -> tuple[str | None, str]:
    """(refusal, basis): the refusal is None when the move may surge, and the basis then says in a few
    words why (the plan prints it after the move it names); else the refusal is one line saying why web
    is switched in place. ``web``: both images are what web runs (`up` and `harden` compare web's
    container with .env), so both are PostHog's even when one comes from a registry .env no longer
    names (a mirror given up); `upgrade --service` asks without it, and a datastore never surges."""
    root = Path(root)
    try:
        before = images.parse(images.with_known_tag(root, current))
        after = images.parse(images.with_known_tag(root, target))
    except OperatorError as exc:
        return f"{_IN_PLACE}: an image reference cannot be read ({one_line(exc)})", ""
    for ref in () if web else (before, after):
        if not _is_posthog(root, ref):
            return (f"{ref.repository} is not PostHog's image: a datastore never runs twice beside itself on one "
                    "data directory, so it is always switched in place"), ""
    if _same_image(before, after):
        return None, "the same image: nothing migrates"
    versions = []
    for ref in (before, after):
        version = images.release_version(ref.tag)
        if version is None:
            return (f"{_IN_PLACE}: {_name(ref)} is not a numbered release (release-X.Y.Z), so the kit cannot tell "
                    "which migrations the move brings"), ""
        versions.append(version)
    old, new = versions
    move = f"release-{_shown(old)} -> release-{_shown(new)}"
    if old == new:  # one release, named once by its tag and once by the digest pinned from it
        return None, "the same release: nothing migrates"
    try:
        gates = upgrades.load(root)
        reviews = upgrades.load_surge_reviews(root)
    except OperatorError as exc:
        return f"{_IN_PLACE}: {one_line(exc)}", ""
    if new < old:
        # Going back over a move reviewed and allowed pairs the same two releases on the same schema as
        # that move's own surge did (the older web serving while the newer had migrated), so it surges too;
        # so does the way back over a jump without migrations. A review of the move itself decides first.
        review = next((r for r in reviews if (r.from_version, r.to_version) == (new, old)), None)
        if review is not None and review.surge == "allowed":
            return None, f"the way back over a move {upgrades.GATES_FILE} allows"
        way = [] if review is not None else unmigrated_steps(reviews, new, old)
        if way:
            return None, f"back over {len(way)} reviewed moves without migrations ({upgrades.GATES_FILE})"
        return (f"{_IN_PLACE}: {move} is a downgrade that {upgrades.GATES_FILE} has not reviewed the other way "
                "(section surge): the older release would run on a schema it was never checked against"), ""
    crossed = [gate.id for gate in gates if old < gate.version <= new]
    if crossed:
        return (f"{_IN_PLACE}: {move} crosses the upgrade gate {crossed[0]}, a release that reworks PostHog's "
                "ClickHouse schema"), ""
    for review in reviews:
        if (review.from_version, review.to_version) == (old, new):
            if review.surge == "allowed":
                return None, f"a move {upgrades.GATES_FILE} allows"
            return f"{_IN_PLACE}: {move}: {one_line(review.reason)} ({upgrades.GATES_FILE}, surge)", ""
    way = unmigrated_steps(reviews, old, new)
    if way:
        return None, f"{len(way)} reviewed moves without migrations ({upgrades.GATES_FILE})"
    return (f"{_IN_PLACE}: {move} is not a move {upgrades.GATES_FILE} has reviewed for running its migrations "
            "under the old release, nor a jump over reviewed moves without migrations (section surge); PostHog "
            "only checks them against the code one deploy earlier"), ""


def unmigrated_steps(reviews: list[upgrades.SurgeReview], low: tuple[int, ...],
                     high: tuple[int, ...]) -> list[upgrades.SurgeReview]:
    """The reviewed moves that lead from release ``low`` up to ``high``, each allowed and bringing no
    migration of any kind (``migrations: none``), or [] when there is no such way. Along it the schema
    never changes, so the release at either end runs on the schema the other one has: a jump over them
    is as safe as one of them. A single step with migrations breaks the chain, however safe it is on its
    own: it was checked against the code of the release just before it, not of one further back. So
    does any move between the two that a review refuses: the file then contradicts itself, and the
    refusal wins."""
    if any(review.surge == "refused" and low <= review.from_version and review.to_version <= high
           for review in reviews):
        return []
    steps: dict[tuple[int, ...], list[upgrades.SurgeReview]] = {}
    for review in reviews:
        if review.schema_unchanged and low <= review.from_version and review.to_version <= high:
            steps.setdefault(review.from_version, []).append(review)
    way: dict[tuple[int, ...], list[upgrades.SurgeReview]] = {low: []}  # release -> the steps that reach it
    waiting = [low]
    while waiting:
        at = waiting.pop()
        for step in steps.get(at, []):
            if step.to_version not in way:
                way[step.to_version] = [*way[at], step]
                waiting.append(step.to_version)
    return way.get(high, []) if high != low else []


def _is_posthog(root: Path, ref: ImageRef) -> bool:
    """PostHog's image: Docker Hub's posthog/posthog, or the repository `.env` runs PostHog from (a mirror)."""
    repository = images.familiar_repository(ref.repository)
    return repository == POSTHOG_REPOSITORY or repository == _configured_repository(root)


def _configured_repository(root: Path) -> str | None:
    from posthog_compose.configuration.envfile import EnvFile, env_path

    path = env_path(root)
    try:
        value = EnvFile.load(path).resolved().get("POSTHOG_IMAGE", "") if path.exists() else ""
        return images.familiar_repository(images.parse(value).repository) if value else None
    except (OperatorError, OSError, ValueError):
        return None


def _same_image(before: ImageRef, after: ImageRef) -> bool:
    """The same content on both sides: the same digest, or the same tag when neither side names a digest
    and the tag does not move (`latest` today is not `latest` of last month)."""
    if before.digest or after.digest:
        return before.digest is not None and before.digest == after.digest
    return before.tag is not None and before.tag == after.tag and before.tag.lower() not in images.MOVING_TAGS


def _name(ref: ImageRef) -> str:
    return ref.tag if ref.tag else (ref.digest[:19] + "..." if ref.digest else ref.repository)


def _shown(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))
