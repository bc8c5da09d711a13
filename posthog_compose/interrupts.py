"""Ctrl-C acknowledged at once, in one wording, by every task.

A task may need many seconds to stop safely after Ctrl-C: a container Compose is replacing must be
finished, a migration rolled back, a paused ClickHouse started again. Before, the operator saw nothing
until it was over (Ctrl-C on `up` took 35 s, silently). Now the signal handler says at once, within
the second, which step the task lets finish (ACKNOWLEDGEMENT, printed by ``acknowledge`` only), and the
task then stops as it always did: outside a critical section KeyboardInterrupt unwinds it (each operation
undoes what it must on its way out), inside one (journal.critical) the signal waits for the section's end.

Read-only commands running in any thread (``abortable``) are ended at once: a task waits for its probe
threads on its way out, and they must not wait for their own deadlines.

The step named is the innermost one the main thread is in: a section (``step("...")``) an operation
opens around a long wait, or the command the Runner is running (engine.Runner.run names each), else
the task itself. Only the main thread names steps: signal handlers run there, and the steps of probe
threads would name what is not being waited for.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

#: The one wording of an acknowledged Ctrl-C (or SIGTERM inside a critical section).
ACKNOWLEDGEMENT = "stopping after the current step: {step}"

_steps: list[str] = []
#: Read-only commands running now, in any thread (engine.Runner.run adds them): Ctrl-C ends them at once,
#: so that a probe thread the task must wait for on its way out does not wait for its own deadline.
_abortable: set = set()
_last_said: list[str] = []  # the step last acknowledged, so that one wait is not announced twice


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def current() -> str:
    """The innermost step the main thread is in."""
    return _steps[-1] if _steps else "the current command"


@contextmanager
def step(name: str):
    """Name what the main thread waits for while the block runs (nothing elsewhere)."""
    if not in_main_thread():
        yield
        return
    _steps.append(name)
    try:
        yield
    finally:
        # Pop our own entry even if an inner one was left (a generator closed late).
        if name in _steps:
            del _steps[len(_steps) - 1 - _steps[::-1].index(name)]


def acknowledge(name: str | None = None, from_handler: bool = False) -> None:
    """Say ACKNOWLEDGEMENT for ``name`` (default: the current step), once per step. From a signal
    handler it is written straight to the descriptor (the main thread may be inside a write of the
    same stream, which Python refuses to enter twice); the descriptor is masked like all output."""
    name = name or current()
    if _last_said and _last_said[-1] == name:
        return
    _last_said[:] = [name]
    text = "\n" + ACKNOWLEDGEMENT.format(step=name) + "\n"
    if from_handler:
        try:
            os.write(sys.stdout.fileno(), text.encode("utf-8", "replace"))
            return
        except (OSError, ValueError, AttributeError):
            pass  # a stream without a descriptor (tests capturing output): print below
    try:
        print(text, end="", flush=True)
    except (OSError, ValueError, RuntimeError):
        pass  # a closed or busy stream must not turn Ctrl-C into another error


_requested: list[bool] = []  # set by the handler: Ctrl-C was pressed during this task


def requested() -> bool:
    """Whether Ctrl-C was pressed during the task (a probe thread then starts no new command)."""
    return bool(_requested)


def watch(process) -> None:
    """End ``process`` (a read-only command: nothing is left half-done when it ends) on Ctrl-C, whichever
    thread waits for it, until ``forget``. A set's add and discard are atomic: the handler takes no lock."""
    _abortable.add(process)


def forget(process) -> None:
    _abortable.discard(process)


@contextmanager
def abortable(process):
    """``watch`` while the block runs."""
    watch(process)
    try:
        yield process
    finally:
        forget(process)


def _stop(signum, frame) -> None:
    _requested.append(True)
    acknowledge(from_handler=True)
    for process in list(_abortable):
        try:
            process.terminate()
        except OSError:
            pass  # it has just ended
    raise KeyboardInterrupt


@contextmanager
def acknowledged(task: str):
    """Run a task with Ctrl-C acknowledged at once (see the module's docstring); the previous handler
    comes back when it ends. Outside the main thread it changes nothing."""
    if not in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _stop)
    _last_said.clear()
    _requested.clear()
    try:
        with step(f"`invoke {task}`"):
            yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()  # a Ctrl-C belongs to its task: what runs after it in this process starts clean
