"""Numbers the handbook quotes from the code, read from the source when the handbook is built: the
free-disk thresholds of `invoke status` and `invoke doctor` (docs/disk.md). The modules are parsed,
not imported: the handbook's hooks sit below the operations layer, and a module-level constant is
all they need. A constant renamed or removed fails the build with its name."""

from __future__ import annotations

import ast
from pathlib import Path

DISK_MARKER = "<!-- disk-thresholds -->"
DISKUSAGE = Path("posthog_compose") / "operations" / "diskusage.py"
DOCTOR_HOST = Path("posthog_compose") / "operations" / "doctor" / "host.py"
ENGINE = Path("posthog_compose") / "operations" / "engine.py"


def constants(path: Path) -> dict[str, float]:
    """Module-level `NAME = number` and `A, B = 1, 2` assignments of one source file."""
    found: dict[str, float] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target, value = node.targets[0], node.value
        pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple)
                 else [(target, value)])
        for name, number in pairs:
            if isinstance(name, ast.Name) and isinstance(number, ast.Constant) and isinstance(number.value, (int, float)) \
                    and not isinstance(number.value, bool):
                found[name.id] = number.value
    return found


def _need(values: dict[str, float], name: str, path: Path) -> float:
    if name not in values:
        raise ValueError(f"{path}: no module-level constant {name}, which docs/disk.md quotes; "
                         "update posthog_compose/documents/facts.py")
    return values[name]


def _number(value: float) -> str:
    return f"{value:g}"


def disk_unit(root: Path) -> str:
    """The unit doctor's `disk` line measures in: engine.disks divides by 1024³ (GiB) or 1000³ (GB)."""
    source = (root / ENGINE).read_text(encoding="utf-8")
    body = source[source.index("def disks("):]
    body = body[:body.index("\ndef ", 1)] if "\ndef " in body[1:] else body
    return "GiB" if "1024 ** 3" in body or "1 << 30" in body else "GB"


def disk_thresholds(root: Path) -> str:
    usage, host = constants(root / DISKUSAGE), constants(root / DOCTOR_HOST)
    warn = _need(usage, "WARN_FREE_GB", DISKUSAGE)
    percent = _need(usage, "WARN_FREE_PERCENT", DISKUSAGE)
    critical = _need(usage, "CRITICAL_FREE_GB", DISKUSAGE)
    minimum = _need(host, "MIN_DISK_GB", DOCTOR_HOST)
    good = _need(host, "GOOD_DISK_GB", DOCTOR_HOST)
    unit = disk_unit(root)
    rows = [
        ("`invoke status` (`disk`), `invoke up`", "the engine's data disk",
         f"{_number(warn)} GB or {_number(percent)} % free", ""),
        ("`invoke doctor`: `data disk`", "the engine's data disk",
         f"{_number(warn)} GB or {_number(percent)} % free", f"{_number(critical)} GB free"),
        ("`invoke doctor`: `disk`", "Docker's data root, measured on this host (before the first `up` too)",
         f"{_number(good)} {unit} free", f"{_number(minimum)} {unit} free"),
    ]
    lines = ["Read from the kit's code when this handbook was built (1 GB = 1000³ bytes, 1 GiB = 1024³ bytes):", "",
             "| Check | Measures | Warning below | Error below |", "| --- | --- | --- | --- |"]
    lines += [f"| {check} | {where} | {warning} | {error or '(warning only)'} |" for check, where, warning, error in rows]
    return "\n".join(lines) + "\n"
