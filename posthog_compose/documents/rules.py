"""The handbook's table of config-check rules, read from the rules themselves.

The rule ids and their severities come from the code of `posthog_compose/configuration/`: every
`report.error("RULE", ...)`/`report.warning("RULE", ...)` call and every `Problem("SEVERITY", "RULE", ...)`
is found by parsing the source (nothing is imported or run), so a rule added, removed or made a
warning shows on the next build. Only the one-line meaning of each rule is written here, for the
operator; a rule without one, or a meaning whose rule is gone, fails the build and
`tests/unit/test_docs_generated_tables.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

RULES_MARKER = "<!-- config-check-rules -->"
SOURCE = Path("posthog_compose") / "configuration"

# What each rule catches, in an operator's words (one line each; the finding itself says the fix).
MEANINGS = {
    "certificate": "a certificate under `certs/` that cannot be read as PEM",
    "certificate-expiry": "a certificate under `certs/` that has expired or expires within the renewal window of "
                          "`invoke harden --check` (TLS inside the deployment fails then)",
    "clickhouse-from-env": "a `from_env` name in `clickhouse/*.xml` not in the manifest or not passed to `clickhouse`, "
                           "or a value ClickHouse would not read back as itself (`<`, `&`, `]]>`, control characters)",
    "clickhouse-password": "a password written into `clickhouse/*.xml` instead of read from `.env`",
    "clickhouse-xml": "a `clickhouse/*.xml` file that is not well-formed XML",
    "compatibility": "a datastore image outside the versions the pinned PostHog accepts (error), or a version that "
                     "cannot be known from the tag: a digest, a versionless tag, a PostHog image naming no release "
                     "(warning); see [Compatibility](compatibility.md)",
    "compose": "Compose's own interpolation or schema error, verbatim",
    "compose-capabilities": "a service that adds dangerous Linux capabilities",
    "compose-datastore-port": "a datastore that publishes a port on the host",
    "compose-depends": "a `depends_on` edge of `web` removed, or one that would deadlock on web's migrations",
    "compose-file": "a compose file that cannot be read or parsed",
    "compose-file-variable": "`COMPOSE_FILE` not starting with `docker-compose.yml` (error), or also set in your shell (warning)",
    "compose-files": "a compose file named by `COMPOSE_FILE` that is missing or unreadable",
    "compose-healthcheck": "a service others wait for (`condition: service_healthy`) without a healthcheck",
    "compose-host-mount": "a service that mounts the Docker socket or a system folder of the host (`/`, `/etc`, `/root`, `/proc`, `/sys`)",
    "compose-host-namespace": "a service sharing the host's network, PID or IPC namespace",
    "compose-literal": "a literal value in an `environment:` block of `docker-compose.yml`",
    "compose-literal-secret": "the literal value of a secret of `.env` written into a committed file",
    "compose-missing": "the kit's Compose is not installed",
    "compose-privileged": "a service that runs privileged",
    "compose-secret-default": "a secret with a default in the compose file (`${NAME:-value}`)",
    "compose-services": "one of the eight fixed services missing",
    "compose-unbraced": "a variable written `$NAME` instead of `${NAME}` in the compose file",
    "compose-unknown-variable": "a `${NAME}` in the compose files that the manifest does not know",
    "compose-volumes": "a data volume renamed or missing",
    "consistency": "values that contradict each other: `DATABASE_URL` vs `POSTGRES_*`, `REDIS_URL` vs "
                   "`REDIS_PASSWORD`, Kafka replication above the single broker, `KAFKA_URL` vs `KAFKA_HOSTS`, "
                   "`SITE_URL` vs the proxy and `WEB_PORT`",
    "data-file": "`compatibility.yml` or `upgrades.yml` not matching its schema (the file, the field and the fix)",
    "drift": "`.env.example` or the README's variable section differs from what `variables.yml` generates",
    "env-duplicate": "a variable set more than once in `.env`",
    "env-empty": "a required variable set to an empty value",
    "env-empty-file": "a `.env` that sets no variable at all",
    "env-missing": "no `.env` (run `invoke init`)",
    "env-permissions": "`.env` readable by other users (it must be 0600)",
    "allow-list": "`ALLOWED_IP_BLOCKS` with trusted proxies or the edge proxy set so that everyone would be refused, or a "
                  "forged `X-Forwarded-For` could get past it",
    "env-required": "a required variable missing from `.env`",
    "env-syntax": "a line of `.env` that is not `KEY=VALUE`",
    "env-tracked": "`.env` tracked by git",
    "env-unknown": "a variable the manifest does not know, with the closest known name",
    "env-unreadable": "a `.env` that cannot be read",
    "external-address": "an external datastore's address that points back at this host or a local service",
    "external-ca": "TLS to an external datastore without the CA file it needs",
    "external-kafka": "an external Kafka's security protocol and SASL settings that do not match",
    "external-tls": "a TLS setting one of PostHog's clients refuses (error) or does not verify (warning)",
    "external-volume": "a datastore made external while its local volume still holds data",
    "format": "a value that does not fit its format (keys, URLs, ports, booleans, sizes, image references, levels)",
    "https-cookies": "`SITE_URL` on plain `http://` (not localhost) while `SECURE_COOKIES` is on: every login loops",
    "insecure-default": "a secret at a known default (`posthog`, `changeme`, PostHog's development key)",
    "insecure-placeholder": "a secret still at its `.env.example` placeholder",
    "insecure-repeated": "the same key listed twice in `ENCRYPTION_SALT_KEYS`",
    "insecure-short": "a `SECRET_KEY` under 50 characters (error) or a short password (warning)",
    "insecure-weak": "a secret that can be guessed",
    "log-rotation": "container log rotation off or below 1 (error), or allowing a lot of disk per service (warning)",
    "manifest": "`variables.yml` not matching its schema",
    "project-name": "`COMPOSE_PROJECT_NAME` changed since the deployment was started: the next `up` would start a "
                    "second, empty deployment (error when the current one holds data)",
    "proxy": "the edge proxy's settings contradict each other or PostHog's (`DOMAIN`, `SITE_URL`, ports, trusted proxies)",
    "shell-override": "a variable also exported in your shell: Compose prefers the shell's value over `.env`",
}


def _literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def scan(root: Path) -> dict[str, set[str]]:
    """Rule id -> the severities it is reported with, from the source of the configuration layer."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / SOURCE).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            # report.error("rule", file, line, subject, message[, fix])
            if isinstance(func, ast.Attribute) and func.attr in ("error", "warning") and len(node.args) >= 5:
                rule = _literal(node.args[0])
                if rule is None:
                    raise ValueError(f"{path.relative_to(root)}:{node.lineno}: a config-check rule id must be a "
                                     f"literal string, so that the handbook can list it")
                found.setdefault(rule, set()).add(func.attr)
            # Problem("severity", "rule", name, message[, fix]) and Finding(...): findings built elsewhere.
            elif isinstance(func, ast.Name) and func.id in ("Problem", "Finding") and len(node.args) >= 2:
                severity, rule = _literal(node.args[0]), _literal(node.args[1])
                if severity in ("error", "warning") and rule:
                    found.setdefault(rule, set()).add(severity)
    return found


def problems(root: Path) -> list[str]:
    """Rules of the code without a meaning here, and meanings whose rule the code no longer has."""
    found = scan(root)
    return ([f"config-check rule `{rule}` has no meaning in posthog_compose/documents/rules.py" for rule in sorted(found)
             if rule not in MEANINGS]
            + [f"posthog_compose/documents/rules.py explains `{rule}`, which no check reports any more"
               for rule in sorted(MEANINGS) if rule not in found])


def rule_table(root: Path) -> str:
    found = scan(root)
    wrong = problems(root)
    if wrong:
        raise ValueError("; ".join(wrong))
    lines = [f"Generated from the checks themselves at build time: {len(found)} rules. The rule id is the "
             "`rule` of `invoke config-check --json`.", "",
             "| Rule | Severity | What it catches |", "| --- | --- | --- |"]
    for rule in sorted(found):
        severity = " or ".join(s for s in ("error", "warning") if s in found[rule])
        lines.append(f"| `{rule}` | {severity} | {MEANINGS[rule]} |")
    return "\n".join(lines) + "\n"
