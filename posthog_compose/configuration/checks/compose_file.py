"""docker-compose.yml's rules: the fixed services, what web waits for, the data volumes and
their mounts, references instead of literal secrets; and the rules of the edge, the disks and the
external datastores, which live in their own modules.
"""

from __future__ import annotations

import re
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.compose_effective import _project_volumes
from posthog_compose.configuration.checks.findings import ANY_REFERENCE_RE, COMPOSE, ENV, _Report


FIXED_SERVICES = ("db", "redis", "clickhouse", "zookeeper", "kafka", "web", "worker", "plugins")
WEB_DEPENDENCIES = ("db", "redis", "clickhouse", "kafka")
#: Never a dependency of web: they wait for web's migrations (the worker's launcher exits while one is pending).
WEB_MUST_NOT_WAIT_FOR = ("worker", "plugins")
DATA_VOLUMES = {  # volume -> (service, mount path)
    "postgres-data": ("db", "/var/lib/postgresql/data"),
    "clickhouse-data": ("clickhouse", "/var/lib/clickhouse"),
    "zookeeper-data": ("zookeeper", "/var/lib/zookeeper/data"),
    "zookeeper-logs": ("zookeeper", "/var/lib/zookeeper/log"),
    "kafka-data": ("kafka", "/var/lib/kafka/data"),
}
REFERENCE_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^}]*)?\}$")


# ----------------------------------------------------------------------------- docker-compose.yml
def _check_compose_file(root: Path, manifest, report: _Report):
    from posthog_compose.configuration import compose

    try:
        document = compose.load_document(root)
    except OperatorError as exc:
        report.error("compose-file", COMPOSE, None, "", str(exc).split(": ", 1)[-1], "")
        return None
    services = document.services if isinstance(document.services, dict) else {}
    for name in FIXED_SERVICES:
        if name not in services:
            report.error("compose-services", COMPOSE, document.line_of("services"), name,
                         "service is missing (PostHog expects the eight fixed service names)",
                         f"restore `{name}` from git: git checkout -- {COMPOSE}")
    for name, service in services.items():
        if not isinstance(service, dict):
            continue
        environment = service.get("environment") or {}
        items = environment.items() if isinstance(environment, dict) else (
            (item.split("=", 1)[0], item.split("=", 1)[1] if "=" in item else None) for item in environment)
        for key, value in items:
            if value is None or not REFERENCE_RE.match(str(value)):
                report.error("compose-literal", COMPOSE, document.line_of("services", name, "environment", key)
                             or document.line_of("services", name, "environment"), f"{name}.{key}",
                             "has a literal value in `environment:`; all configuration belongs in .env",
                             f"write `{key}: ${{{key}}}` and add the variable with `invoke add-env-var`")
    web = services.get("web") if isinstance(services.get("web"), dict) else None
    if web is not None:
        depends = web.get("depends_on") or {}
        depends = set(depends) if isinstance(depends, (dict, list)) else set()
        for dependency in WEB_DEPENDENCIES:
            if dependency not in depends:
                report.error("compose-depends", COMPOSE, document.line_of("services", "web", "depends_on")
                             or document.line_of("services", "web"), f"web -> {dependency}",
                             "depends_on edge is missing (web would start before its dependency)",
                             f"add `{dependency}: {{condition: service_healthy}}` under web.depends_on")
        for dependency in WEB_MUST_NOT_WAIT_FOR:
            if dependency in depends:
                report.error("compose-depends", COMPOSE, document.line_of("services", "web", "depends_on", dependency)
                             or document.line_of("services", "web"), f"web -> {dependency}",
                             f"web waits for {dependency}, which waits for web's migrations: a first start or an "
                             "upgrade with a migration never comes up",
                             f"remove {dependency} from web.depends_on")
    volumes = document.data.get("volumes") or {}
    for volume, (service, target) in DATA_VOLUMES.items():
        mounts = (services.get(service) or {}).get("volumes") or [] if isinstance(services.get(service), dict) else []
        mounted = any(isinstance(m, str) and m.split(":")[:2] == [volume, target] for m in mounts) or any(
            isinstance(m, dict) and m.get("source") == volume and m.get("target") == target for m in mounts)
        if volume not in volumes or not mounted:
            report.error("compose-volumes", COMPOSE, document.line_of("volumes") or document.line_of("services", service),
                         volume, f"data volume is missing or renamed (must be declared and mounted at {service}:{target})",
                         "restore the volume name; a renamed volume starts empty and the old data is orphaned")
    text = document.path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        for name in ANY_REFERENCE_RE.findall(line):
            if name not in manifest.by_name:
                report.error("compose-unknown-variable", COMPOSE, number, name,
                             "is referenced but not in the manifest, so nothing documents or checks it",
                             "add it with `invoke add-env-var`")
    return document


def _check_edge_and_disk(root: Path, env, values, document, report: _Report, environ) -> None:
    """The rules of the edge proxy (HTTPS, cookies, COMPOSE_FILE) and of log rotation, kept in their modules."""
    from posthog_compose.configuration import access, edge, logrotation

    edge.check(root, env, values, report, environ)
    access.check(env, values, document, report)
    logrotation.check(root, document, values, report)
    _check_external(root, env, values, report, environ)


def _check_external(root: Path, env, values, report: _Report, environ) -> None:
    """External datastores (rules in datastores.py), and a local volume left behind by one."""
    from posthog_compose.configuration import compose
    from posthog_compose.configuration import datastores

    datastores.check(root, env, values, report)
    gone = [name for name in datastores.external(values) if datastores.VOLUMES[name]]
    if not gone:
        return
    project = compose.recorded_project_name(root) or values.get("COMPOSE_PROJECT_NAME") or "posthog"
    left = _project_volumes(project, environ) or set()
    for name in gone:
        for volume in datastores.VOLUMES[name]:
            if f"{project}_{volume}" in left:
                variable = datastores.MODE_VARIABLE[name]
                report.warning("external-volume", ENV, env.line_of(variable), variable,
                               f"is external, but the local volume {project}_{volume} still holds the data of the "
                               f"local {datastores.TITLE[name]}: nothing uses it now",
                               f"once the external server has everything, remove it: docker volume rm {project}_{volume}")
