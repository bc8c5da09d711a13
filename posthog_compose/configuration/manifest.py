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
    except UnicodeDecodeError as exc:
        raise OperatorError(f"{path.name}: is not UTF-8 text (byte {exc.start}); save it as UTF-8 or restore it from "
                            f"git (git checkout -- {path.name})")
    except OSError as exc:
        raise OperatorError(f"{path.name}: cannot be read ({exc.strerror or exc}); make it a readable file or restore "
                            f"it from git (git checkout -- {path.name})")
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
    except (TypeError, ValueError, RecursionError):
        return data  # YAML types JSON cannot hold (dates, a self-referencing alias, ...): parse every time
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
    except (ValueError, RecursionError) as exc:
        # PyYAML's own limits: an integer of thousands of digits (int()'s limit), nesting too deep to parse.
        reason = "a number too long to read" if isinstance(exc, ValueError) else "nested too deeply"
        raise OperatorError(f"{path.name}: is not usable YAML ({reason}); fix the file and run again")


def load(root: Path) -> Manifest:
    """Load and validate the manifest under ``root``; raise OperatorError on any problem."""
    path = manifest_path(root)
    return parse(load_yaml(path), path)


HINT = "the comment at the top of variables.yml describes every field"


def _schema():
    """What variables.yml holds; the rules between entries (names, categories, formats) follow in parse."""
    from posthog_compose.configuration import schema as s

    variable = s.Fields(
        required={"name": s.Text("a variable name"), "category": s.Text("a category name"),
                  "description": s.Text(), "format": s.Text("a format name")},
        optional={
            "default": s.TextOrNumber(s.Text(empty=True, null=True),
                                      'text (quote a value YAML would read otherwise, e.g. "true" or "1.5")'),
            "secret": s.Flag(), "required": s.Flag(), "removable": s.Flag(),
            "generate": s.Text("a generator name"), "derive": s.Text("a template such as postgres://{POSTGRES_USER}@db"),
            "services": s.ListOf(s.Text("a service name")), "production": s.Text(empty=True, null=True),
        })
    return s.Fields(required={
        "schema": s.Exactly(1, "1 (the only version of this file these tasks read)"),
        "categories": s.ListOf(s.Fields(required={"name": s.Text("a category name")},
                                        optional={"description": s.Text(empty=True, null=True)}), min_items=1),
        "variables": s.ListOf(variable, min_items=1),
    })


def parse(data, path: Path) -> Manifest:
    from posthog_compose.configuration import schema
    from posthog_compose.configuration.formats import FORMATS, problem

    where = Path(path).name

    def fail(message: str) -> OperatorError:
        return OperatorError(f"{where}: {message}")

    schema.check(_schema(), data, where, HINT)  # types, required and known fields: nothing below re-checks them
    categories: list[Category] = []
    for item in data["categories"]:
        if item["name"] in {c.name for c in categories}:
            raise fail(f"category {item['name']!r} is declared twice; remove one")
        categories.append(Category(item["name"], item.get("description") or ""))
    category_names = {c.name for c in categories}

    variables: list[Variable] = []
    seen: set[str] = set()
    for item in data["variables"]:
        name = item["name"]
        if not NAME_RE.fullmatch(name):
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
        default = "" if item.get("default") is None else str(item["default"])
        generate = item.get("generate")
        if generate is not None and generate not in GENERATORS:
            raise fail(f"variable {name} has unknown generator {generate!r}; use one of: {', '.join(GENERATORS)}")
        services = item.get("services", [])
        if any(s not in SERVICES + OPTIONAL_SERVICES for s in services):
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
            name=name, category=item["category"], description=item["description"].strip(),
            format=item["format"], default=default, secret=item.get("secret", False), generate=generate,
            derive=item.get("derive"), required=required, services=tuple(services),
            production=(item.get("production") or "").strip(), removable=item.get("removable", False),
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
