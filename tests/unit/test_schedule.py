"""`invoke schedule-backups`: the timer and service (and the crontab line) call the kit's own
`invoke` by its full path with --search-root, daily, with --keep; systemd-analyze accepts them; a
bad value is one line and writes nothing; --install writes both units and enables the timer."""

from __future__ import annotations

import configparser
import io
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from posthog_compose.errors import OperatorError
from posthog_compose.operations import schedule
from tests.conftest import run_invoke

OFFLINE = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8",
           "DOCKER_HOST": "unix:///nonexistent/docker.sock"}


def _units(text: str) -> dict[str, configparser.ConfigParser]:
    """The printed units, by their file name, each parsed strictly (no duplicate section or key)."""
    units, name, lines = {}, None, []
    for line in text.splitlines() + ["# /end"]:
        if line.startswith("# /"):
            if name:
                parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
                parser.optionxform = str
                parser.read_string("\n".join(lines))
                units[name] = parser
            name, lines = line[2:].split()[0], []
        elif not line.startswith("#") and name:
            lines.append(line)
    return units


@pytest.fixture
def passphrase(tmp_path) -> Path:
    path = tmp_path / "backup passphrase"  # a space: the unit must quote it
    path.write_text("a passphrase of some length\n")
    path.chmod(0o600)
    return path


def test_the_units_call_the_kits_own_invoke_daily_with_keep(deployed, passphrase):
    result = run_invoke(deployed, "schedule-backups", "--at", "4:05", "--keep", "3", "--passphrase-file",
                        str(passphrase), env=OFFLINE)
    assert result.returncode == 0, result.stderr
    units = _units(result.stdout)
    assert sorted(units) == ["/etc/systemd/system/posthog-backup.service", "/etc/systemd/system/posthog-backup.timer"]
    service, timer = units["/etc/systemd/system/posthog-backup.service"], units["/etc/systemd/system/posthog-backup.timer"]
    assert dict(service["Service"]) == {
        "Type": "oneshot", "WorkingDirectory": str(deployed),
        "ExecStart": f"{Path(sys.prefix) / 'bin' / 'invoke'} --search-root {deployed} backup --passphrase-file "
                     f'"{passphrase}" --keep 3'}
    assert dict(timer["Timer"]) == {"OnCalendar": "*-*-* 04:05:00", "Persistent": "true"}
    assert dict(timer["Install"]) == {"WantedBy": "timers.target"}
    argv = shlex.split(service["Service"]["ExecStart"])  # systemd's quoting of these words is the shell's
    assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK) and argv[0] != "invoke"
    assert argv[1:] == ["--search-root", str(deployed), "backup", "--passphrase-file", str(passphrase), "--keep", "3"]
    assert "systemctl enable --now posthog-backup.timer" in result.stdout


def test_systemd_analyze_accepts_the_units(deployed, passphrase, tmp_path):
    """Checked by systemd itself where it is installed; the strict parse above runs everywhere."""
    plan = schedule.plan(deployed, at="23:59", keep=7, passphrase_file=str(passphrase))
    units = tmp_path / "units"
    units.mkdir()
    (units / f"{plan.name}.service").write_text(schedule.service_unit(plan))
    (units / f"{plan.name}.timer").write_text(schedule.timer_unit(plan))
    parsed = _units(f"# /{plan.name}.service\n{schedule.service_unit(plan)}\n# /{plan.name}.timer\n"
                    f"{schedule.timer_unit(plan)}")
    assert parsed[f"/{plan.name}.timer"]["Timer"]["OnCalendar"] == "*-*-* 23:59:00"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the strict parse above is the check on a machine without systemd
    calendar = subprocess.run([analyze, "calendar", "*-*-* 23:59:00"], capture_output=True, text=True)
    assert calendar.returncode == 0 and "23:59:00" in calendar.stdout, calendar.stderr
    result = subprocess.run([analyze, "verify", "--man=no", str(units / f"{plan.name}.timer"),
                             str(units / f"{plan.name}.service")], capture_output=True, text=True, timeout=60)
    problems = [line for line in result.stderr.splitlines() if plan.name in line]
    assert result.returncode == 0 and not problems, result.stderr


def test_the_cron_line_is_one_shell_command(deployed, passphrase):
    plan = schedule.plan(deployed, at="00:30", keep=2, passphrase_file=str(passphrase))
    line = schedule.cron_line(plan)
    fields = line.split(" ", 5)
    assert fields[:5] == ["30", "0", "*", "*", "*"]
    words = shlex.split(fields[5])
    assert words[:3] == ["cd", str(deployed), "&&"]
    assert words[3:11] == [str(Path(sys.prefix) / "bin" / "invoke"), "--search-root", str(deployed), "backup",
                           "--passphrase-file", str(passphrase), "--keep", "2"]


def test_a_percent_sign_is_escaped_for_cron_and_systemd(tmp_path, passphrase, monkeypatch):
    root = tmp_path / "posthog 100%"
    root.mkdir()
    plan = schedule.plan(root, passphrase_file=str(passphrase))
    assert "100\\%" in schedule.cron_line(plan) and "100%'" not in schedule.cron_line(plan)
    service = schedule.service_unit(plan)
    assert f"WorkingDirectory={tmp_path}/posthog 100%%\n" in service
    assert f'--search-root "{tmp_path}/posthog 100%%"' in service


@pytest.mark.parametrize("args,message", [
    (["--at", "25:00"], "--at '25:00': give the time of day as HH:MM"),
    (["--at", "3pm"], "--at '3pm': give the time of day as HH:MM"),
    (["--keep", "0"], "--keep must be 1 or more"),
    (["--passphrase-file", "correct horse battery staple"], "--passphrase-file: no such file"),
])
def test_a_bad_value_is_one_line(deployed, args, message):
    result = run_invoke(deployed, "schedule-backups", *args, env=OFFLINE)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "correct horse" not in result.stderr


def test_install_writes_both_units_and_enables_the_timer(deployed, passphrase, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(schedule, "_systemctl", calls.append)
    plan = schedule.plan(deployed, passphrase_file=str(passphrase))
    written = schedule.install(plan, unit_dir=tmp_path, out=io.StringIO())
    assert sorted(p.name for p in written) == ["posthog-backup.service", "posthog-backup.timer"]
    assert (tmp_path / "posthog-backup.service").read_text() == schedule.service_unit(plan)
    assert oct((tmp_path / "posthog-backup.timer").stat().st_mode & 0o777) == "0o644"
    assert calls == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "posthog-backup.timer"]]


def test_install_refuses_a_passphrase_file_others_can_read(deployed, passphrase, tmp_path, monkeypatch):
    monkeypatch.setattr(schedule, "_systemctl", lambda command: pytest.fail("systemctl ran"))
    passphrase.chmod(0o644)
    plan = schedule.plan(deployed, passphrase_file=str(passphrase))
    units = tmp_path / "units"
    units.mkdir()
    with pytest.raises(OperatorError, match="readable by other users"):
        schedule.install(plan, unit_dir=units)
    assert not list(units.iterdir())


def test_drill_adds_the_restore_drill_after_the_backup(deployed, passphrase, tmp_path):
    """--drill: a second ExecStart (a oneshot service runs them in order and stops at a failure) and a
    second command after `&&` in the crontab line, each the kit's own invoke rehearsing the newest archive."""
    plan = schedule.plan(deployed, at="02:00", keep=5, passphrase_file=str(passphrase), drill=True)
    service = schedule.service_unit(plan)
    starts = [line[len("ExecStart="):] for line in service.splitlines() if line.startswith("ExecStart=")]
    assert len(starts) == 2
    invoke = str(Path(sys.prefix) / "bin" / "invoke")
    assert shlex.split(starts[0]) == [invoke, "--search-root", str(deployed), "backup", "--passphrase-file",
                                      str(passphrase), "--keep", "5"]
    assert shlex.split(starts[1]) == [invoke, "--search-root", str(deployed), "restore", "--drill", "latest",
                                      "--passphrase-file", str(passphrase)]
    assert "then invoke restore --drill latest" in service
    words = shlex.split(schedule.cron_line(plan).split(" ", 5)[5])
    backup_at, drill_at = words.index("backup"), words.index("--drill")
    assert backup_at < words.index("&&", backup_at) < drill_at and words[drill_at + 1] == "latest"
    assert "--drill" not in schedule.cron_line(schedule.plan(deployed, passphrase_file=str(passphrase)))
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the parse above is the check on a machine without systemd
    units = tmp_path / "units"
    units.mkdir()
    (units / f"{plan.name}.service").write_text(service)
    (units / f"{plan.name}.timer").write_text(schedule.timer_unit(plan))
    result = subprocess.run([analyze, "verify", "--man=no", str(units / f"{plan.name}.timer"),
                             str(units / f"{plan.name}.service")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not [line for line in result.stderr.splitlines() if plan.name in line], \
        result.stderr


def test_the_drill_option_reaches_the_printed_units(deployed, passphrase):
    result = run_invoke(deployed, "schedule-backups", "--drill", "--passphrase-file", str(passphrase), env=OFFLINE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ExecStart=") == 2 and "restore --drill latest" in result.stdout
