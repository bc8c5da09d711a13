"""Reading what the checklist judges: .env's values, config-check's findings, the certificates and,
unless told not to, what the engine runs.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.operations.engine import Runner
from posthog_compose.errors import OperatorError
from posthog_compose.operations.harden.checklist import OVERRIDE_FILE, State, TLS_TEMPLATE


# ----------------------------------------------------------------------------- reading the state
def read_state(root: Path, runner: Runner | None = None, without_engine: bool = False) -> State:
    from posthog_compose.configuration import checks
    from posthog_compose.configuration.envfile import EnvFile, env_path

    values = EnvFile.load(env_path(root)).resolved()
    override_path = root / OVERRIDE_FILE
    document = compose.load_document(root)
    effective = compose.effective_services(root)  # what Compose runs (hook: hostile input)
    published = {name: service.get("ports") or [] for name, service in (effective or document.services).items()
                 if isinstance(service, dict)}
    if effective is None:  # Compose cannot tell: the files COMPOSE_FILE adds still count (the proxy's ports)
        published = _with_overlays(root, values, published)
    state = State(root, values, checks.collect(root),
                  override_path.read_text(encoding="utf-8") if override_path.exists() else None,
                  (root / TLS_TEMPLATE).read_text(encoding="utf-8") if (root / TLS_TEMPLATE).exists() else "",
                  published)
    if runner is not None:
        from posthog_compose.operations import stack

        try:
            state.containers = {s.service: s.state for s in stack.service_states(root, runner)}
        except OperatorError as exc:
            if not without_engine:  # only a dry run may plan without the engine
                raise
            state.engine_error = str(exc)
    return state


def _with_overlays(root: Path, values: dict[str, str], published: dict[str, list]) -> dict[str, list]:
    """``published`` (docker-compose.yml's ports) with the ports of each further file COMPOSE_FILE lists,
    merged as Compose merges them: appended, or replacing with Compose's `!reset` (the proxy's overlay
    resets web's). An unreadable file adds nothing: config-check reports it."""
    import os

    import yaml

    from posthog_compose.configuration import edge

    merged = {name: list(ports) for name, ports in published.items()}
    for name in edge.compose_files(values)[1:]:
        path = Path(root) / name
        if os.path.basename(name) == compose.COMPOSE_FILE or not path.is_file():
            continue
        try:
            data = compose.load_compose_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        for service, body in ((data or {}).get("services") or {}).items() if isinstance(data, dict) else ():
            ports = body.get("ports") if isinstance(body, dict) else None
            if isinstance(ports, compose.Reset):
                merged[service] = list(ports)
            elif isinstance(ports, list):
                merged[service] = merged.get(service, []) + ports
    return merged


def _container_image(runner: Runner, service: str) -> str | None:
    """The image ID the service's container runs."""
    result = runner.run(["docker", "inspect", "--format", "{{.Image}}", f"{compose.project_name(runner.cwd)}-{service}-1"],
                        capture=True, check=False, mutating=False)
    return result.stdout.strip() or None if result.returncode == 0 else None
