"""The PostHog contract (compatibility.yml): which PostgreSQL, Redis and ClickHouse versions each PostHog
version accepts, which environment names each PostHog process reads, and the rules config-check and
upgrade apply with it. PostHog checks the datastore versions itself when a Django process starts and
exits when one is out of range; these rules say so before anything starts.

Image tags are read, never pulled: `postgres:13.22-alpine` is PostgreSQL 13.22, `postgres:13` floats
over every 13.x, a digest or `latest` says nothing (a warning: the version cannot be known).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from posthog_compose.errors import OperatorError

COMPATIBILITY_FILE = "compatibility.yml"
ROOT = Path(__file__).resolve().parent.parent.parent
SERVICE_LABELS = {"postgresql": "PostgreSQL", "redis": "Redis", "clickhouse": "ClickHouse"}
INFINITY = math.inf

# A version at the start of a tag: 13, 13.22, 22.8.21.38, v6.2; then the end or a -/_ suffix (-alpine).
_TAG_VERSION_RE = re.compile(r"^v?(\d+(?:\.\d+){0,3})(?:[-_].*)?$")
_POSTHOG_RELEASE_RE = re.compile(r"^release-(\d+\.\d+\.\d+)$")
# ASCII digits, at most six a part: a part is a release number, and int() of thousands of digits fails.
_PART = r"[0-9]{1,6}"
_CLAUSE_RE = re.compile(rf"(>=|<=|>|<|==)({_PART}(?:\.{_PART}){{0,2}})")
_RELEASE_RE = re.compile(rf"{_PART}\.{_PART}\.{_PART}")


# ----------------------------------------------------------------------------- versions and ranges
def parse_version(text: str) -> tuple[int, int, int]:
    """'13.22' -> (13, 22, 0); like PostHog's version_string_to_semver, extra parts are dropped."""
    parts = [int(p) for p in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))  # type: ignore[return-value]


@dataclass(frozen=True)
class Range:
    """A semantic_version SimpleSpec as PostHog writes them: comma-separated >=, <=, >, <, == clauses."""

    text: str
    clauses: tuple[tuple[str, tuple[int, int, int]], ...]

    @classmethod
    def parse(cls, text: str) -> "Range":
        clauses = []
        for clause in str(text).replace(" ", "").split(","):
            match = _CLAUSE_RE.fullmatch(clause)
            if not match:
                raise ValueError(f"{clause!r} is not a version clause such as >=11.0.0 or <=14.1.0")
            clauses.append((match.group(1), parse_version(match.group(2))))
        return cls(str(text), tuple(clauses))

    def contains(self, version: tuple) -> bool:
        for op, bound in self.clauses:
            ok = {">=": version >= bound, "<=": version <= bound, ">": version > bound, "<": version < bound,
                  "==": version == bound}[op]
            if not ok:
                return False
        return True

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class TagVersion:
    """What an image reference says about the version inside it.

    kind: ``exact`` (all three parts given), ``series`` (13 or 13.22 with parts missing: the tag floats
    to the newest release of that series), ``digest`` (pinned by digest, no readable tag) or ``unknown``
    (latest, alpine, a commit SHA...). ``low``/``high`` bound the versions the tag can stand for."""

    kind: str
    text: str
    low: tuple = ()
    high: tuple = ()


def tag_version(image: str) -> TagVersion:
    """Read the version from an image reference's tag (never from the registry)."""
    reference = image.strip()
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    if not tag:
        return TagVersion("digest" if digest else "unknown", reference)
    match = _TAG_VERSION_RE.match(tag)
    if not match:
        return TagVersion("digest" if digest else "unknown", reference)
    parts = [int(p) for p in match.group(1).split(".")[:3]]
    if len(parts) == 3:
        return TagVersion("exact", match.group(1), tuple(parts), tuple(parts))
    low = tuple(parts + [0] * (3 - len(parts)))
    high = tuple(parts + [INFINITY] * (3 - len(parts)))
    return TagVersion("series", match.group(1), low, high)


def posthog_version(image: str, aliases: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """The PostHog release an image reference names: release-1.43.0 -> (1, 43, 0); latest-release is
    frozen at 1.43.0; a commit-SHA tag, a digest or latest -> None (cannot be known from the reference)."""
    name = image.strip().partition("@")[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    aliases = load().aliases if aliases is None else aliases
    if tag in aliases:
        return parse_version(aliases[tag])
    match = _POSTHOG_RELEASE_RE.match(tag)
    return parse_version(match.group(1)) if match else None


# ----------------------------------------------------------------------------- the matrix
@dataclass(frozen=True)
class Accepts:
    service: str
    range: Range
    confidence: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Row:
    posthog: Range
    label: str
    period: str
    accepts: dict[str, Accepts]
    reads: dict[str, tuple[str, ...]]
    read_sources: dict[str, str]
    carried: dict[str, str] = field(default_factory=dict)
    pinned: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Matrix:
    path: Path
    processes: dict[str, str]
    images: dict[str, str]
    aliases: dict[str, str]
    rows: tuple[Row, ...]

    def row_for(self, version: tuple | None) -> Row | None:
        if version is None:
            return None
        return next((row for row in self.rows if row.posthog.contains(version)), None)

    def reads(self, service: str, version: tuple | None) -> tuple[str, ...]:
        """The names the PostHog process of compose service ``service`` reads at ``version``."""
        row = self.row_for(version)
        process = self.processes.get(service)
        if row is None or process is None:
            return ()
        return row.reads.get(process, ())


HINT = "the comment at the top of compatibility.yml describes every field"


def _fail(path: Path, message: str) -> OperatorError:
    return OperatorError(f"{path.name}: {message}; fix the file (see the handbook's Compatibility page)")


def _is_range(text: str) -> bool:
    try:
        Range.parse(text)
    except ValueError:
        return False
    return True


def _is_image(text: str) -> bool:
    from posthog_compose.configuration.images import parse as parse_image

    try:
        parse_image(text)
    except OperatorError:
        return False
    return True


def _schema():
    """What compatibility.yml holds (the file's own header comment says what each field means)."""
    from posthog_compose.configuration import schema as s

    datastore = s.Choice(tuple(SERVICE_LABELS))
    version_range = s.Text("a version range such as >=11.0.0,<=14.1.0 (clauses of >=, <=, >, <, == and a "
                           "version, separated by commas)", _is_range)
    variable = s.pattern(r"[A-Z][A-Z0-9_]*", "an environment variable name such as SECRET_KEY")
    process = s.pattern(r"[a-z][a-z0-9-]*", "a PostHog process name such as django or plugin-server")
    service = s.pattern(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", "a Compose service name such as web")
    row = s.Fields(
        required={
            "posthog": version_range,
            "accepts": s.MapOf(datastore, s.Fields(
                required={"range": version_range, "source": s.Text()},
                optional={"confidence": s.Choice(("high", "medium")), "note": s.Text()}), min_items=1),
            "reads": s.MapOf(process, s.Fields(
                required={"names": s.ListOf(variable, min_items=1), "source": s.Text()})),
        },
        optional={
            "label": s.Text(), "period": s.Text(),
            "carried": s.MapOf(variable, s.Text()),
            "pinned": s.MapOf(datastore, s.Fields(
                required={"image": s.Text("an image reference such as postgres:13.22-alpine", _is_image),
                          "why": s.Text()})),
        })
    return s.Fields(
        required={
            "schema": s.Exactly(1, "1 (the only version of this file these tasks read)"),
            "processes": s.MapOf(service, process),
            "images": s.MapOf(variable, datastore),
            "rows": s.ListOf(row, min_items=1),
        },
        optional={
            "posthog_tag_aliases": s.MapOf(
                s.pattern(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", "an image tag such as latest-release"),
                s.Text("a release version such as 1.43.0", _RELEASE_RE.fullmatch)),
        })


def check(data, path: Path) -> None:
    """Raise a one-line SchemaError unless ``data`` (the parsed file) is what compatibility.yml must hold."""
    from posthog_compose.configuration import schema

    schema.check(_schema(), data, Path(path).name, HINT)


def parse(text: str, path: Path) -> Matrix:
    import yaml

    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise _fail(path, f"is not valid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    return _from_data(data, path)


def _from_data(data, path: Path) -> Matrix:
    """The matrix of a parsed file; nothing of the file is used before its schema was checked."""
    check(data, path)
    rows = []
    for item in data["rows"]:
        reads = item["reads"]
        rows.append(Row(
            posthog=Range.parse(item["posthog"]), label=item.get("label", item["posthog"]),
            period=item.get("period", ""),
            accepts={service: Accepts(service, Range.parse(spec["range"]), spec.get("confidence", "high"),
                                      spec["source"], spec.get("note", ""))
                     for service, spec in item["accepts"].items()},
            reads={process: tuple(spec["names"]) for process, spec in reads.items()},
            read_sources={process: spec["source"] for process, spec in reads.items()},
            carried=dict(item.get("carried") or {}),
            pinned={service: dict(pin) for service, pin in (item.get("pinned") or {}).items()},
        ))
    return Matrix(path, dict(data["processes"]), dict(data["images"]), dict(data.get("posthog_tag_aliases") or {}),
                  tuple(rows))


@lru_cache(maxsize=4)
def _load_cached(path: Path, digest: str) -> Matrix:
    # Parsed once and remembered as JSON while the file is unchanged (manifest.load_yaml), so that
    # config-check does not import PyYAML for it. Keyed by the text's hash, not its mtime: two edits
    # within one clock tick must not return the first one's matrix.
    from posthog_compose.configuration.manifest import load_yaml

    return _from_data(load_yaml(path), path)


def load(root: Path | None = None) -> Matrix:
    """The matrix of the deployment at ``root`` (the repository's own by default), read once and checked
    against the file's schema before any of it is used."""
    import hashlib

    path = Path(root or ROOT) / COMPATIBILITY_FILE
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise OperatorError(f"{COMPATIBILITY_FILE} is missing; restore it: git checkout -- {COMPATIBILITY_FILE}")
    except OSError as exc:
        raise OperatorError(f"{COMPATIBILITY_FILE}: cannot be read ({exc.strerror or exc}); make it a readable file "
                            f"or restore it: git checkout -- {COMPATIBILITY_FILE}")
    return _load_cached(path, digest)


# ----------------------------------------------------------------------------- the rules
@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning
    rule: str
    name: str  # the .env variable the finding is about
    message: str
    fix: str = ""

    def text(self) -> str:
        return f"{self.name} {self.message}" + (f"; {self.fix}" if self.fix else "")


def _names_no_release(image: str) -> str:
    """Why an image reference names no PostHog release, saying what its tag actually is."""
    from posthog_compose.configuration.images import MOVING_TAGS
    from posthog_compose.configuration.schema import one_line  # .env's text reaches a terminal

    name, _, digest = image.strip().partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    if digest and not tag:
        return "is pinned by digest, which names no PostHog release"
    if re.fullmatch(r"[0-9a-f]{40}", tag):
        return f"has the commit-SHA tag {tag[:12]}..., which names no PostHog release"
    if not tag:
        return "has no tag (Compose pulls latest), which names no PostHog release"
    if tag in MOVING_TAGS:
        return f"has the moving tag {tag}, which names no PostHog release"
    return f"has the custom tag {one_line(tag)[:80]!r}, which names no PostHog release (not release-X.Y.Z)"


def datastore_problems(values: dict[str, str], matrix: Matrix | None = None) -> list[Problem]:
    """Each datastore image against the range the pinned PostHog version accepts."""
    from posthog_compose.configuration.schema import one_line  # the file's text reaches a terminal

    matrix = matrix or load()
    posthog_image = values.get("POSTHOG_IMAGE", "")
    version = posthog_version(posthog_image, matrix.aliases)
    row = matrix.row_for(version)
    problems: list[Problem] = []
    if not posthog_image:
        return problems
    if row is None:
        newest = matrix.rows[0]
        reason = (_names_no_release(posthog_image) if version is None
                  else f"is PostHog {'.'.join(map(str, version))}, which {COMPATIBILITY_FILE} does not cover")
        problems.append(Problem(
            "warning", "compatibility", "POSTHOG_IMAGE",
            f"{reason}, so the datastore versions it accepts cannot be known; PostHog checks them at boot and exits "
            f"when one is out of range", f"compare with {one_line(newest.label)}'s ranges on the handbook's Compatibility page"))
        return problems
    for variable, service in matrix.images.items():
        image = values.get(variable, "")
        accepts = row.accepts.get(service)
        if not image or accepts is None:
            continue
        label, found = SERVICE_LABELS[service], tag_version(image)
        fix = f"use an image inside {accepts.range}" + (
            f", e.g. {row.pinned[service]['image']}" if service in row.pinned else "")
        if found.kind in ("digest", "unknown"):
            what = "is pinned by digest" if found.kind == "digest" else "has a tag that names no version"
            problems.append(Problem(
                "warning", "compatibility", variable,
                f"{what}, so its {label} version cannot be known here; {one_line(row.label)} accepts {label} {accepts.range} "
                f"and exits at boot otherwise", f"check it, or write the version in the tag ({fix})"))
            continue
        low_ok, high_ok = accepts.range.contains(found.low), accepts.range.contains(found.high)
        if low_ok and high_ok:
            continue
        if found.kind == "series" and (low_ok or high_ok):
            problems.append(Problem(
                "warning", "compatibility", variable,
                f"{label} {found.text} floats over releases both inside and outside {accepts.range}, the range "
                f"{one_line(row.label)} accepts", f"pin a full version ({fix})"))
            continue
        problems.append(Problem(
            "error", "compatibility", variable,
            f"is {label} {found.text}, outside {accepts.range}, the range {one_line(row.label)} accepts: PostHog's web and "
            f"worker would exit at boot", fix))
    return problems


def kafka_url_problems(values: dict[str, str]) -> list[Problem]:
    """KAFKA_URL (what Django reads) must name the same brokers as KAFKA_HOSTS (the plugin server's)."""
    from urllib.parse import urlsplit

    hosts, url = values.get("KAFKA_HOSTS", ""), values.get("KAFKA_URL")
    if url is None or not hosts:
        return []
    entries = [entry.strip() for entry in url.split(",") if entry.strip()]
    wrong_scheme = [entry for entry in entries if urlsplit(entry).scheme != "kafka"]
    if wrong_scheme:
        return [Problem("error", "consistency", "KAFKA_URL",
                        f"entry {wrong_scheme[0]!r} lacks the kafka:// scheme: PostHog's Django reads an empty broker "
                        "from it", "run `invoke init` to derive KAFKA_URL from KAFKA_HOSTS")]
    brokers = [urlsplit(entry).netloc for entry in entries]
    if brokers != [h.strip() for h in hosts.split(",") if h.strip()]:
        return [Problem("error", "consistency", "KAFKA_URL",
                        "names other brokers than KAFKA_HOSTS: web and worker would talk to another Kafka than the "
                        "plugin server", "run `invoke init` to derive KAFKA_URL from KAFKA_HOSTS")]
    return []


def problems(values: dict[str, str], root: Path | None = None) -> list[Problem]:
    """Every contract finding for a deployment's .env values (config-check's compatibility hook)."""
    try:
        matrix = load(root)
    except OperatorError:
        return []  # config-check reports the file itself, under its own name (checks/data_files.py)
    from posthog_compose.configuration.images import with_known_tags  # a digest the kit pinned stands for the tag it was pinned from

    return datastore_problems(with_known_tags(root, values), matrix) + kafka_url_problems(values)


def upgrade_problems(current_values: dict[str, str], target_values: dict[str, str],
                     root: Path | None = None) -> list[str]:
    """The errors an upgrade from ``current_values`` to ``target_values`` would cause: a datastore the
    target PostHog version refuses, or a datastore image the pinned PostHog version refuses. One line each,
    naming the range and the fix. Warnings (a digest) do not stop an upgrade."""
    changed = {name for name in target_values if target_values.get(name) != current_values.get(name)}
    from posthog_compose.configuration.images import with_known_tags

    found = [p for p in datastore_problems(with_known_tags(root, target_values), load(root)) if p.severity == "error"]
    lines = []
    for problem in found:
        because = ""
        if "POSTHOG_IMAGE" in changed and problem.name not in changed:
            because = f" (after the upgrade to {target_values['POSTHOG_IMAGE']})"
        lines.append(f"{problem.name} {target_values.get(problem.name, '')}{because} {problem.message}; {problem.fix}")
    return lines
