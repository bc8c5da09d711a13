"""What every rule deals in: a Finding (severity, rule, file and line, subject, message, fix;
never a secret's value), the report the rules add to, and the names and patterns the rules share (.env,
docker-compose.yml, variable references, the variables Compose and Docker keep for themselves).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass


ENV = ".env"
COMPOSE = "docker-compose.yml"
ANY_REFERENCE_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")

# Variables Compose itself reads from .env; not PostHog's, not typos.
COMPOSE_OWN = re.compile(r"^(COMPOSE_|DOCKER_)")


@dataclass
class Finding:
    severity: str  # "error" or "warning"
    rule: str
    file: str
    line: int | None
    subject: str
    message: str
    fix: str

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def text(self) -> str:
        # A subject comes from the operator's files and may hold any character: one finding stays one line.
        subject = f" {_printable(self.subject)}:" if self.subject else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.severity:<7} {self.where()}{subject} {_printable(self.message)}.{fix}"

    def to_dict(self) -> dict:
        return asdict(self)


def _printable(text: str) -> str:
    """Control characters (a newline in a key, an escape sequence) shown escaped, never acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class _Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def error(self, rule, file, line, subject, message, fix=""):
        self.findings.append(Finding("error", rule, file, line, subject, message, fix))

    def warning(self, rule, file, line, subject, message, fix=""):
        self.findings.append(Finding("warning", rule, file, line, subject, message, fix))
