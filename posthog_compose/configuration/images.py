"""Image references: parsing, moving-tag detection, and what the local engine knows about an image.

Owns the grammar of `[host[:port]/]path[:tag][@sha256:digest]` (the Docker reference grammar,
restricted to sha256 digests), the list of tags that move under you (`latest`, ...), and the two
read-only `docker image inspect` questions the tasks ask: does the image exist locally, and which
registry digest does it have. Used by `invoke upgrade` (pinning) and `invoke harden` (checks).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from posthog_compose.errors import OperatorError

#: Tags that registries re-point as new builds appear: a deployment on one of them can change
#: version on the next pull without anyone deciding it.
MOVING_TAGS: frozenset[str] = frozenset(
    {"latest", "latest-release", "master", "main", "edge", "nightly", "dev", "stable"})

_HOST_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"^{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*(?::[0-9]+)?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. ``repository`` keeps any registry host part as written."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_tag(self, tag: str) -> "ImageRef":
        """The same repository at ``tag`` (any digest is dropped: it belonged to the old content)."""
        if not _TAG.match(tag):
            raise OperatorError(f"{tag!r} is not a valid image tag (letters, digits, _ . -; at most 128 characters)")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> "ImageRef":
        """The same repository pinned to ``digest`` (the tag is dropped so the reference says one thing)."""
        if not _DIGEST.match(digest):
            raise OperatorError(f"{digest!r} is not a sha256 digest (expected sha256: and 64 lowercase hex digits)")
        return replace(self, tag=None, digest=digest)


def parse(reference: str) -> ImageRef:
    """Parse ``reference``; a malformed one raises a one-line OperatorError."""
    text = (reference or "").strip()
    if not text:
        raise OperatorError("empty image reference; expected e.g. posthog/posthog:release-1.43.0")
    if any(ch.isspace() for ch in text):
        raise OperatorError(f"image reference {reference!r} contains whitespace")
    name, digest = text, None
    if "@" in text:
        name, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise OperatorError(f"image reference {reference!r}: the digest must be sha256: and 64 lowercase hex digits")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:  # a colon after the last slash separates the tag (an earlier one is a host port)
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise OperatorError(f"image reference {reference!r}: tag {tag!r} is not valid "
                                "(letters, digits, _ . -; at most 128 characters)")
    components = name.split("/")
    if len(components) > 1 and _looks_like_host(components[0]):
        if not _HOST.match(components[0]):
            raise OperatorError(f"image reference {reference!r}: {components[0]!r} is not a valid registry host")
        path = components[1:]
    else:
        path = components
    if not path or not all(_PATH_COMPONENT.match(part) for part in path):
        raise OperatorError(f"image reference {reference!r}: the repository must be lowercase letters, digits and "
                            "separators (. _ -), e.g. posthog/posthog")
    return ImageRef(repository=name, tag=tag, digest=digest)


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def is_moving(reference: str) -> bool:
    """True when the reference can change under the deployment: no digest and no tag or a moving tag."""
    from posthog_compose.configuration.formats import floating_tag

    ref = parse(reference)
    return ref.digest is None and (ref.tag is None or ref.tag.lower() in MOVING_TAGS
                                   or floating_tag(reference) is not None)


def is_digest_pinned(reference: str) -> bool:
    return parse(reference).digest is not None


def familiar_repository(repository: str) -> str:
    """Docker Hub's short spelling, as `docker image inspect` reports it (docker.io/library/x -> x)."""
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repository.startswith(prefix):
            repository = repository[len(prefix):]
            break
    if repository.startswith("library/") and repository.count("/") == 1:
        repository = repository[len("library/"):]
    return repository


def _inspect(runner, reference: str, template: str) -> str | None:
    result = runner.run(["docker", "image", "inspect", "--format", template, reference],
                        capture=True, check=False, mutating=False)
    if result.returncode != 0:
        return None
    return (result.stdout or "").strip()


def image_exists(runner, reference: str) -> bool:
    """Whether the local engine has ``reference`` (no registry is asked)."""
    return _inspect(runner, reference, "{{.Id}}") is not None


def repo_digest(runner, reference: str, image: str | None = None) -> str | None:
    """``repository@sha256:...`` for the local image ``reference`` (or for ``image``, e.g. the image
    ID a container runs), from its RepoDigests entry for the reference's repository; None when the
    image is missing or has no registry digest (built locally)."""
    ref = parse(reference)
    output = _inspect(runner, image or str(ref), "{{json .RepoDigests}}")
    if not output:
        return None
    try:
        digests = json.loads(output) or []
    except ValueError:
        return None
    wanted = familiar_repository(ref.repository)
    for entry in digests:
        repository, _, digest = str(entry).partition("@")
        if familiar_repository(repository) == wanted and _DIGEST.match(digest):
            return f"{ref.repository}@{digest}"
    return None


# --- the version behind a digest ----------------------------------------------------------------
#: Which tag each digest the kit pinned stood for: {"repository@sha256:...": "tag"}. A digest says
#: nothing about its version, so `invoke upgrade --pin-digest` and `invoke harden --only images`
#: record it when they pin, and the upgrade gates and the compatibility check read it back.
DIGEST_VERSIONS_FILE = ".deploy/digest-versions.json"


def _digest_versions(root) -> dict[str, str]:
    from pathlib import Path

    path = Path(root) / DIGEST_VERSIONS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_digest_version(root, tagged: str, pinned: str) -> None:
    """Remember that ``pinned`` (repository@sha256:...) is ``tagged``'s image (written atomically).
    Nothing is recorded when ``tagged`` has no tag or ``pinned`` no digest."""
    from pathlib import Path

    from posthog_compose.fileops import atomic_write

    tag, ref = parse(tagged).tag, parse(pinned)
    if not tag or not ref.digest:
        return
    data = _digest_versions(root)
    data[f"{familiar_repository(ref.repository)}@{ref.digest}"] = tag
    path = Path(root) / DIGEST_VERSIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def with_known_tag(root, reference: str) -> str:
    """``reference`` with the tag its digest was pinned from (repository:tag@sha256:...), when the kit
    recorded one; otherwise ``reference`` unchanged (also when it does not parse)."""
    if root is None or "@" not in (reference or ""):
        return reference
    try:
        ref = parse(reference)
    except OperatorError:
        return reference
    if ref.tag or not ref.digest:
        return reference
    tag = _digest_versions(root).get(f"{familiar_repository(ref.repository)}@{ref.digest}")
    return f"{ref.repository}:{tag}@{ref.digest}" if tag and _TAG.match(tag) else reference


def with_known_tags(root, values: dict[str, str]) -> dict[str, str]:
    """``values`` with every `*_IMAGE` digest given the tag recorded for it (see with_known_tag)."""
    return {name: with_known_tag(root, value) if name.endswith("_IMAGE") else value
            for name, value in values.items()}


# --- PostHog's published tags -------------------------------------------------------------------

_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
_RELEASE = re.compile(r"^release-(\d+)\.(\d+)\.(\d+)$")


def posthog_tag_kind(tag: str, *, allow_latest: bool = False,
                     last_release: tuple[int, int, int] | None = None) -> str:
    """Classify a `--to` value for the PostHog image: "commit", "release", "digest" or "latest".

    PostHog publishes a 40-hex commit-SHA tag for every master commit, `release-X.Y.Z` tags up to
    1.43.x, and digests; `latest` moves and is accepted only with ``allow_latest``. Anything else is
    an OperatorError, before anything happens. ``last_release``: PostHog's last numbered release
    (compatibility.yml's `latest-release`, read by the caller): no release tag is suggested past it.
    """
    value = (tag or "").strip()
    if _COMMIT_SHA.match(value):
        return "commit"
    if _RELEASE.match(value):
        return "release"
    if _DIGEST.match(value):
        return "digest"
    if value == "latest":
        if not allow_latest:
            raise OperatorError("`latest` moves with every PostHog commit and expects a newer, larger stack; pin a "
                                "commit-SHA tag or a digest, or pass --allow-latest if you really mean it")
        return "latest"
    hint = ""
    if re.match(r"^v?\d+\.\d+(\.\d+)?$", value):
        number = value.lstrip("v") + (".0" if value.lstrip("v").count(".") == 1 else "")
        last = last_release or LAST_NUMBERED_RELEASE
        if tuple(int(part) for part in number.split(".")) > last:
            # No release-X.Y.Z tag exists past the last one: suggesting one would send the operator to a pull
            # that fails. Later builds exist only under their commit SHA.
            shown = ".".join(map(str, last))
            raise OperatorError(
                f"--to {value!r}: PostHog published no release-{number}: its numbered releases end at "
                f"release-{shown}, and later builds are tagged only by their 40-character commit SHA; pick one "
                f"from PostHog's tag list ({TAG_LIST}) and pass it as --to")
        hint = f" (PostHog's numbered tags are spelt release-X.Y.Z, e.g. release-{number})"
    elif re.match(r"^[0-9a-fA-F]{7,39}$", value) or re.match(r"^[0-9A-F]{40}$", value):
        hint = " (commit tags are the full 40-character lowercase SHA, not an abbreviation)"
    raise OperatorError(f"--to {value!r} is not a tag PostHog publishes{hint}; use a 40-hex commit SHA, "
                        "release-X.Y.Z or sha256:<64 hex>")


#: Where PostHog's published image tags are listed (every release-X.Y.Z and commit-SHA tag).
TAG_LIST = "https://hub.docker.com/r/posthog/posthog/tags"
#: PostHog's last `release-X.Y.Z` tag when compatibility.yml does not say (its `latest-release` alias).
LAST_NUMBERED_RELEASE = (1, 43, 0)


def release_version(tag: str | None) -> tuple[int, int, int] | None:
    """(X, Y, Z) for a `release-X.Y.Z` tag, else None."""
    match = _RELEASE.match(tag or "")
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]
