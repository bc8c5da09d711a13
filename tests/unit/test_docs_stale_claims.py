"""Claims of the handbook that went stale once, each held against the code it describes: the backup
`invoke upgrade` takes, the order of the PostgreSQL major-version steps, every `NAME=value` a page
shows for a manifest variable (CLICKHOUSE_CA must be relative), the deployment's name, what
`invoke add-env-var` changes and where its secret goes, and doctor's free-disk thresholds."""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path

import pytest
import yaml

from posthog_compose.configuration import compose, formats
from posthog_compose.documents import facts
from tests.conftest import REPO, copy_repository, run_invoke

DOCS = REPO / "docs"


def section(page: str, heading_id: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    match = re.search(rf"^##+ [^\n]*\{{#{heading_id}\}}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"{page} has no section #{heading_id}"
    return match.group(1)


# ----------------------------------------------------------------------------- upgrading, step 4
def test_upgrading_names_the_backup_the_upgrade_takes(monkeypatch, tmp_path):
    from posthog_compose.operations import backup
    from posthog_compose.operations.backup import contents
    from posthog_compose.operations.upgrade import preflight

    taken = {}

    class Made:
        path = tmp_path / "made.backup"

    def create(root, runner, subset="all", **kwargs):
        taken["subset"] = subset
        return Made()

    monkeypatch.setattr(backup, "create", create)
    preflight.backup_postgres(tmp_path, runner=None)
    assert taken == {"subset": "postgres"}
    name = f"posthog-20260101-000000-postgres{contents.SUFFIX}"
    assert contents.NAME_RE.match(name), name

    step = re.search(r"^4\. \*\*Backup\*\*(.*?)^5\. ", (DOCS / "upgrading.md").read_text(), re.S | re.M)
    assert step, "upgrading.md has no step 4 **Backup**"
    text = " ".join(step.group(1).split())
    assert "`invoke backup --only postgres`" in text
    assert f"posthog-<UTC time>-postgres{contents.SUFFIX}" in text
    assert ".dump" not in text, "the upgrade writes an archive of `invoke backup`, not a .dump file"


# ----------------------------------------------------------------------------- PostgreSQL major version
WRITERS = {"web", "worker", "plugins"}


def step_commands(text: str) -> list[tuple[str, ...]]:
    """The `invoke ...` commands of a section's inline code, in reading order."""
    return [tuple(shlex.split(code)) for code in re.findall(r"`(invoke [^`]+)`", text)]


def order_problem(commands: list[tuple[str, ...]]) -> str | None:
    """Why these steps lose writes: a pg_dump before every writer is stopped, or a writer started between."""
    stopped = False
    for argv in commands:
        if argv[:2] == ("invoke", "down") or (argv[:4] == ("invoke", "compose", "--", "stop")
                                               and WRITERS <= set(argv[4:])):
            stopped = True
        elif argv[:2] == ("invoke", "up") and "-s" not in argv:
            stopped = False
        elif "pg_dump" in argv:
            return None if stopped else f"`{shlex.join(argv)}` runs while web, worker and plugins still write"
    return "no pg_dump in the steps"


def test_postgres_major_steps_stop_the_writers_before_the_dump():
    assert order_problem(step_commands(section("upgrading.md", "postgres-major-upgrade"))) is None
    # The check can fail: the old order dumped first and stopped afterwards.
    dump = ("invoke", "compose", "--", "exec", "-T", "db", "pg_dump", "-U", "posthog")
    assert "still write" in order_problem([dump, ("invoke", "down")])
    assert "still write" in order_problem([("invoke", "down"), ("invoke", "up"), dump])
    assert order_problem([("invoke", "compose", "--", "stop", "web", "worker", "plugins"), dump]) is None


# ----------------------------------------------------------------------------- values the pages show
VALUE = re.compile(r"(?<![A-Za-z0-9_$])([A-Z][A-Z0-9_]+)=([^\s`'\"]*)")
# Shown on purpose as the wrong value (the page explains why it is wrong).
SHOWN_AS_WRONG = {("mistakes-in-older-guides.md", "TRUST_ALL_PROXIES", "false")}


def shown_values(text: str) -> list[tuple[int, str, str]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for name, value in VALUE.findall(line):
            value = value.rstrip(",.;:)")
            if value and not re.search(r"[…<>{}$*]", value):
                found.append((number, name, value))
    return found


def value_problems(page: str, text: str, manifest) -> list[str]:
    kinds = {variable.name: variable.format for variable in manifest.variables}
    problems = []
    for number, name, value in shown_values(text):
        if name in kinds and (page, name, value) not in SHOWN_AS_WRONG:
            problem = formats.problem(kinds[name], value)
            if problem:
                problems.append(f"{page}:{number}: {name}={value} {problem}")
    return problems


def test_every_value_a_page_shows_fits_the_manifest(manifest):
    found = []
    for page in sorted(DOCS.glob("*.md")):
        found += value_problems(page.name, page.read_text(encoding="utf-8"), manifest)
    assert found == []
    # The check can fail: the absolute CA path that breaks the plugin server.
    assert value_problems("tls.md", "`CLICKHOUSE_CA=/etc/posthog/certs/ca.crt`", manifest)
    assert value_problems("tls.md", "`CLICKHOUSE_CA=../etc/posthog/certs/ca.crt`", manifest) == []


def test_tls_page_gives_clickhouse_ca_as_the_tls_override_sets_it():
    override = yaml.safe_load((REPO / "docker-compose.tls.yml").read_text())
    values = {str(s.get("environment", {}).get("CLICKHOUSE_CA")) for s in override["services"].values()
              if isinstance(s.get("environment"), dict) and "CLICKHOUSE_CA" in s["environment"]}
    assert len(values) == 1, values
    assert f"`CLICKHOUSE_CA={values.pop()}`" in (DOCS / "tls.md").read_text()


# ----------------------------------------------------------------------------- the deployment's name
ALWAYS_POSTHOG = re.compile(r"always (called|named) `?posthog`?|is always `posthog`", re.I)


def test_the_deployment_name_is_described_as_compose_reads_it():
    default = re.search(r"^name: \$\{COMPOSE_PROJECT_NAME:-([a-z0-9_-]+)\}$",
                        (REPO / "docker-compose.yml").read_text(), re.M).group(1)
    assert default == compose.PROJECT_NAME
    text = " ".join((DOCS / "architecture.md").read_text().split())
    assert "`COMPOSE_PROJECT_NAME` (from the shell, else `.env`)" in text
    assert f"`{default}` when unset" in text
    for page in sorted(DOCS.glob("*.md")):
        assert not ALWAYS_POSTHOG.search(" ".join(page.read_text().split())), page.name
    assert ALWAYS_POSTHOG.search("The Compose project is always called `posthog`.")


# ----------------------------------------------------------------------------- adding a variable
NUMBERS = {"three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}


def files_named(text: str) -> tuple[int, set[str]]:
    """The count and the files of "touching N files (`a`, `b`, the README)"."""
    match = re.search(r"touching (\w+) files \(([^)]*)\)", " ".join(text.split()))
    assert match, "adding-variables.md no longer says how many files a variable touches"
    names = set(re.findall(r"`([^`]+)`", match.group(2))) | ({"README.md"} if "README" in match.group(2) else set())
    return NUMBERS[match.group(1)], names


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).parts[0] in (".deploy", "backups", "__pycache__")}


def test_adding_variables_names_what_add_env_var_changes_and_keeps_the_secret_in_env(tmp_path):
    text = (DOCS / "adding-variables.md").read_text()
    count, named = files_named(text)
    assert count == len(named), (count, named)
    block = re.search(r"```bash\n(invoke add-env-var .*?)\n```", text, re.S).group(1).replace("\\\n", " ")
    secret = f"https://{secrets.token_hex(12)}@sentry.example.com/42"
    argv = [secret if token == "$SENTRY_DSN" else token for token in shlex.split(block)]
    assert secret in argv, "the example no longer takes the value from $SENTRY_DSN"

    (tmp_path / "deployment").mkdir()
    root = copy_repository(tmp_path / "deployment")
    assert run_invoke(root, "init").returncode == 0
    before = snapshot(root)
    result = run_invoke(root, *argv[1:])
    assert result.returncode == 0, result.stdout + result.stderr
    after = snapshot(root)
    changed = {name for name in set(before) | set(after) if before.get(name) != after.get(name)}
    assert changed == named, f"the page names {sorted(named)}; add-env-var changed {sorted(changed)}"
    holding = {name for name, data in after.items() if secret.encode() in data}
    assert holding == {".env"}, f"the example's value reached committed files: {sorted(holding - {'.env'})}"


# ----------------------------------------------------------------------------- disk thresholds
def test_the_disk_page_shows_the_thresholds_of_the_code(tmp_path):
    from posthog_compose.operations import diskusage
    from posthog_compose.operations.doctor import host

    table = facts.disk_thresholds(REPO)
    assert f"| {diskusage.WARN_FREE_GB:g} GB or {diskusage.WARN_FREE_PERCENT:g} % free | {diskusage.CRITICAL_FREE_GB:g} GB free |" in table
    assert f"| {host.GOOD_DISK_GB:g} {facts.disk_unit(REPO)} free | {host.MIN_DISK_GB:g} {facts.disk_unit(REPO)} free |" in table
    assert facts.DISK_MARKER in (DOCS / "disk.md").read_text()
    # A threshold changed in the code shows on the next build; a renamed one fails it by name.
    for path in (facts.DISKUSAGE, facts.DOCTOR_HOST, facts.ENGINE):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((REPO / path).read_text())
    host_copy = tmp_path / facts.DOCTOR_HOST
    host_copy.write_text(re.sub(r"^MIN_DISK_GB, GOOD_DISK_GB = .*$", "MIN_DISK_GB, GOOD_DISK_GB = 25, 40",
                                host_copy.read_text(), flags=re.M))
    unit = facts.disk_unit(tmp_path)
    assert f"| 40 {unit} free | 25 {unit} free |" in facts.disk_thresholds(tmp_path)
    host_copy.write_text(host_copy.read_text().replace("MIN_DISK_GB, GOOD_DISK_GB", "MIN_DISK, GOOD_DISK"))
    with pytest.raises(ValueError, match="MIN_DISK_GB"):
        facts.disk_thresholds(tmp_path)



def test_no_hand_written_disk_number_is_attributed_to_doctor_or_status():
    """Outside the generated table, the disk page gives doctor's and status's free-space thresholds no
    number of its own (memory bands excepted): the one it gave once (30 GB as doctor's minimum, an
    error below 3 GB) drifted from the code."""
    from posthog_compose.operations.doctor import host

    memory = {f"{host.MIN_RAM_GB:g}", f"{host.GOOD_RAM_GB:g}"}
    text = (DOCS / "disk.md").read_text()
    assert hand_numbers(text, memory) == []
    assert hand_numbers("| 100,000 | 30 GB (doctor's minimum) |", memory) == ["30 GB (doctor's minimum) |"]


def hand_numbers(text: str, allowed: set[str]) -> list[str]:
    found = []
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # quoted output: measurements, not thresholds
    for piece in re.split(r"(?<=[.|])\s", text):
        if re.search(r"doctor|invoke status", piece):
            for match in re.finditer(r"(\d+(?:\.\d+)?) ?(GB|GiB)\b", piece):
                if match.group(1) not in allowed:
                    found.append(piece[match.start():].strip()[:40])
    return found
