"""The files a deployment's configuration refers to beyond .env: the compose files Compose reads
(COMPOSE_FILE's list, or docker-compose.yml and its override), the files and folders those bind-mount
or read from the deployment (volumes, env_file, configs, secrets), and the CA files under
datastore-ca/ that .env names (the *_CA variables and the CA of each external datastore's URL).

An archive carries them (contents.CONFIG_FILES and CONFIG_DIRS); before a restore writes anything,
``missing`` names each one that is neither in the archive nor in the checkout it is restored into,
so that the restored deployment does not stop on a file it lacks after its data was replaced.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Callable

#: The compose files Compose reads when COMPOSE_FILE is not set (the kit's names; config-check
#: refuses the other default names).
DEFAULT_COMPOSE = ("docker-compose.yml", "docker-compose.override.yml")
#: .env variables that name a CA file as the containers see it.
CA_VARIABLES = ("EXTERNAL_CA_FILE", "CLICKHOUSE_CA")


def _inside(path: str) -> str | None:
    """``path`` relative to the deployment, normalised, or None when it lies elsewhere (an absolute
    path, above the deployment, or interpolated by Compose: not a file of the deployment)."""
    if not path or "$" in path or path.startswith(("/", "~")):
        return None
    normal = posixpath.normpath(path)
    if normal == "." or normal.startswith("../") or normal == "..":
        return None
    return normal


def _ca_files(values: dict[str, str]) -> list[tuple[str, str]]:
    from posthog_compose.configuration import datastores

    named = [(variable, values.get(variable) or "") for variable in CA_VARIABLES]
    named += [(endpoint.variable, endpoint.ca_path or "") for endpoint in datastores.endpoints(values)]
    found = []
    for variable, container_path in named:
        host = datastores.host_path(Path(""), container_path) if container_path else None
        if host is not None:
            found.append((host.as_posix(), f"{variable} in .env"))
    return found


def _compose_sources(name: str, text: bytes) -> tuple[list[tuple[str, str]], str | None]:
    """The deployment's files compose file ``name`` uses, or the reason it is not a Compose file."""
    import yaml

    from posthog_compose.configuration.compose import load_compose_yaml

    try:
        document = load_compose_yaml(text)  # Compose's own tags (`!reset` in the proxy's overlay) included
    except (yaml.YAMLError, RecursionError, ValueError):
        return [], "is not valid YAML"
    if not isinstance(document, dict) or not isinstance(document.get("services", {}), dict):
        return [], "is not a Compose file (no services mapping)"
    found: list[tuple[str, str]] = []

    def add(source: object, what: str) -> None:
        relative = _inside(source) if isinstance(source, str) else None
        if relative:
            found.append((relative, f"{what} in {name}"))

    for service_name, service in (document.get("services") or {}).items():
        if not isinstance(service, dict):
            return [], f"is not a Compose file (service {str(service_name)[:40]!r} is not a mapping)"
        volumes = service.get("volumes")
        for volume in volumes if isinstance(volumes, list) else []:
            if isinstance(volume, str) and volume.startswith("."):
                add(volume.split(":", 1)[0], f"a volume of {service_name}")
            elif isinstance(volume, dict) and volume.get("type") == "bind":
                add(volume.get("source"), f"a volume of {service_name}")
        env_files = service.get("env_file") or []
        for entry in [env_files] if isinstance(env_files, str) else env_files if isinstance(env_files, list) else []:
            if isinstance(entry, dict) and entry.get("required") is not False:
                add(entry.get("path"), f"env_file of {service_name}")
            elif isinstance(entry, str):
                add(entry, f"env_file of {service_name}")
    for section in ("configs", "secrets"):
        entries = document.get(section)
        for key, entry in (entries.items() if isinstance(entries, dict) else ()):
            if isinstance(entry, dict):
                add(entry.get("file"), f"{section}.{key}")
    return found, None


def _host_file(path: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
    """The bytes of a regular file on this host, or None (missing, unreadable, or larger than ``limit``:
    a compose file that large is not one, and /proc or a log must not be read whole)."""
    try:
        if not Path(path).is_file():
            return None
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError:
        return None
    return data if len(data) <= limit else None


def _compose_files(root: Path, values: dict[str, str], exists: Callable[[str], bool]) -> list[tuple[str, str]]:
    """The compose files Compose reads: each as a path relative to the deployment when it lies inside,
    else as the host path it names (relative to the deployment, or absolute)."""
    from posthog_compose.configuration import edge

    listed = edge.compose_files(values)
    if not listed:
        return [(name, "Compose's default") for name in DEFAULT_COMPOSE if name == DEFAULT_COMPOSE[0] or exists(name)]
    found = []
    for item in listed:
        inside = _inside(item) if "$" not in item else None
        found.append((inside or str(Path(root) / item), "COMPOSE_FILE in .env"))
    return found


def missing(root: Path, values: dict[str, str], read: Callable[[str], bytes | None], exists: Callable[[str], bool],
            absent: str = "is in neither the archive nor this checkout") -> list[str]:
    """One line for each file the configuration with .env ``values`` refers to that ``exists`` does
    not find (``read`` gives a compose file's bytes, or None), and for each compose file that is not
    one. A compose file outside the deployment must exist on this host."""
    problems: list[str] = []
    wanted = _compose_files(root, values, exists)
    for name, why in list(wanted):
        if name.startswith("/"):  # outside the deployment: only this host can have it
            wanted.remove((name, why))
            text = _host_file(name)
            if text is None:
                problems.append(f"{name} ({why}) is not a readable file of at most 16 MiB on this host")
                continue
        else:
            text = read(name)
        if text is None:
            continue
        sources, problem = _compose_sources(name, text)
        if problem:
            problems.append(f"{name} {problem}")
        wanted.extend(sources)
    wanted.extend(_ca_files(values))
    seen: set[str] = set()
    for path, why in wanted:
        if path not in seen and not exists(path):
            problems.append(f"{path} ({why}) {absent}")
        seen.add(path)
    return problems


def uncarried(root: Path, values: dict[str, str], carried: set[str]) -> list[str]:
    """For a backup: each file the configuration refers to that the archive will not hold (outside
    what a backup takes, or missing here); a restore on a new host would refuse without it."""
    root = Path(root)

    def exists(name: str) -> bool:
        return name in carried or any(path.startswith(name + "/") for path in carried) or (root / name).is_dir()

    def read(name: str) -> bytes | None:
        try:
            return (root / name).read_bytes() if (root / name).is_file() else None
        except OSError:
            return None

    return missing(root, values, read, exists, "is not in the archive (missing here, or outside what a backup takes)")
