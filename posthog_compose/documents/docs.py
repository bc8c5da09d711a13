"""The handbook's generated parts, as mkdocs hooks: the environment variable reference (from the
manifest), the task reference and the task table (from the Invoke collection), config-check's rule
table (from the checks, see rules.py), the disk thresholds (facts.py), the kit's version in the
footer and the markup for small screens (layout.py), and the architecture diagram (an inline SVG
computed from docker-compose.yml). Nothing is written into docs/; `mkdocs serve`
rebuilds when any source changes. No JavaScript and no network are needed to view them."""

from __future__ import annotations

import html
import importlib.util
import inspect
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DIAGRAM_MARKER = "<!-- architecture-diagram -->"
COMPATIBILITY_MARKER = "<!-- compatibility-matrix -->"
TASK_TABLE_MARKER = "<!-- task-table -->"
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
def on_config(config):
    from posthog_compose.documents.layout import kit_version

    # The readthedocs theme prints `copyright` in every page's footer: the kit's version goes there.
    version = kit_version(_root(config))
    config["copyright"] = f"PostHog Compose kit {version}"
    config["extra"]["kit_version"] = version
    return config


def on_page_content(html, page, config, files):
    from posthog_compose.documents.layout import for_small_screens

    return for_small_screens(html)


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
    if TASK_TABLE_MARKER in markdown:
        markdown = markdown.replace(TASK_TABLE_MARKER, task_table(_root(config), "reference/tasks.md"))
    from posthog_compose.documents.facts import DISK_MARKER, disk_thresholds
    from posthog_compose.documents.rules import RULES_MARKER, rule_table

    if RULES_MARKER in markdown:
        markdown = markdown.replace(RULES_MARKER, rule_table(_root(config)))
    if DISK_MARKER in markdown:
        markdown = markdown.replace(DISK_MARKER, disk_thresholds(_root(config)))
    return markdown


def on_serve(server, config, builder):
    root = _root(config)
    for source in ("variables.yml", "compatibility.yml", "tasks.py", "docker-compose.yml", "posthog_compose"):
        server.watch(str(root / source))
    return server


# ----------------------------------------------------------------------------- compatibility matrix
def compatibility_matrix(root: Path) -> str:
    """The tables of docs/compatibility.md, from compatibility.yml (checked against its schema by ``load``).
    Every text of the file is escaped where it lands: a cell's `|`, `<`, link brackets and line breaks
    cannot turn into markup or a new row."""
    from posthog_compose.configuration.compatibility import SERVICE_LABELS, load
    from posthog_compose.configuration.formats import markdown_code, markdown_inline

    def cell(text) -> str:
        return markdown_inline(text, table=True)

    def code(text) -> str:
        return markdown_code(text, table=True)

    matrix = load(root)
    lines = [f"Generated from `compatibility.yml` at build time ({len(matrix.rows)} PostHog version ranges).", ""]
    for row in matrix.rows:
        period = f" ({row.period})" if row.period else ""
        lines += [f"### {markdown_inline(row.label + period)}", "", f"PostHog versions {markdown_code(row.posthog)}.", "",
                  "| Datastore | Accepted versions | Confidence | Source |", "|---|---|---|---|"]
        for service, accepts in row.accepts.items():
            note = f" {accepts.note}" if accepts.note else ""
            lines.append(f"| {SERVICE_LABELS[service]} | {code(accepts.range)} | {cell(accepts.confidence)} | "
                         f"{cell(accepts.source + note)} |")
        lines.append("")
        if row.pinned:
            lines += ["| Datastore | Pinned by this kit | Why |", "|---|---|---|"]
            for service, pin in row.pinned.items():
                lines.append(f"| {SERVICE_LABELS[service]} | {code(pin['image'])} | {cell(pin['why'])} |")
            lines.append("")
        services = {process: [s for s, p in matrix.processes.items() if p == process] for process in row.reads}
        lines += ["| Process | Compose services | Names it reads | Source |", "|---|---|---|---|"]
        for process, names in row.reads.items():
            lines.append(f"| {cell(process)} | {', '.join(code(s) for s in services[process])} | "
                         f"{', '.join(code(n) for n in names)} | {cell(row.read_sources[process])} |")
        lines.append("")
        for name, why in row.carried.items():
            lines += [f"Carried although this version does not read it: {markdown_code(name)}. {markdown_inline(why)}", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- environment reference
def environment_reference(root: Path) -> str:
    # Absolute imports: mkdocs loads this file as a standalone hooks module.
    from posthog_compose.configuration.formats import FORMATS, markdown_code as code, markdown_inline as md
    from posthog_compose.configuration.manifest import load

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
        lines += [f"## {md(category.name)}", "", md(category.description), ""]
        for v in variables:
            default = "*generated by `invoke init`*" if v.secret else (code(v.default) if v.default else "*(empty)*")
            lines += [
                f"### `{v.name}` {{#{v.name.lower()}}}",
                "",
                md(v.description),
                "",
                f"- **Default**: {default}",
                f"- **Format**: {v.format}: {FORMATS[v.format].description}",
                f"- **Secret**: {'yes: never printed, never committed' if v.secret else 'no'}",
                f"- **Required**: {'yes' if v.required else 'no'}",
                f"- **Used by**: {', '.join(code(s) for s in v.services)}",
            ]
            if v.derive:
                lines.append(f"- **Derived from**: {code(v.derive)}")
            if v.production:
                lines.append(f"- **Production**: {md(v.production)}")
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- task reference
def load_collection(root: Path):
    from invoke import Collection

    spec = importlib.util.spec_from_file_location("deployment_tasks", root / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def first_line(task) -> str:
    """A task's first docstring line: what `invoke --list` shows beside its name."""
    return (inspect.getdoc(task.body) or "").strip().splitlines()[0] if inspect.getdoc(task.body) else ""


def task_table(root: Path, reference: str) -> str:
    """Every task with its first docstring line, each linking to its entry in the task reference."""
    collection = load_collection(root)
    lines = [f"Generated from the Invoke collection in `tasks.py` at build time ({len(collection.task_names)} tasks).",
             "", "| Task | What it does |", "| --- | --- |"]
    for name in sorted(collection.task_names):
        task = collection[name]
        aliases = f" ({', '.join(f'`{a}`' for a in task.aliases)})" if task.aliases else ""
        summary = first_line(task).replace("|", chr(92) + "|")
        lines.append(f"| [`invoke {name}`]({reference}#{name}){aliases} | {summary} |")
    return "\n".join(lines) + "\n"


def task_reference(root: Path) -> str:
    collection = load_collection(root)
    lines = ["# Tasks", "", "Generated from the Invoke collection in `tasks.py` at build time. "
             "`invoke --list` shows the same list; `invoke --help TASK` the same options.", "",
             task_table(root, ""), ""]
    for name in sorted(collection.task_names):
        task = collection[name]
        doc = inspect.getdoc(task.body) or ""
        aliases = f" (alias: {', '.join(f'`invoke {a}`' for a in task.aliases)})" if task.aliases else ""
        lines += [f"## `invoke {name}`{aliases} {{#{name}}}", "", doc, ""]
        # Invoke's own view of the options: the flags it parses (short ones included) and its defaults.
        arguments = task.get_arguments(ignore_unknown_help=True)
        if arguments:
            lines += ["| Option | Default | Help |", "| --- | --- | --- |"]
            for argument in arguments:
                lines.append(f"| {_flags(argument)} | {_default(argument)} | {(argument.help or '').replace('|', chr(92) + '|')} |")
            lines.append("")
    return "\n".join(lines)


def _flags(argument) -> str:
    if argument.positional:
        return f"`{argument.name.upper()}` (positional)"
    names = sorted(argument.names, key=len)
    shown = ", ".join(f"`-{n}`" if len(n) == 1 else f"`--{n}`" for n in names)
    return shown + (" (repeatable)" if argument.kind is list else "")


def _default(argument) -> str:
    default = argument.default
    if argument.positional:
        return "required"
    if argument.kind is bool:
        return f"on (`--no-{argument.name}` turns it off)" if default else "off"
    if default in (None, "", []) or default is inspect.Parameter.empty:
        return ""
    return f"`{default}`"


# ----------------------------------------------------------------------------- architecture diagram
# Layout: three rows. The PostHog services (those sharing web's image) on top; the services they
# use in the middle; the rest (ZooKeeper) below. Edges only join neighbouring boxes of one row or
# boxes of neighbouring rows, so no line can pass behind a box; the legend lists exactly the kinds
# of arrow the drawing contains.
BOX_W, BOX_H, ROW_H, MARGIN = 170, 64, 150, 30
GAP, LABEL_GAP = 50, 150  # between boxes of a row; around a labelled arrow inside a row
EDGE_KINDS = {  # class -> legend text
    "edge": "depends_on: starts after it, waits until it is healthy",
    "edge data": "connects to it, without a start-order dependency",
    "edge consumes": "ClickHouse consumes Kafka directly (Kafka-engine tables)",
}


def _edges(services: dict) -> list[tuple[str, str, str]]:
    """(from, to, class) for every arrow: depends_on, then the data flows depends_on does not show."""
    edges = []
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            if dependency in services:
                edges.append((name, dependency, "edge consumes" if (name, dependency) == CONSUMES else "edge"))
    shown = {(a, b) for a, b, _ in edges}
    edges += [(a, b, "edge data") for a, b in DATA_FLOWS if a in services and b in services and (a, b) not in shown]
    return edges


def _rows(services: dict, edges) -> list[list[str]]:
    """The PostHog services, the services they use, the rest; each row ordered so that an arrow
    inside a row joins neighbours (the service that depends on another sits left of it)."""
    app_image = services.get("web", {}).get("image")
    app = [n for n in services if services[n].get("image") == app_image]
    used = [n for n in services if n not in app and any(a in app and b == n for a, b, _ in edges)]
    rest = [n for n in services if n not in app and n not in used]

    def order(row: list[str]) -> list[str]:
        inside = [(a, b) for a, b, _ in edges if a in row and b in row]
        depth: dict[str, int] = {}

        def level(name: str, seen=()) -> int:
            if name not in depth:
                depth[name] = 1 + max((level(b, seen + (name,)) for a, b in inside if a == name and b not in seen),
                                      default=-1)
            return depth[name]

        linked = [n for n in row if any(n in pair for pair in inside)]
        alone = [n for n in row if n not in linked]
        # The services the others wait for in the middle, their dependents on both sides: worker and
        # plugins both wait for web, so worker, web, plugins keeps every arrow between neighbours.
        if app and row is app:
            ranked = sorted(row, key=level)
            roots = [n for n in ranked if level(n) == 0]
            others = [n for n in ranked if level(n) != 0]
            return others[:len(others) // 2] + roots + others[len(others) // 2:]
        return alone + sorted(linked, key=lambda n: -level(n))

    return [r for r in (order(app), order(used), order(rest)) if r]


def architecture_svg(root: Path) -> str:
    import yaml

    data = yaml.safe_load((root / "docker-compose.yml").read_text(encoding="utf-8"))
    services = data.get("services") or {}
    edges = _edges(services)
    rows = _rows(services, edges)
    labelled = {(a, b) for a, b, css in edges if css == "edge consumes"}

    # Horizontal positions: boxes side by side, a wider gap where a labelled arrow runs inside the row.
    centre: dict[str, tuple[float, float]] = {}
    widths = []
    for r, row in enumerate(rows):
        x, xs = 0.0, []
        for i, name in enumerate(row):
            if i:
                pair = {(row[i - 1], name), (name, row[i - 1])}
                x += LABEL_GAP if pair & labelled else GAP
            xs.append(x + BOX_W / 2)
            x += BOX_W
        widths.append(x)
        for name, cx in zip(row, xs):
            centre[name] = (cx, MARGIN + r * ROW_H + BOX_H / 2)
    width = max(widths) + 2 * MARGIN
    for r, row in enumerate(rows):
        shift = (width - widths[r]) / 2
        for name in row:
            centre[name] = (centre[name][0] + shift, centre[name][1])
    # A bottom row whose boxes are used only from the row above sits under the boxes that use it.
    if len(rows) == 3 and len(rows[2]) == 1:
        (name,) = rows[2]
        parents = [centre[a][0] for a, b, _ in edges if b == name and a in rows[1]]
        if parents:
            centre[name] = (sum(parents) / len(parents), centre[name][1])
    row_of = {name: r for r, row in enumerate(rows) for name in row}

    # Attachment points spread along the box edge, so arrowheads do not pile up on one point.
    down = [(a, b) for a, b, _ in edges if row_of[a] != row_of[b]]

    def spread(name: str, others: list[str]) -> dict[str, float]:
        others = sorted(others, key=lambda o: centre[o][0])
        left = centre[name][0] - BOX_W / 2
        return {o: left + (k + 1) * BOX_W / (len(others) + 1) for k, o in enumerate(others)}

    def vertical(a: str, b: str) -> tuple[float, float, float, float]:
        upper, lower = (a, b) if row_of[a] < row_of[b] else (b, a)
        x_upper = spread(upper, [o for u, o in down if u == upper] + [u for u, o in down if o == upper and row_of[u] > row_of[upper]])[lower]
        x_lower = spread(lower, [u for u, o in down if o == lower] + [o for u, o in down if u == lower and row_of[o] < row_of[lower]])[upper]
        y_upper, y_lower = centre[upper][1] + BOX_H / 2, centre[lower][1] - BOX_H / 2
        return (x_upper, y_upper, x_lower, y_lower) if upper == a else (x_lower, y_lower, x_upper, y_upper)

    lines, labels = [], []
    for a, b, css in edges:
        (xa, ya), (xb, yb) = centre[a], centre[b]
        if row_of[a] == row_of[b]:
            step = BOX_W / 2 if xb > xa else -BOX_W / 2
            x1, y1, x2, y2 = xa + step, ya, xb - step, yb
        else:
            x1, y1, x2, y2 = vertical(a, b)
        title = f"{a} → {b}" + (": consumes (Kafka engine)" if css == "edge consumes" else "")
        marker = "arrow-consumes" if css == "edge consumes" else "arrow"
        lines.append(f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" class="{css}" '
                     f'marker-end="url(#{marker})"><title>{html.escape(title)}</title></line>')
        if css == "edge consumes":
            labels.append(f'<text x="{(x1 + x2) / 2:.0f}" y="{y1 - 24:.0f}" class="edge-label">consumes'
                          f'<tspan x="{(x1 + x2) / 2:.0f}" dy="14">(Kafka engine)</tspan></text>')

    nodes = []
    for name, (x, y) in centre.items():
        # The published port gets a line of its own: beside the image name it overflows the box.
        published = (f'<text x="{x:.0f}" y="{y + 26:.0f}" class="image">published: ${{WEB_PORT}}</text>'
                     if services[name].get("ports") else "")
        nodes.append(
            f'<g class="service" id="service-{name}"><rect x="{x - BOX_W / 2:.0f}" y="{y - BOX_H / 2:.0f}" '
            f'width="{BOX_W}" height="{BOX_H}" rx="8"/>'
            f'<text x="{x:.0f}" y="{y - 8:.0f}" class="name">{html.escape(name)}</text>'
            f'<text x="{x:.0f}" y="{y + 10:.0f}" class="image">{html.escape(_image_variable(services[name]))}</text>'
            f'{published}</g>')

    # The legend: one line per kind of arrow actually drawn.
    kinds = [css for css in EDGE_KINDS if any(e[2] == css for e in edges)]
    legend_y = MARGIN + (len(rows) - 1) * ROW_H + BOX_H + 36
    legend = []
    for k, css in enumerate(kinds):
        y = legend_y + k * 22
        marker = "arrow-consumes" if css == "edge consumes" else "arrow"
        legend.append(f'<g class="legend-item" data-kind="{css}"><line x1="{MARGIN}" y1="{y}" x2="{MARGIN + 50}" '
                      f'y2="{y}" class="{css}" marker-end="url(#{marker})"/>'
                      f'<text x="{MARGIN + 62}" y="{y + 4}" class="legend">{html.escape(EDGE_KINDS[css])}</text></g>')
    height = legend_y + len(kinds) * 22
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'class="architecture" aria-label="Services of the deployment and how they depend on each other">'
        '<style>.service rect{fill:#fff7e6;stroke:#c25e00;stroke-width:1.5}'
        '.name{font:bold 15px sans-serif;text-anchor:middle}.image{font:11px monospace;text-anchor:middle;fill:#555}'
        '.edge{stroke:#333;stroke-width:1.3;fill:none}.edge.data{stroke:#777;stroke-dasharray:6 4}'
        '.edge.consumes{stroke:#d35400;stroke-width:3}'
        '.edge-label{font:12px sans-serif;fill:#d35400;text-anchor:middle}.legend{font:12px sans-serif;fill:#333}</style>'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker>'
        '<marker id="arrow-consumes" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="5" markerHeight="5" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#d35400"/></marker></defs>'
        + "".join(lines) + "".join(labels) + "".join(nodes) + "".join(legend) + "</svg>"
    )


def _image_variable(service: dict) -> str:
    image = str(service.get("image", ""))
    return image.split("${", 1)[-1].split(":", 1)[0].split("}", 1)[0] if "${" in image else image
