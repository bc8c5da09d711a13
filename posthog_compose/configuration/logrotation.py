"""Logs that cannot fill the disk: config-check's rule that every service (the eight, and the edge
proxy when it is on) rotates its logs, and Docker's human sizes ("12.5MB") as bytes and back."""

from __future__ import annotations

import re
from pathlib import Path

from posthog_compose.configuration.validators import whole_number

GB = 1000 ** 3
ROTATING_DRIVERS = ("json-file", "local")
_HUMAN_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGTP]?i?B)?\s*$")
_UNITS = {"": 1, "B": 1, "kB": 1000, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "TB": 1000 ** 4, "PB": 1000 ** 5,
          "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4}


def human(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, factor in (("TB", 1000 ** 4), ("GB", GB), ("MB", 1000 ** 2), ("kB", 1000)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def parse_size(text: str) -> int | None:
    """Docker's human sizes ("0B", "12.5MB", "1.234GB", "3.2kB") as bytes; None when unreadable."""
    match = _HUMAN_RE.match(text or "")
    if not match:
        return None
    unit = match.group(2) or ""
    if unit not in _UNITS:
        return None
    number = float(match.group(1))
    return int(round(number * _UNITS[unit])) if number < 1e18 else None  # beyond any disk: not a size


_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def _resolve(value, values: dict[str, str]) -> str:
    return _REF_RE.sub(lambda m: values.get(m.group(1), ""), str(value if value is not None else ""))


def check(root: Path, document, values: dict[str, str] | None, report, overlays: list | None = None) -> None:
    """Every service (the eight, and the proxy when it is on) must rotate its logs: a driver that
    rotates and both max-size and max-file, as Docker's default json-file driver never rotates."""
    if document is None:
        return
    values = values or {}
    services = [(document.path.name, document.services)]
    from posthog_compose.configuration import edge

    if overlays is None and edge.enabled(values) and (Path(root) / edge.OVERLAY).exists():
        try:
            from posthog_compose.configuration import compose

            overlay = compose.load_document(root, edge.OVERLAY)
            services.append((edge.OVERLAY, {edge.SERVICE: overlay.services.get(edge.SERVICE)}))
        except Exception:  # a broken overlay is Compose's own finding
            pass
    for filename, entries in services:
        for name, service in (entries or {}).items():
            if not isinstance(service, dict):
                continue
            # The line is looked up only for a finding: finding it parses the YAML again, with positions.
            line = (lambda name=name: document.line_of("services", name) if filename == document.path.name else None)
            logging = service.get("logging")
            if not isinstance(logging, dict):
                report.error("log-rotation", filename, line(), name,
                             "has no `logging:` section: Docker's default json-file driver never rotates, so its "
                             "logs grow until the disk is full", "add `logging: *default-logging` to the service")
                continue
            driver = _resolve(logging.get("driver", "json-file"), values) or "json-file"
            options = logging.get("options") or {}
            missing = [key for key in ("max-size", "max-file") if not _resolve(options.get(key), values)]
            if driver not in ROTATING_DRIVERS:
                report.error("log-rotation", filename, line(), name,
                             f"logs with the {driver!r} driver, which this deployment cannot bound",
                             "use LOG_DRIVER=json-file or local")
            elif missing:
                report.error("log-rotation", filename, line(), name,
                             f"logging sets no {' and no '.join(missing)}: its logs are not rotated",
                             "use `logging: *default-logging` (LOG_MAX_SIZE and LOG_MAX_FILE in .env)")
    count = values.get("LOG_MAX_FILE", "")
    files = whole_number(count)  # the format rule reports a value that is not one
    if files is not None and files < 1:
        report.error("log-rotation", ".env", None, "LOG_MAX_FILE", "must be at least 1", "set LOG_MAX_FILE=5")
    size = parse_size((values.get("LOG_MAX_SIZE", "") or "").upper().replace("K", "k").rstrip("B") + "B"
                      if values.get("LOG_MAX_SIZE") else "")
    if values.get("LOG_MAX_SIZE") and size is not None and files is not None and size * files > 2 * GB:
        report.warning("log-rotation", ".env", None, "LOG_MAX_SIZE",
                       f"with LOG_MAX_FILE={count} lets each service keep {human(size * files)} of logs",
                       "20m and 5 keep 100 MB per service")
