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
_CLAUSE_RE = re.compile(r"^(>=|<=|>|<|==)(\d+(?:\.\d+){0,2})$")


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
            match = _CLAUSE_RE.match(clause)
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


def _fail(path: Path, message: str) -> OperatorError:
    return OperatorError(f"{path.name}: {message}; fix the file (see the handbook's Compatibility page)")


def parse(text: str, path: Path) -> Matrix:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(path, f"is not valid YAML ({str(exc).splitlines()[0]})")
    return _from_data(data, path)


def _from_data(data, path: Path) -> Matrix:
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("rows"), list):
        raise _fail(path, "needs `schema: 1` and a list of `rows`")
    rows = []
    for number, item in enumerate(data["rows"], 1):
        try:
            accepts = {
                service: Accepts(service, Range.parse(spec["range"]), str(spec.get("confidence", "high")),
                                 str(spec["source"]), str(spec.get("note", "")))
                for service, spec in item["accepts"].items()
            }
            unknown = set(accepts) - set(SERVICE_LABELS)
            if unknown:
                raise ValueError(f"unknown datastore {sorted(unknown)[0]!r}")
            rows.append(Row(
                posthog=Range.parse(item["posthog"]), label=str(item.get("label", item["posthog"])),
                period=str(item.get("period", "")),
                accepts=accepts,
                reads={process: tuple(spec["names"]) for process, spec in item["reads"].items()},
                read_sources={process: str(spec["source"]) for process, spec in item["reads"].items()},
                carried={str(k): str(v) for k, v in (item.get("carried") or {}).items()},
                pinned={str(k): dict(v) for k, v in (item.get("pinned") or {}).items()},
            ))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _fail(path, f"row {number} is malformed ({exc})")
    return Matrix(path, dict(data.get("processes") or {}), dict(data.get("images") or {}),
                  {str(k): str(v) for k, v in (data.get("posthog_tag_aliases") or {}).items()}, tuple(rows))


@lru_cache(maxsize=4)
def _load_cached(path: Path, mtime: float) -> Matrix:
    # Parsed once and remembered as JSON while the file is unchanged (manifest.load_yaml), so that
    # config-check does not import PyYAML for it.
    from posthog_compose.configuration.manifest import load_yaml

    return _from_data(load_yaml(path), path)


def load(root: Path | None = None) -> Matrix:
    """The matrix of the deployment at ``root`` (the repository's own by default), read once."""
    path = Path(root or ROOT) / COMPATIBILITY_FILE
    try:
        mtime = path.stat().st_mtime
    except OSError:
        raise OperatorError(f"{COMPATIBILITY_FILE} is missing; restore it: git checkout -- {COMPATIBILITY_FILE}")
    return _load_cached(path, mtime)


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


def datastore_problems(values: dict[str, str], matrix: Matrix | None = None) -> list[Problem]:
    """Each datastore image against the range the pinned PostHog version accepts."""
    matrix = matrix or load()
    posthog_image = values.get("POSTHOG_IMAGE", "")
    version = posthog_version(posthog_image, matrix.aliases)
    row = matrix.row_for(version)
    problems: list[Problem] = []
    if not posthog_image:
        return problems
    if row is None:
        newest = matrix.rows[0]
        reason = ("names no PostHog release (a commit SHA, a digest or latest)" if version is None
                  else f"is PostHog {'.'.join(map(str, version))}, which {COMPATIBILITY_FILE} does not cover")
        problems.append(Problem(
            "warning", "compatibility", "POSTHOG_IMAGE",
            f"{reason}, so the datastore versions it accepts cannot be known; PostHog checks them at boot and exits "
            f"when one is out of range", f"compare with {newest.label}'s ranges on the handbook's Compatibility page"))
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
                f"{what}, so its {label} version cannot be known here; {row.label} accepts {label} {accepts.range} "
                f"and exits at boot otherwise", f"check it, or write the version in the tag ({fix})"))
            continue
        low_ok, high_ok = accepts.range.contains(found.low), accepts.range.contains(found.high)
        if low_ok and high_ok:
            continue
        if found.kind == "series" and (low_ok or high_ok):
            problems.append(Problem(
                "warning", "compatibility", variable,
                f"{label} {found.text} floats over releases both inside and outside {accepts.range}, the range "
                f"{row.label} accepts", f"pin a full version ({fix})"))
            continue
        problems.append(Problem(
            "error", "compatibility", variable,
            f"is {label} {found.text}, outside {accepts.range}, the range {row.label} accepts: PostHog's web and "
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
    except OperatorError as exc:
        return [Problem("error", "compatibility", COMPATIBILITY_FILE, str(exc).split(": ", 1)[-1],
                        f"restore it: git checkout -- {COMPATIBILITY_FILE}")]
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
