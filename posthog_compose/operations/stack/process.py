"""The `compose up` child a wait watches: how long it may take to finish, and the lines of its
output that say why it failed.
"""

from __future__ import annotations

import subprocess

from posthog_compose.operations.engine import Runner


def _start_failed(runner: Runner, process: subprocess.Popen) -> str:
    """`compose up` failed: one line in the words of the task that ran it."""
    from posthog_compose.operations.engine import explain

    known = explain(_error_output(process), runner.task)
    if known:
        return known
    what = f"`invoke {runner.task}`" if runner.task else "`docker compose up`"
    return f"{what} could not start the services (Compose exit {process.returncode}): {_process_error(process)}"


#: After an interrupt, how long Compose may go on replacing containers before it is stopped.
COMPOSE_FINISH_SECONDS = 30.0


def _error_output(process: subprocess.Popen) -> str:
    """What `compose up` has written to its error log so far ("" when it has none or it is closed)."""
    log = getattr(process, "error_log", None)
    if log is None or log.closed:
        return ""
    log.flush()
    log.seek(0)
    return log.read()


def _process_error(process: subprocess.Popen) -> str:
    """The last error line `compose up` wrote."""
    output = _error_output(process)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line]
    return (errors or lines or ["no output"])[-1][:300]
