"""The handbook's generated parts, as mkdocs hooks: the environment variable reference (from the
manifest), the task reference (from the Invoke collection) and the architecture diagram (an
inline SVG computed from docker-compose.yml). Nothing is written into docs/; `mkdocs serve`
rebuilds when any source changes. No JavaScript and no network are needed to view them."""

from __future__ import annotations

import html
import importlib.util
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIAGRAM_MARKER = "<!-- architecture-diagram -->"
COMPATIBILITY_MARKER = "<!-- compatibility-matrix -->"
GENERATED_PAGES = {"reference/environment.md": "environment_reference", "reference/tasks.md": "task_reference"}
# The data flows that depends_on does not show: who reads and writes what.
DATA_FLOWS = (
    ("web", "db"), ("web", "redis"), ("web", "clickhouse"), ("web", "kafka"),
    ("worker", "db"), ("worker", "redis"), ("worker", "clickhouse"), ("worker", "kafka"),
    ("plugins", "db"), ("plugins", "redis"), ("plugins", "clickhouse"), ("plugins", "kafka"),
)
CONSUMES = ("clickhouse", "kafka")  # Kafka-engine tables: ClickHouse reads Kafka directly


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent if config.get("config_file_path") else ROOT


# ----------------------------------------------------------------------------- mkdocs hooks
def on_files(files, config):
    from mkdocs.structure.files import File

    root = _root(config)
    for path, builder in GENERATED_PAGES.items():
        files.append(File.generated(config, path, content=globals()[builder](root)))
    return files


def on_page_markdown(markdown, page, config, files):
    if DIAGRAM_MARKER in markdown:
        markdown = markdown.replace(DIAGRAM_MARKER, architecture_svg(_root(config)))
    if COMPATIBILITY_MARKER in markdown:
        markdown = markdown.replace(COMPATIBILITY_MARKER, compatibility_matrix(_root(config)))
    return markdown


def on_serve(server, config, builder):
    root = _root(config)
    for source in ("variables.yml", "compatibility.yml", "tasks.py", "docker-compose.yml", "posthog_compose"):
        server.watch(str(root / source))
    return server


# ----------------------------------------------------------------------------- compatibility matrix
def compatibility_matrix(root: Path) -> str:
    """The tables of docs/compatibility.md, from compatibility.yml."""
    from posthog_compose.compatibility import SERVICE_LABELS, load

    matrix = load(root)
    lines = [f"Generated from `compatibility.yml` at build time ({len(matrix.rows)} PostHog version ranges).", ""]
    for row in matrix.rows:
        period = f" ({row.period})" if row.period else ""
        lines += [f"### {row.label}{period}", "", f"PostHog versions `{row.posthog}`.", "",
                  "| Datastore | Accepted versions | Confidence | Source |", "|---|---|---|---|"]
        for service, accepts in row.accepts.items():
            note = f" {accepts.note}" if accepts.note else ""
            lines.append(f"| {SERVICE_LABELS[service]} | `{accepts.range}` | {accepts.confidence} | "
                         f"{accepts.source}{note} |")
        lines.append("")
        if row.pinned:
            lines += ["| Datastore | Pinned by this kit | Why |", "|---|---|---|"]
            for service, pin in row.pinned.items():
                lines.append(f"| {SERVICE_LABELS[service]} | `{pin['image']}` | {pin['why']} |")
            lines.append("")
        services = {process: [s for s, p in matrix.processes.items() if p == process] for process in row.reads}
        lines += ["| Process | Compose services | Names it reads | Source |", "|---|---|---|---|"]
        for process, names in row.reads.items():
            lines.append(f"| {process} | {', '.join(f'`{s}`' for s in services[process])} | "
                         f"{', '.join(f'`{n}`' for n in names)} | {row.read_sources[process]} |")
        lines.append("")
        for name, why in row.carried.items():
            lines += [f"Carried although this version does not read it: `{name}`. {why}", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- environment reference
def environment_reference(root: Path) -> str:
    # Absolute imports: mkdocs loads this file as a standalone hooks module.
    from posthog_compose.formats import FORMATS
    from posthog_compose.manifest import load

    manifest = load(root)
    lines = [
        "# Environment variables",
        "",
        f"Generated from `variables.yml` at build time: {len(manifest.variables)} variables in "
        f"{len(manifest.grouped())} categories. `invoke init` writes them to `.env`; `invoke config-check` "
        "checks every value against its format; `invoke add-env-var` adds a new one everywhere at once.",
        "",
    ]
    for category, variables in manifest.grouped():
        lines += [f"## {category.name}", "", category.description, ""]
        for v in variables:
            default = "*generated by `invoke init`*" if v.secret else (f"`{v.default}`" if v.default else "*(empty)*")
            lines += [
                f"### `{v.name}` {{#{v.name.lower()}}}",
                "",
                v.description,
                "",
                f"- **Default**: {default}",
                f"- **Format**: {v.format}: {FORMATS[v.format].description}",
                f"- **Secret**: {'yes: never printed, never committed' if v.secret else 'no'}",
                f"- **Required**: {'yes' if v.required else 'no'}",
                f"- **Used by**: {', '.join(f'`{s}`' for s in v.services)}",
            ]
            if v.derive:
                lines.append(f"- **Derived from**: `{v.derive}`")
            if v.production:
                lines.append(f"- **Production**: {v.production}")
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- task reference
def load_collection(root: Path):
    from invoke import Collection

    spec = importlib.util.spec_from_file_location("deployment_tasks", root / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def task_reference(root: Path) -> str:
    collection = load_collection(root)
    lines = ["# Tasks", "", "Generated from the Invoke collection in `tasks.py` at build time. "
             "`invoke --list` shows the same list; `invoke --help TASK` the same options.", ""]
    for name in sorted(collection.task_names):
        task = collection[name]
        doc = inspect.getdoc(task.body) or ""
        aliases = f" (alias: {', '.join(f'`invoke {a}`' for a in task.aliases)})" if task.aliases else ""
        lines += [f"## `invoke {name}`{aliases} {{#{name}}}", "", doc, ""]
        parameters = [p for p in inspect.signature(task.body).parameters.values() if p.name != "c"]
        if parameters:
            lines += ["| Option | Default | Help |", "| --- | --- | --- |"]
            for parameter in parameters:
                flag = "--" + parameter.name.replace("_", "-")
                default = parameter.default
                shown = "" if default in (None, "") else (f"`{default}`" if not isinstance(default, bool) else
                                                         ("on (`--no-" + parameter.name.replace("_", "-") + "` turns it off)"
                                                          if default else "off"))
                help_text = (task.help.get(parameter.name) or "").replace("|", "\\|")
                lines.append(f"| `{flag}` | {shown} | {help_text} |")
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- architecture diagram
def _layers(services: dict) -> list[list[str]]:
    """Rows of the diagram: the PostHog services (those sharing web's image) on top, ordered by
    their start order; the others below, each one row above the deepest service it needs."""
    depth: dict[str, int] = {}

    def level(name: str, seen=()) -> int:
        if name not in depth:
            depends = services.get(name, {}).get("depends_on") or {}
            parents = [d for d in depends if d in services and d not in seen]
            depth[name] = 1 + max((level(p, seen + (name,)) for p in parents), default=-1)
        return depth[name]

    for name in services:
        level(name)
    app_image = services.get("web", {}).get("image")
    app = sorted((n for n in services if services[n].get("image") == app_image), key=lambda n: depth[n])
    rest = [n for n in services if n not in app]
    rows: list[list[str]] = [[] for _ in range(max((depth[n] for n in rest), default=0) + 1)]
    for name in rest:
        rows[depth[name]].append(name)
    return [app] + [row for row in reversed(rows) if row]


def architecture_svg(root: Path) -> str:
    import yaml

    data = yaml.safe_load((root / "docker-compose.yml").read_text(encoding="utf-8"))
    services = data.get("services") or {}
    rows = _layers(services)
    width, box_w, box_h, row_h = 900, 190, 64, 120
    height = row_h * len(rows) + 40
    position: dict[str, tuple[float, float]] = {}
    for r, row in enumerate(rows):
        for i, name in enumerate(row):
            x = width * (i + 1) / (len(row) + 1)
            position[name] = (x, 40 + r * row_h + box_h / 2)

    def image_of(name: str) -> str:
        image = str(services[name].get("image", ""))
        return image.split("${", 1)[-1].split(":", 1)[0].split("}", 1)[0] if "${" in image else image

    def line(a: str, b: str, css: str, label: str = "") -> str:
        (x1, y1), (x2, y2) = position[a], position[b]
        if y1 == y2:  # same row: from side to side
            step = box_w / 2 if x2 > x1 else -box_w / 2
            x1, x2 = x1 + step, x2 - step
        else:  # from the bottom of the upper box to the top of the lower one
            step = box_h / 2 if y2 > y1 else -box_h / 2
            y1, y2 = y1 + step, y2 - step
        text = (f'<text x="{(x1 + x2) / 2 + 6:.0f}" y="{(y1 + y2) / 2:.0f}" class="edge-label">{html.escape(label)}</text>'
                if label else "")
        return (f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" class="{css}" '
                f'marker-end="url(#arrow)"><title>{a} → {b}</title></line>{text}')

    edges = []
    drawn = set()
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            if dependency in position:
                label = "consumes (Kafka engine)" if (name, dependency) == CONSUMES else ""
                edges.append(line(name, dependency, "edge consumes" if label else "edge", label))
                drawn.add((name, dependency))
    for a, b in DATA_FLOWS:
        if a in position and b in position and (a, b) not in drawn:
            edges.append(line(a, b, "edge data"))
    nodes = []
    for name, (x, y) in position.items():
        # The published port gets a line of its own: beside the image name it overflows the box.
        published = (f'<text x="{x:.0f}" y="{y + 28:.0f}" class="image">published: ${{WEB_PORT}}</text>'
                     if services[name].get("ports") else "")
        nodes.append(
            f'<g class="service" id="service-{name}"><rect x="{x - box_w / 2:.0f}" y="{y - box_h / 2:.0f}" '
            f'width="{box_w}" height="{box_h}" rx="8"/>'
            f'<text x="{x:.0f}" y="{y - 8:.0f}" class="name">{html.escape(name)}</text>'
            f'<text x="{x:.0f}" y="{y + 12:.0f}" class="image">{html.escape(image_of(name))}</text>{published}</g>')
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" class="architecture" '
        f'aria-label="Services of the deployment and how they depend on each other">'
        '<style>.service rect{fill:#fff7e6;stroke:#c25e00;stroke-width:1.5}'
        '.name{font:bold 15px sans-serif;text-anchor:middle}.image{font:11px monospace;text-anchor:middle;fill:#555}'
        '.edge{stroke:#333;stroke-width:1.4}.edge.data{stroke:#999;stroke-dasharray:4 4}'
        '.edge.consumes{stroke:#c25e00;stroke-width:2.2}.edge-label{font:12px sans-serif;fill:#c25e00}</style>'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>'
        + "".join(edges) + "".join(nodes) + "</svg>"
    )
