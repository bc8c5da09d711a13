"""`invoke schedule-backups`: the systemd timer and service (or the crontab line) that run
`invoke backup --keep N` every day (with --drill, `invoke restore --drill latest` after it), as
written: they call the kit's own Invoke (its virtual environment's `bin/invoke`, never a bare
`invoke` that a timer's PATH does not have), with `--search-root` set to the deployment, and read
the passphrase from a root-only file. Printed by default; `--install` writes the two units to
/etc/systemd/system and enables the timer.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.fileops import atomic_write

UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_PASSPHRASE_FILE = "/root/.posthog-backup-passphrase"
_TIME = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass
class Schedule:
    root: Path
    invoke: Path
    hour: int
    minute: int
    keep: int
    passphrase_file: Path
    name: str
    drill: bool = False

    def arguments(self) -> list[str]:
        return [str(self.invoke), "--search-root", str(self.root), "backup", "--passphrase-file",
                str(self.passphrase_file), "--keep", str(self.keep)]

    def drill_arguments(self) -> list[str]:
        """The restore drill of the archive the backup just wrote (the newest: `latest`)."""
        return [str(self.invoke), "--search-root", str(self.root), "restore", "--drill", "latest",
                "--passphrase-file", str(self.passphrase_file)]

    def commands(self) -> list[list[str]]:
        return [self.arguments(), *([self.drill_arguments()] if self.drill else [])]

    def what(self) -> str:
        return f"invoke backup --keep {self.keep}" + (", then invoke restore --drill latest" if self.drill else "")


def kit_invoke(root: Path) -> Path:
    """The deployment's own `invoke`: the README's .venv, else the environment running this task."""
    for candidate in (Path(root) / ".venv" / "bin" / "invoke", Path(sys.prefix) / "bin" / "invoke"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    raise OperatorError(f"no `invoke` in {Path(root) / '.venv'}/bin: create the kit's virtual environment as the "
                        "README says, then run this again")


def _plain(value: str, what: str) -> str:
    if any(not c.isprintable() for c in value):
        raise OperatorError(f"{what} {value!r} holds a control character; a unit file cannot carry it: "
                            "use a path without one")
    return value


def plan(root: Path, at: str = "03:15", keep: int = 7, passphrase_file: str | None = None,
         drill: bool = False) -> Schedule:
    """The schedule, every value checked (one line for a bad one)."""
    from posthog_compose.configuration import compose

    match = _TIME.fullmatch(str(at).strip())
    if not match:
        raise OperatorError(f"--at {at!r}: give the time of day as HH:MM (24 h, the host's time zone), e.g. --at 03:15")
    if keep < 1:
        raise OperatorError("--keep must be 1 or more (the archive just written counts)")
    passphrase = Path(passphrase_file or DEFAULT_PASSPHRASE_FILE).expanduser()
    # A value typed for --passphrase-file that names no file may be the passphrase itself: never echoed.
    if passphrase_file and not passphrase.is_file():
        raise OperatorError("--passphrase-file: no such file; write the passphrase into a root-only file "
                            "(chmod 600) and give its path")
    passphrase = passphrase.absolute()  # the timer does not run in this shell's directory
    root = Path(root).absolute()
    _plain(str(root), "the deployment's path")
    _plain(str(passphrase), "--passphrase-file")
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", compose.project_name(root)) + "-backup"
    return Schedule(root, kit_invoke(root), int(match.group(1)), int(match.group(2)), keep, passphrase, name, drill)


def _systemd_word(value: str) -> str:
    """One ExecStart argument: specifiers (%) and variables ($) escaped, quoted when it has a space."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"' if any(c.isspace() for c in value) or escaped != value else escaped


def service_unit(schedule: Schedule) -> str:
    return "\n".join([
        "[Unit]",
        f"Description=PostHog backup ({schedule.name}): {schedule.what()}",
        "Wants=docker.service",
        "After=docker.service",
        "",
        "[Service]",
        "Type=oneshot",
        # WorkingDirectory takes the path as it is; only the specifier character needs escaping.
        f"WorkingDirectory={str(schedule.root).replace('%', '%%')}",
        # A oneshot service runs its ExecStart lines in order and stops at the first that fails.
        *("ExecStart=" + " ".join(_systemd_word(word) for word in command) for command in schedule.commands()),
        "",
    ])


def timer_unit(schedule: Schedule) -> str:
    return "\n".join([
        "[Unit]",
        f"Description=Daily PostHog backup ({schedule.name}) at {schedule.hour:02d}:{schedule.minute:02d}",
        "",
        "[Timer]",
        f"OnCalendar=*-*-* {schedule.hour:02d}:{schedule.minute:02d}:00",
        "Persistent=true",  # a run missed while the host was off happens at the next boot
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])


def cron_line(schedule: Schedule) -> str:
    """A crontab line (cron treats % as a newline: it is escaped)."""
    command = " && ".join(" ".join(shlex.quote(word) for word in words) for words in schedule.commands())
    log = shlex.quote(str(schedule.root / "backups" / "backup.log"))
    line = (f"{schedule.minute} {schedule.hour} * * * cd {shlex.quote(str(schedule.root))} && "
            f"{{ {command}; }} >> {log} 2>&1" if schedule.drill else
            f"{schedule.minute} {schedule.hour} * * * cd {shlex.quote(str(schedule.root))} && {command} >> {log} 2>&1")
    return line.replace("%", "\\%")


def show(schedule: Schedule, cron: bool = False, out=None) -> None:
    out = out or sys.stdout
    if cron:
        print(f"# crontab -e (root), daily at {schedule.hour:02d}:{schedule.minute:02d}:", file=out)
        print(cron_line(schedule), file=out)
    else:
        for suffix, text in ((".service", service_unit(schedule)), (".timer", timer_unit(schedule))):
            print(f"# {UNIT_DIR / (schedule.name + suffix)}", file=out)
            print(text, file=out)
        print(f"# then: systemctl daemon-reload && systemctl enable --now {schedule.name}.timer "
              f"(or `invoke schedule-backups --install`)", file=out)
    if not schedule.passphrase_file.is_file():
        print(f"note: {schedule.passphrase_file} does not exist yet: write the passphrase into it and "
              f"`chmod 600` it before the first run", file=out)


def install(schedule: Schedule, unit_dir: Path = UNIT_DIR, out=None) -> list[Path]:
    """Write the units and enable the timer (as root). The passphrase file must exist and be private."""
    from posthog_compose.operations.backup.passphrase import read_passphrase

    out = out or sys.stdout
    if not schedule.passphrase_file.is_file():
        raise OperatorError(f"--passphrase-file {schedule.passphrase_file} does not exist: write the passphrase into "
                            "it, `chmod 600` it, and install again")
    read_passphrase(str(schedule.passphrase_file), required=True)  # its mode and length, as the timer will read it
    if unit_dir == UNIT_DIR and os.geteuid() != 0:
        raise OperatorError("--install writes to /etc/systemd/system: run it as root (sudo), or run without --install "
                            "and install the printed units yourself")
    written = []
    for suffix, text in ((".service", service_unit(schedule)), (".timer", timer_unit(schedule))):
        path = Path(unit_dir) / (schedule.name + suffix)
        atomic_write(path, text, 0o644)
        written.append(path)
    for command in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", f"{schedule.name}.timer"]):
        _systemctl(command)
    print(f"Installed {', '.join(str(p) for p in written)}; the timer runs `{schedule.what()}` "
          f"daily at {schedule.hour:02d}:{schedule.minute:02d} (`systemctl list-timers {schedule.name}.timer`, "
          f"`journalctl -u {schedule.name}`).", file=out)
    return written


def _systemctl(command: list[str]) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperatorError(f"`{' '.join(command)}` could not run ({exc}); the units are written: run it by hand")
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        raise OperatorError(f"`{' '.join(command)}` failed ({detail[0][:200]}); the units are written: fix that and "
                            "run it by hand")
