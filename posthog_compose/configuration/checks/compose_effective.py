"""What Compose will run: the compose sources' variables (unbraced, defaulted, not in
.env), the effective model Compose builds, and the project's volumes (a project that already has data).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.findings import ANY_REFERENCE_RE, COMPOSE, COMPOSE_OWN, ENV, _Report


# ----------------------------------------------------------------------------- what Compose will run
DATASTORES = ("db", "redis", "clickhouse", "zookeeper", "kafka")
UNBRACED_RE = re.compile(r"(?<!\$)(?:\$\$)*\$([A-Za-z_][A-Za-z0-9_]*)")
DEFAULTED_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?[-+]([^}]*)\}")


def _check_compose_sources(root: Path, manifest, values, report: _Report) -> None:
    """Rules on the text of every file Compose selects (docker-compose.yml, its override,
    COMPOSE_FILE's list): which files, references nobody documents, literal secrets."""
    from posthog_compose.configuration import compose

    try:
        files = compose.selected_files(root)
    except OperatorError as exc:
        report.error("compose-files", COMPOSE, None, "", str(exc).split(": ", 1)[-1] if str(exc).startswith(COMPOSE)
                     else str(exc), "")
        return
    secret_names = {v.name for v in manifest.secrets}
    secrets = [values[n] for n in secret_names if values and len(values.get(n) or "") >= 8]
    for path in files:
        name = _relative(root, path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            report.error("compose-files", name, None, "", f"cannot be read ({exc.strerror})",
                         "fix the path in COMPOSE_FILE or restore the file")
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            for variable in UNBRACED_RE.findall(line):
                report.error("compose-unbraced", name, number, variable,
                             f"is written as ${variable}; the checks and the manifest only know ${{{variable}}}",
                             f"write ${{{variable}}} (or $${variable} for a literal dollar in a command)")
            for variable, default in DEFAULTED_RE.findall(line):
                if variable in secret_names and default.strip():
                    report.error("compose-secret-default", name, number, variable,
                                 "has a default in the compose file: that literal becomes the secret when .env "
                                 "lacks it", f"write ${{{variable}}} and keep the value in .env only")
            if any(secret in line for secret in secrets):
                report.error("compose-literal-secret", name, number, "",
                             "holds the literal value of a secret from .env (committed files must not)",
                             "refer to the variable (${NAME}) instead, then rotate the secret")
            if path.name != COMPOSE:
                for variable in ANY_REFERENCE_RE.findall(line):
                    if variable not in manifest.by_name and not COMPOSE_OWN.match(variable):
                        report.error("compose-unknown-variable", name, number, variable,
                                     "is referenced but not in the manifest, so nothing documents or checks it",
                                     "add it with `invoke add-env-var`")


def _relative(root: Path, path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def _check_effective(root: Path, model: dict, report: _Report, environ: dict[str, str]) -> None:
    """Rules on the deployment as Compose will run it (every file merged, values interpolated)."""
    from posthog_compose.configuration import compose

    services = model.get("services") or {}
    name = model.get("name")
    recorded = compose.recorded_project_name(root)
    if name and recorded and name != recorded:
        has_data = _project_has_data(recorded, environ)
        message = (f"is {name!r}, but this deployment was started as {recorded!r}: the next `up` starts a second, "
                   "empty deployment" + (" while the data of the current one stays in its volumes" if has_data else ""))
        fix = f"set COMPOSE_PROJECT_NAME={recorded} in .env again (and keep `name:` in the compose files as it was)"
        if has_data is False:
            report.warning("project-name", ENV, None, "project name", message, fix)
        else:
            report.error("project-name", ENV, None, "project name", message, fix)
    for service_name, service in services.items():
        if not isinstance(service, dict):
            continue
        where = f"services.{service_name}"
        if service.get("privileged"):
            report.error("compose-privileged", COMPOSE, None, service_name, "runs privileged (full access to the host)",
                         f"remove `privileged: true` from {where}")
        for key in ("network_mode", "pid", "ipc", "userns_mode", "uts"):
            if str(service.get(key) or "") == "host":
                report.error("compose-host-namespace", COMPOSE, None, service_name,
                             f"shares the host's {key.replace('_mode', '')} namespace ({key}: host)",
                             f"remove `{key}: host` from {where}")
        dangerous = {c.upper().removeprefix("CAP_") for c in service.get("cap_add") or []} & {
            "ALL", "SYS_ADMIN", "SYS_PTRACE", "NET_ADMIN", "SYS_MODULE", "DAC_READ_SEARCH"}
        if dangerous:
            report.error("compose-capabilities", COMPOSE, None, service_name,
                         f"adds the capabilities {', '.join(sorted(dangerous))}", f"remove them from {where}.cap_add")
        for volume in service.get("volumes") or []:
            source = str(volume.get("source") or "") if isinstance(volume, dict) else ""
            if source.endswith("docker.sock") or source in ("/", "/etc", "/root", "/proc", "/sys"):
                report.error("compose-host-mount", COMPOSE, None, service_name,
                             f"mounts {source} from the host", f"remove that volume from {where}")
        if service_name in DATASTORES and service.get("ports"):
            published = [str(p.get("published") or p.get("target")) for p in service["ports"] if isinstance(p, dict)]
            report.error("compose-datastore-port", COMPOSE, None, service_name,
                         f"publishes port(s) {', '.join(published)} on the host: the datastore is reachable from "
                         "outside the deployment", f"remove `ports:` from {where} (services reach it by name)")
        for dependency, condition in (service.get("depends_on") or {}).items():
            if not isinstance(condition, dict) or condition.get("condition") != "service_healthy":
                continue
            if dependency not in services and condition.get("required") is False:
                continue  # an external datastore: its service is left out (datastores.py)
            target = services.get(dependency) or {}
            check = target.get("healthcheck") if isinstance(target, dict) else None
            if not check or check.get("disable") or (check.get("test") or [""])[0] == "NONE":
                report.error("compose-healthcheck", COMPOSE, None, dependency,
                             f"has no healthcheck, but {service_name} waits for it to be healthy: `up` never finishes",
                             f"restore the healthcheck of {dependency} from git")


def _project_volumes(project: str, environ: dict[str, str]) -> set[str] | None:
    """The volumes the engine holds for ``project`` (None when the engine cannot be asked)."""
    try:
        result = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
                                capture_output=True, text=True, timeout=10, env={**os.environ, **environ})
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(result.stdout.split()) if result.returncode == 0 else None


def _project_has_data(project: str, environ: dict[str, str]) -> bool | None:
    """Whether the engine holds volumes of ``project`` (None when the engine cannot be asked)."""
    volumes = _project_volumes(project, environ)
    return None if volumes is None else bool(volumes)
