"""clickhouse/*.xml's rules: each file parses, every from_env variable reaches the clickhouse service, no
password is written into a file, and every from_env value is read back by ClickHouse as the text it is.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path

from posthog_compose.configuration.checks.findings import COMPOSE, ENV, _Report


# ----------------------------------------------------------------------------- values ClickHouse parses as XML
def xml_text_problem(value: str) -> str | None:
    """Why ClickHouse would not read ``value`` back as itself, or None.

    ClickHouse parses a from_env value as XML: it reads `<from_env>VALUE</from_env>` and puts what it
    finds into the element (src/Common/Config/ConfigProcessor.cpp), and the image's entrypoint writes
    CLICKHOUSE_PASSWORD into `<password>` of a users file as it is. So `<` or `&` in a value is markup
    (`<x/>` as the password would leave the user with an empty one), and `]]>` or a control character
    stops ClickHouse from starting. The judge is an XML parser (expat, as ClickHouse's Poco uses)."""
    try:
        element = ElementTree.fromstring(f"<from_env>{value}</from_env>")
        if not len(element) and (element.text or "") == value:
            return None
    except ElementTree.ParseError:
        pass
    if "<" in value or "&" in value:
        return "holds < or &, which ClickHouse reads as XML markup, not as text"
    if "]]>" in value:
        return "holds ]]>, which XML does not allow in text: ClickHouse would not start"
    if "\r" in value:
        return "holds a carriage return, which XML turns into a line break"
    return "holds a character XML does not allow (a control character): ClickHouse would not start"


def from_env_names(root: Path) -> list[str]:
    """The variables clickhouse/*.xml reads with from_env, in file order."""
    names: list[str] = []
    for path in sorted((Path(root) / "clickhouse").glob("*.xml")):
        try:
            names += [e.get("from_env") for e in ElementTree.parse(path).iter() if e.get("from_env")]
        except (ElementTree.ParseError, OSError):
            continue  # the file's own finding says so
    return list(dict.fromkeys(names))


def _check_from_env_values(root: Path, values: dict[str, str], report: _Report, line, from_shell: bool = False) -> None:
    refused = {f.subject for f in report.findings if f.severity == "error"}  # one finding per variable
    for name in from_env_names(root):
        value = values.get(name)
        if value is None or name in refused:
            continue
        trouble = xml_text_problem(str(value))
        if trouble:
            where = "reaches ClickHouse (Compose prefers a value set in your shell to .env's) and " if from_shell else ""
            fix = f"`unset {name}` in your shell, or correct it in .env" if from_shell else (
                f"choose a value without it (for a password: `invoke init --rotate {name}`)")
            report.error("clickhouse-from-env", ENV, line(name), name, where + trouble, fix)


def check_clickhouse_environment(root: Path, service, report: _Report, line) -> None:
    """The from_env values as Compose hands them to ClickHouse (its effective model): a value set in the
    shell is judged too. A name already refused from .env is not reported twice."""
    environment = service.get("environment") if isinstance(service, dict) else None
    if isinstance(environment, dict):
        _check_from_env_values(root, {k: v for k, v in environment.items() if v is not None}, report, line, from_shell=True)


# ----------------------------------------------------------------------------- clickhouse/*.xml
def _check_clickhouse_xml(root: Path, manifest, document, report: _Report, values: dict[str, str] | None = None,
                          line=lambda name: None) -> None:

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
    from posthog_compose.configuration.datastores import is_external

    if values and not is_external(values, "clickhouse"):  # an external server reads none of these files
        _check_from_env_values(root, values, report, line)
