"""The variable manifest (variables.yml): its schema, loading and validation, and lookups.

Every other part of the project (the generated files, `invoke init`, config-check, the
handbook) reads variables through this module, never the YAML directly.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from posthog_compose.errors import OperatorError

MANIFEST_FILE = "variables.yml"
SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")
OPTIONAL_SERVICES = ("proxy",)  # the edge proxy of docker-compose.proxy.yml (`invoke proxy`)
GENERATORS = ("encryption-key", "secret-key", "password")
NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
# {NAME} or {NAME|filter}: a filter rewrites the value, e.g. kafka-url turns "a:1,b:2" into
# "kafka://a:1,kafka://b:2" (PostHog 1.4x's Django reads its brokers from KAFKA_URL in that form).
DERIVE_REF_RE = re.compile(r"\{([A-Za-z0-9_]+)(?:\|([a-z-]+))?\}")
DERIVE_FILTERS = {
    "kafka-url": lambda value: ",".join(f"kafka://{entry.strip()}" for entry in value.split(",") if entry.strip()),
}

_REQUIRED_FIELDS = ("name", "category", "description", "format")
_OPTIONAL_FIELDS = ("default", "secret", "generate", "derive", "required", "services", "production", "removable")


@dataclass(frozen=True)
class Variable:
    name: str
    category: str
    description: str
    format: str
    default: str = ""
    secret: bool = False
    generate: str | None = None
    derive: str | None = None
    required: bool = True
    services: tuple[str, ...] = ()
    production: str = ""
    removable: bool = False  # added by `invoke add-env-var`; the architecture's own variables are not

    def derived_from(self) -> list[str]:
        """Names this variable's ``derive`` template refers to."""
        return [match.group(1) for match in DERIVE_REF_RE.finditer(self.derive or "")]

    def render_derived(self, values: dict[str, str]) -> str:
        def render(match: re.Match) -> str:
            value = values.get(match.group(1), "")
            return DERIVE_FILTERS[match.group(2)](value) if match.group(2) else value

        return DERIVE_REF_RE.sub(render, self.derive or "")


@dataclass(frozen=True)
class Category:
    name: str
    description: str


@dataclass
class Manifest:
    path: Path
    categories: list[Category]
    variables: list[Variable]
    by_name: dict[str, Variable] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {v.name: v for v in self.variables}

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Variable:
        return self.by_name[name]

    def in_category(self, category: str) -> list[Variable]:
        return [v for v in self.variables if v.category == category]

    def grouped(self) -> list[tuple[Category, list[Variable]]]:
        """Categories in manifest order with their variables (empty categories left out)."""
        return [(c, self.in_category(c.name)) for c in self.categories if self.in_category(c.name)]

    def defaults(self) -> dict[str, str]:
        return {v.name: v.default for v in self.variables}

    @property
    def secrets(self) -> list[Variable]:
        return [v for v in self.variables if v.secret]


def manifest_path(root: Path) -> Path:
    return Path(root) / MANIFEST_FILE


YAML_CACHE_DIR = ".deploy/yaml-cache"


def load_yaml(path: Path):
    """Parse a YAML file, turning syntax errors into one operator-readable line.

    PyYAML costs more to import than the rest of config-check costs to run, so the data of a
    file parsed once is remembered as JSON under .deploy/, keyed by a hash of the file's text:
    while the file is unchanged, it is not parsed (nor PyYAML imported) again.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OperatorError(f"{path.name}: file not found at {path}; restore it from git (git checkout -- {path.name})")
    key = hashlib.sha256(text.encode("utf-8")).hexdigest()
    cache = path.parent / YAML_CACHE_DIR / f"{path.name}.json"
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("sha256") == key:
            return cached["data"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    data = _parse_yaml(text, path)
    try:
        encoded = json.dumps({"sha256": key, "data": data})
    except (TypeError, ValueError):
        return data  # YAML types JSON cannot hold (dates, ...): parse every time
    if json.loads(encoded)["data"] != data:
        return data  # e.g. integer keys that JSON would turn into strings
    try:
        from posthog_compose.fileops import atomic_write

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, encoded)
    except OSError:
        pass  # a read-only checkout is parsed every time
    return data


def _parse_yaml(text: str, path: Path):
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise OperatorError(f"{path.name}:{where} is not valid YAML ({reason}); fix the syntax and run again")


def load(root: Path) -> Manifest:
    """Load and validate the manifest under ``root``; raise OperatorError on any problem."""
    path = manifest_path(root)
    return parse(load_yaml(path), path)


def parse(data, path: Path) -> Manifest:
    from posthog_compose.configuration.formats import FORMATS, problem

    where = Path(path).name

    def fail(message: str) -> OperatorError:
        return OperatorError(f"{where}: {message}")

    if not isinstance(data, dict):
        raise fail("must be a mapping with `schema`, `categories` and `variables`")
    if data.get("schema") != 1:
        raise fail("`schema: 1` is missing or unknown; this version of the tasks reads schema 1")
    raw_categories = data.get("categories")
    if not isinstance(raw_categories, list) or not raw_categories:
        raise fail("`categories` must be a non-empty list of {name, description}")
    categories: list[Category] = []
    for index, item in enumerate(raw_categories, 1):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item.get("name"):
            raise fail(f"category #{index} needs a `name`")
        if item["name"] in {c.name for c in categories}:
            raise fail(f"category {item['name']!r} is declared twice; remove one")
        categories.append(Category(item["name"], str(item.get("description") or "")))
    category_names = {c.name for c in categories}

    raw_variables = data.get("variables")
    if not isinstance(raw_variables, list) or not raw_variables:
        raise fail("`variables` must be a non-empty list")
    variables: list[Variable] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_variables, 1):
        if not isinstance(item, dict):
            raise fail(f"variable #{index} must be a mapping of fields")
        label = item.get("name") if isinstance(item.get("name"), str) else f"#{index}"
        for key in _REQUIRED_FIELDS:
            if key not in item or item[key] in (None, ""):
                raise fail(f"variable {label} has no `{key}`; add it")
        unknown = set(item) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS)
        if unknown:
            raise fail(f"variable {label} has unknown field(s) {', '.join(sorted(unknown))}; "
                       f"known fields: {', '.join(_REQUIRED_FIELDS + _OPTIONAL_FIELDS)}")
        name = item["name"]
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise fail(f"variable name {name!r} must match ^[A-Z][A-Z0-9_]*$")
        if name in seen:
            raise fail(f"variable {name} is declared twice; keep one entry")
        seen.add(name)
        if item["category"] not in category_names:
            raise fail(f"variable {name} names category {item['category']!r}, which is not declared under "
                       f"`categories`; use one of: {', '.join(sorted(category_names))}")
        if item["format"] not in FORMATS:
            raise fail(f"variable {name} has unknown format {item['format']!r}; known formats: "
                       f"{', '.join(sorted(FORMATS))}")
        default = item.get("default", "")
        if isinstance(default, bool) or isinstance(default, float):
            raise fail(f"variable {name}: default {default!r} must be quoted as a string (e.g. \"true\")")
        default = "" if default is None else str(default)
        for flag in ("secret", "required", "removable"):
            if flag in item and not isinstance(item[flag], bool):
                raise fail(f"variable {name}: `{flag}` must be true or false")
        generate = item.get("generate")
        if generate is not None and generate not in GENERATORS:
            raise fail(f"variable {name} has unknown generator {generate!r}; use one of: {', '.join(GENERATORS)}")
        services = item.get("services", [])
        if not isinstance(services, list) or any(s not in SERVICES + OPTIONAL_SERVICES for s in services):
            raise fail(f"variable {name}: `services` must list services among {', '.join(SERVICES + OPTIONAL_SERVICES)}")
        required = item.get("required", True)
        if default == "" and required and not generate and not item.get("derive"):
            raise fail(f"variable {name} is required but has no default, generator or derive template")
        if default != "":
            bad = problem(item["format"], default)
            if bad:
                raise fail(f"variable {name}: default {'(secret placeholder) ' if item.get('secret') else ''}"
                           f"{bad}")
        variables.append(Variable(
            name=name, category=item["category"], description=str(item["description"]).strip(),
            format=item["format"], default=default, secret=item.get("secret", False), generate=generate,
            derive=item.get("derive"), required=required, services=tuple(services),
            production=str(item.get("production") or "").strip(), removable=item.get("removable", False),
        ))
    names = {v.name for v in variables}
    for variable in variables:
        for ref in variable.derived_from():
            if ref not in names:
                raise fail(f"variable {variable.name} derives from unknown variable {ref}")
        for match in DERIVE_REF_RE.finditer(variable.derive or ""):
            if match.group(2) and match.group(2) not in DERIVE_FILTERS:
                raise fail(f"variable {variable.name} uses unknown derive filter {match.group(2)!r}; "
                           f"known filters: {', '.join(sorted(DERIVE_FILTERS))}")
    return Manifest(Path(path), categories, variables)
