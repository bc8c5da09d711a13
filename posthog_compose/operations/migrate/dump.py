"""Step 2: pg_dump -Fc of the local database into backups/ (0600, never under its name half-written),
read back by pg_restore --list.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.servers import Servers, _wait_with_progress, psql_error


def dump_local(root: Path, servers: Servers, dump: Path, out) -> int:
    """pg_dump -Fc inside `db` into ``dump`` (0600, never under its name half-written), then pg_restore --list
    must read it. Returns its size."""
    dump.parent.mkdir(mode=0o700, exist_ok=True)
    partial = dump.with_name(dump.name + ".partial")
    command = servers.local_command("pg_dump", "--format=custom", "--no-comments")
    print(f"Dumping the local database into {dump.relative_to(root)} ...", file=out, flush=True)
    started = time.monotonic()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with open(os.devnull, "rb") as nothing:
            process = servers.runner.popen(command, stdin=nothing, stdout=fd, stderr=subprocess.PIPE)
        os.close(fd)
        fd = -1
        _, error = _wait_with_progress(process, partial, "dumped", out)
        if process.returncode != 0:
            raise OperatorError(f"pg_dump inside db failed: {psql_error(error.decode(errors='replace'), process.returncode)}")
        with open(partial, "rb") as handle:
            check = servers.runner.popen(compose.command(root, "exec", "-T", "db", "pg_restore", "--list"),
                                         stdin=handle, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            listing, error = check.communicate(timeout=600)
        if check.returncode != 0 or not listing.strip():
            raise OperatorError(f"the dump cannot be read back by pg_restore "
                                f"({psql_error(error.decode(errors='replace'), check.returncode)})")
        os.replace(partial, dump)
    finally:
        if fd >= 0:
            os.close(fd)
        partial.unlink(missing_ok=True)
    size = dump.stat().st_size
    print(f"Dump written: {size / 1024 ** 2:,.1f} MiB in {time.monotonic() - started:.0f} s.", file=out, flush=True)
    return size
