"""Step 3: pg_restore of the dump into the target in one transaction (a failed or killed restore
leaves it empty).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from posthog_compose.errors import OperatorError
from posthog_compose.operations.migrate.servers import Servers, _wait_with_progress, psql_error


def restore_target(root: Path, servers: Servers, dump: Path, size: int, out) -> None:
    """pg_restore into the target in one transaction: on any error (or a killed task) the target stays empty."""
    command = servers.target_command("pg_restore", "--no-owner", "--no-privileges", "--no-comments",
                                     "--single-transaction", "--exit-on-error")
    print(f"Restoring into {servers.target.where} ({size / 1024 ** 2:,.1f} MiB, one transaction) ...", file=out,
          flush=True)
    started = time.monotonic()
    with open(dump, "rb") as handle:
        process = servers.target_runner.popen(command, stdin=handle, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, error = _wait_with_progress(process, None, "restoring", out)
    if process.returncode != 0:
        raise OperatorError(f"pg_restore into {servers.target.where} failed, so it rolled back and the target is "
                            f"still empty: {psql_error(error.decode(errors='replace'), process.returncode)}")
    print(f"Restored in {time.monotonic() - started:.0f} s.", file=out, flush=True)
