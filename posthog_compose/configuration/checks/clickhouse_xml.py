"""clickhouse/*.xml's rules: each file parses, every from_env variable reaches the clickhouse service, and no
password is written into a file.
"""

from __future__ import annotations

from pathlib import Path

from posthog_compose.configuration.checks.findings import COMPOSE, _Report


# ----------------------------------------------------------------------------- clickhouse/*.xml
def _check_clickhouse_xml(root: Path, manifest, document, report: _Report) -> None:
    import xml.etree.ElementTree as ElementTree

    directory = root / "clickhouse"
    clickhouse_env = set()
    if document is not None:
        service = document.services.get("clickhouse") if isinstance(document.services, dict) else None
        environment = (service or {}).get("environment") or {}
        clickhouse_env = set(environment) if isinstance(environment, dict) else {
            item.split("=", 1)[0] for item in environment}
    for path in sorted(directory.glob("*.xml")):
        relative = f"clickhouse/{path.name}"
        try:
            tree = ElementTree.parse(path)
        except ElementTree.ParseError as exc:
            line = exc.position[0] if getattr(exc, "position", None) else None
            report.error("clickhouse-xml", relative, line, "", f"is not well-formed XML ({exc.msg if hasattr(exc, 'msg') else exc})",
                         "fix the XML; ClickHouse will not start with it")
            continue
        for element in tree.iter():
            name = element.get("from_env")
            if name is not None:
                if name not in manifest.by_name:
                    report.error("clickhouse-from-env", relative, None, name,
                                 "is read with from_env but is not in the manifest", "add it with `invoke add-env-var`")
                elif document is not None and name not in clickhouse_env:
                    report.error("clickhouse-from-env", relative, None, name,
                                 "is read with from_env but not passed to the clickhouse service; ClickHouse would read an empty value",
                                 f"add `{name}: ${{{name}}}` to clickhouse.environment in {COMPOSE}")
            elif element.tag == "password" and (element.text or "").strip():
                report.error("clickhouse-password", relative, None, "password",
                             "is hard-coded in the XML (and drifts from .env)",
                             'use <password from_env="CLICKHOUSE_PASSWORD"/>')
            elif element.tag in ("password_sha256_hex", "password_double_sha1_hex", "password_bcrypt_hash"):
                report.error("clickhouse-password", relative, None, element.tag,
                             "is a literal password hash in the XML: it drifts from CLICKHOUSE_PASSWORD in .env",
                             'use <password from_env="CLICKHOUSE_PASSWORD"/>')
        users = tree.getroot().find("users")
        for user in list(users) if users is not None else []:
            kinds = {child.tag for child in user}
            if not kinds & {"password", "password_sha256_hex", "password_double_sha1_hex", "password_bcrypt_hash",
                            "ldap", "kerberos", "ssl_certificates", "no_password"} or "no_password" in kinds:
                report.error("clickhouse-password", relative, None, f"user {user.tag}",
                             "has no password: anyone who reaches ClickHouse logs in as it",
                             'add <password from_env="CLICKHOUSE_PASSWORD"/> to the user')
