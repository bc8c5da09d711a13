"""The handbook's recipe for reading an archive without the kit (docs/backups.md, "The archive
format") runs as written, with stock tools only, on an archive `invoke backup` wrote: `age -d`
(through a terminal, as age asks for the passphrase), `tar -tvf`, extraction, `sha256sum -c`, the
dump and a volume put back together from their parts, and `pg_restore --list`. The fake engine's
dump is not a real PostgreSQL dump, so `pg_restore` here is a stand-in that checks it was handed the
exact dump the backup took; everything else is the real tool.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess

from posthog_compose.operations import backup
from tests.conftest import REPO
from tests.unit import agetool
from tests.unit.test_backup import DUMP, PASSPHRASE, TARS, FakeRunner, engine  # noqa: F401

PAGE = REPO / "docs" / "backups.md"
REAL_POPEN = subprocess.Popen  # the engine fixture replaces subprocess.Popen with its fake
STOCK_TOOLS = {"age", "tar", "mkdir", "cd", "cat", "sha256sum", "pg_restore"}


def recipe() -> list[str]:
    """The command lines of the first bash block of the page's archive-format section."""
    text = PAGE.read_text(encoding="utf-8")
    section = re.search(r"^## The archive format.*?\{#archive-format\}\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "docs/backups.md has no `## The archive format ... {#archive-format}` section"
    block = re.search(r"```bash\n(.*?)```", section.group(1), re.S)
    assert block, "the archive-format section shows no bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_the_recipe_uses_stock_tools_only():
    for line in recipe():
        for command in re.split(r"&&|\|", line.strip("()")):
            assert shlex.split(command)[0] in STOCK_TOOLS, f"{line!r} needs more than stock tools"


def test_the_recipe_reads_an_archive_the_kit_wrote(deployed, engine, tmp_path, monkeypatch):
    agetool.require_age()
    monkeypatch.setenv(backup.PASSPHRASE_ENV, PASSPHRASE.decode())
    made = backup.create(deployed, FakeRunner(deployed), encrypt=True).path
    lines = recipe()
    decrypt = shlex.split(lines[0])
    assert decrypt[:2] == ["age", "-d"], "the recipe starts by decrypting with age -d"
    (tmp_path / decrypt[-1]).write_bytes(made.read_bytes())  # the archive under the name the page shows
    status, shown = agetool.run_age(decrypt[1:], PASSPHRASE, cwd=tmp_path)
    assert status == 0, shown
    dump_sha = hashlib.sha256(DUMP).hexdigest()
    stand_in = f'pg_restore() {{ [ "$1" = --list ] && [ "$(sha256sum < "$2" | cut -c1-64)" = {dump_sha} ]; }}'
    script = "\n".join(["set -euo pipefail", stand_in, *lines[1:]])
    with REAL_POPEN(["bash", "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as run:
        output = run.stdout.read().decode()
    assert run.returncode == 0, output
    assert " 0/0 " in output and "manifest.json" in output and "SHA256SUMS" in output  # tar -tvf
    assert re.search(r"config/\.env: OK", output) and "FAILED" not in output  # sha256sum -c
    assert f"{dump_sha}  posthog.dump" in output
    assert (tmp_path / "clickhouse.tar").read_bytes() == TARS["/var/lib/clickhouse"]
