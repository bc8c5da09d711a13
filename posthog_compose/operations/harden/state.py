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
    published = {name: service.get("ports") or [] for name, service in  # what Compose runs (hook: hostile input)
                 (compose.effective_services(root) or document.services).items()
                 if isinstance(service, dict)}
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


def _container_image(runner: Runner, service: str) -> str | None:
    """The image ID the service's container runs."""
    result = runner.run(["docker", "inspect", "--format", "{{.Image}}", f"{compose.project_name(runner.cwd)}-{service}-1"],
                        capture=True, check=False, mutating=False)
    return result.stdout.strip() or None if result.returncode == 0 else None
