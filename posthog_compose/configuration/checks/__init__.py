"""config-check: every rule that catches an operator mistake in .env, docker-compose.yml and
clickhouse/*.xml before anything starts, and the report (text or JSON).

Each rule yields Findings; no rule ever puts a secret's value in a message. The real
`docker compose config` runs in the background while the Python rules run, so the whole
check costs little more than Compose's own validation.

The rules, by what they judge: env (.env: the file, every value, their consistency, the compatibility
matrix, shell overrides), compose_file (docker-compose.yml, the edge, disks and external datastores),
compose_effective (what Compose will run: its sources and the effective model, the project's volumes),
clickhouse_xml (clickhouse/*.xml), data_files (compatibility.yml and upgrades.yml against their schemas)
and protection (drift from the templates, certificate expiry, .env's protection); findings holds Finding
and the report, compose_config the background `docker compose config`. This module holds the entry
points: ``collect``, ``require_clean`` and ``main``.
"""

from __future__ import annotations

import os
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.configuration.checks.findings import (
    ENV,
    COMPOSE,
    ANY_REFERENCE_RE,
    COMPOSE_OWN,
    Finding,
    _printable,
    _Report,
)
from posthog_compose.configuration.checks.compose_config import _start_compose, _finish_compose, _secret_values
from posthog_compose.configuration.checks.env import (
    KAFKA_BROKER_LIMITED,
    POSTHOG_DEFAULT_KEY,
    MIN_SECRET_KEY,
    MIN_PASSWORD,
    _check_env_file,
    _format_description,
    _check_values,
    _check_consistency,
    _port,
    _check_compatibility,
    _check_shell_overrides,
)
from posthog_compose.configuration.checks.compose_file import (
    FIXED_SERVICES,
    WEB_DEPENDENCIES,
    WEB_MUST_NOT_WAIT_FOR,
    DATA_VOLUMES,
    REFERENCE_RE,
    _check_compose_file,
    _check_edge_and_disk,
    _check_external,
)
from posthog_compose.configuration.checks.compose_effective import (
    DATASTORES,
    UNBRACED_RE,
    DEFAULTED_RE,
    _check_compose_sources,
    _relative,
    _check_effective,
    _project_volumes,
    _project_has_data,
)
from posthog_compose.configuration.checks.clickhouse_xml import _check_clickhouse_xml
from posthog_compose.configuration.checks.data_files import _check_data_files
from posthog_compose.configuration.schema import SchemaError
from posthog_compose.configuration.checks.protection import (
    _check_drift,
    _check_certificate_expiry,
    _check_env_protection,
)


# ----------------------------------------------------------------------------- entry points
def collect(root: Path, environ: dict[str, str] | None = None) -> list[Finding]:
    """Run every rule on the deployment at ``root``; return the findings (errors first)."""
    root = Path(root)
    environ = dict(os.environ if environ is None else environ)
    report = _Report()
    compose_process = _start_compose(root, report)

    from posthog_compose.configuration import manifest as manifest_module

    try:
        manifest = manifest_module.load(root)
    except SchemaError as exc:
        report.error("manifest", exc.file, None, exc.path, exc.problem, exc.fix)
        manifest = None
    except OperatorError as exc:
        report.error("manifest", manifest_module.MANIFEST_FILE, None, "", str(exc).split(": ", 1)[-1],
                     "repair variables.yml (see the handbook's Configuration page)")
        manifest = None
    _check_data_files(root, report)

    values: dict[str, str] | None = None
    env = None
    document = None
    if manifest is not None:
        env, values = _check_env_file(root, manifest, environ, report)
        if values is not None:
            _check_values(manifest, env, values, report)
            _check_consistency(env, values, report)
            _check_compatibility(root, env, values, report)
            _check_shell_overrides(manifest, env, environ, report)
        document = _check_compose_file(root, manifest, report)
        _check_compose_sources(root, manifest, values, report)
        _check_clickhouse_xml(root, manifest, document, report, values, _line_of(env))
        if values:
            _check_edge_and_disk(root, env, values, document, report, environ)
        _check_drift(root, manifest, report)
    _check_env_protection(root, report)
    _check_certificate_expiry(root, report)
    env_usable = values is not None and bool(values)
    model = _finish_compose(compose_process, root, report, _secret_values(manifest, values), quiet=not env_usable)
    if model is not None:
        _check_effective(root, model, report, environ)
        from posthog_compose.configuration import edge
        from posthog_compose.configuration.checks.clickhouse_xml import check_clickhouse_environment

        # The values that cross into Caddy's and ClickHouse's own languages, as Compose hands them over.
        services = model.get("services") or {}
        edge.check_proxy_environment(root, services.get(edge.SERVICE), report, _line_of(env))
        check_clickhouse_environment(root, services.get("clickhouse"), report, _line_of(env))
    report.findings.sort(key=lambda f: f.severity != "error")
    return report.findings


def _line_of(env):
    """.env's line of a variable (None without a readable .env)."""
    return env.line_of if env is not None else (lambda name: None)


def require_clean(root: Path) -> list[Finding]:
    """Print the findings and raise OperatorError when any is an error (used before changes)."""
    findings = collect(root)
    errors = [f for f in findings if f.severity == "error"]
    for finding in findings:
        print(finding.text())
    if errors:
        raise OperatorError(f"config-check found {len(errors)} error(s); nothing was started or changed. "
                            "Fix them and run `invoke config-check`")
    return findings


def main(root: Path, strict: bool = False, as_json: bool = False) -> int:
    """The config-check task: report and return the exit code."""
    findings = collect(root)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    failed = errors > 0 or (strict and warnings > 0)
    if as_json:
        import json

        print(json.dumps({"ok": not failed, "errors": errors, "warnings": warnings,
                          "findings": [f.to_dict() for f in findings]}, indent=2))
    else:
        for finding in findings:
            print(finding.text())
        verdict = "FAILED" if failed else "passed"
        strict_note = " (--strict: warnings fail)" if strict and warnings and not errors else ""
        print(f"config-check {verdict}: {errors} error(s), {warnings} warning(s){strict_note} "
              f"in .env, {COMPOSE} and clickhouse/.")
    return 1 if failed else 0
