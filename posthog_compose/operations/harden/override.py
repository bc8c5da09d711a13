"""The TLS override harden writes (docker-compose.override.yml): the template as it is, or without
the internal-TLS parts of the datastores that are external.
"""

from __future__ import annotations

from posthog_compose.operations.harden.checklist import State


def render_override(template: str, values: dict[str, str]) -> str:
    """The override harden writes: the TLS template as it is when every datastore runs here; else the
    template without the internal-TLS parts of the external ones (their service's entry, CLICKHOUSE_CA
    for an external ClickHouse, the plugin server's NODE_EXTRA_CA_CERTS for an external Redis)."""
    from posthog_compose.configuration import datastores

    outside = set(datastores.external(values))
    if not outside & {"postgres", "redis", "clickhouse"} or not template:
        return template
    import yaml

    data = yaml.safe_load(template) or {}
    services = data.get("services") or {}
    for datastore in outside:
        services.pop(datastores.SERVICE[datastore], None)
    for name in ("web", "worker", "plugins"):
        body = services.get(name)
        if not isinstance(body, dict):
            continue
        environment = body.get("environment") or {}
        if "clickhouse" in outside:
            environment.pop("CLICKHOUSE_CA", None)
        if "redis" in outside:
            environment.pop("NODE_EXTRA_CA_CERTS", None)
        if environment:
            body["environment"] = environment
        else:
            body.pop("environment", None)
    data = {key: value for key, value in data.items() if not str(key).startswith("x-")}
    header = [line for line in template.splitlines() if line.startswith("#")]
    note = (f"# Written by `invoke harden` for a deployment whose {', '.join(sorted(outside))} "
            f"{'is' if len(outside) == 1 else 'are'} external: the template's parts for "
            f"{'it' if len(outside) == 1 else 'them'} are left out.")
    return "\n".join(header + [note]) + "\n" + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _without_external(state: State) -> str:
    from posthog_compose.configuration import datastores

    outside = [name for name in datastores.external(state.values) if name in ("postgres", "redis", "clickhouse")]
    return f" without the parts for the external {', '.join(outside)}" if outside else ""
