"""The live progress of `invoke up`: fitted to the terminal's width on a terminal, plain lines
elsewhere, and one summary line in both."""

from __future__ import annotations

import io
import os
import re

from hypothesis import given, settings, strategies as st

from posthog_compose.configuration.manifest import SERVICES
from posthog_compose.operations.stack import Progress, ServiceState


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _state(name: str, label: str) -> ServiceState:
    if label == "exited":
        return ServiceState(name, "exited", exit_code=137)
    if label in ("healthy", "starting", "unhealthy"):
        return ServiceState(name, "running", health=label)
    return ServiceState(name, label)


LABELS = st.sampled_from(["healthy", "starting", "unhealthy", "exited", "restarting", "created", "missing"])


@settings(max_examples=300, deadline=None)
@given(width=st.integers(min_value=20, max_value=300),
       rounds=st.lists(st.dictionaries(st.sampled_from(SERVICES), LABELS), min_size=1, max_size=6))
def test_on_a_terminal_no_line_is_wider_than_the_terminal(width, rounds):
    import shutil
    from unittest import mock

    with mock.patch.object(shutil, "get_terminal_size", lambda fallback=(80, 24): os.terminal_size((width, 24))):
        _draw_and_check(width, rounds)


def _draw_and_check(width, rounds):
    stream = Terminal()
    progress = Progress(list(SERVICES), stream=stream)
    for labels in rounds:
        progress.update({name: _state(name, label) for name, label in labels.items()})
    progress.finish()
    output = stream.getvalue()
    assert output.endswith("\n") and output.count("\n") == 1  # only the summary ends a line: no stale rows
    for drawn in output.split("\r\033[K")[1:]:
        visible = drawn.rstrip("\n")
        assert "\n" not in visible and len(visible) < width, (width, visible)
    assert width < 60 or re.search(r"\d of 8 services ready", output.rsplit("\r\033[K", 1)[-1])


def test_the_terminal_width_is_read_at_every_redraw(monkeypatch):
    widths = iter([120, 40])
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=(80, 24): os.terminal_size((next(widths), 24)))
    stream = Terminal()
    progress = Progress(list(SERVICES), stream=stream)
    states = {name: ServiceState(name, "running", health="starting") for name in SERVICES}
    progress.update(states)
    progress.update(states)
    first, second = stream.getvalue().split("\r\033[K")[1:]
    assert 40 < len(first) < 120 and len(second) < 40 and second.endswith("...")


def test_outside_a_terminal_plain_lines_per_change_and_a_summary():
    stream = io.StringIO()
    progress = Progress(["db", "web"], stream=stream)
    progress.update({"db": ServiceState("db", "running", health="starting")})
    progress.update({"db": ServiceState("db", "running", health="starting")})  # no change: no line
    progress.update({"db": ServiceState("db", "running", health="healthy"), "web": ServiceState("web", "running")})
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and "\033" not in stream.getvalue()
    assert [line.split("] ", 1)[1].split() for line in lines[:-1]] == [["db", "starting"], ["web", "waiting"],
                                                                        ["db", "healthy"], ["web", "running"]]
    assert re.fullmatch(r"  2 of 2 services ready in \d+s\.", lines[-1])


def test_a_failed_wait_summarises_what_is_not_ready():
    stream = io.StringIO()
    progress = Progress(["db", "web"], stream=stream)
    progress.update({"db": ServiceState("db", "running", health="healthy"), "web": ServiceState("web", "exited", exit_code=1)})
    progress.finish()
    assert stream.getvalue().splitlines()[-1].startswith("  1 of 2 services ready after ")
    assert "not ready: web (exited (1))" in stream.getvalue()
