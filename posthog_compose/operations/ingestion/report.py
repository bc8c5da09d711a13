"""What the probe shows: live progress while it waits (one line redrawn on a terminal, a line per change
elsewhere), then the hops with the time each was first seen, the consumer lag of every group, and the
same as one JSON document for machines.
"""

from __future__ import annotations

import sys
import time

from posthog_compose.cli import table
from posthog_compose.operations.ingestion.lag import LagRow
from posthog_compose.operations.ingestion.tracker import Tracker


class Progress:
    """``[ 3.2s] waiting for the plugin server to consume it (...)``: redrawn in place on a terminal, else
    printed again only when what the probe waits for changes."""

    def __init__(self, stream=None, started: float | None = None):
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic() if started is None else started
        self.last = ""
        self.drawn = False

    def update(self, waiting: str) -> None:
        if not waiting:
            return
        line = f"  [{time.monotonic() - self.started:5.1f}s] waiting for {waiting}"
        if self.tty:
            import shutil

            width = max(20, shutil.get_terminal_size((80, 24)).columns) - 1
            self.stream.write("\r\033[K" + (line if len(line) <= width else line[:width - 3] + "..."))
            self.drawn = True
        elif waiting != self.last:
            self.stream.write(line + "\n")
        self.last = waiting
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def hop_table(tracker: Tracker) -> str:
    rows = [("Hop", "Seen after sending", "Detail")]
    for number, state in enumerate(tracker.states, 1):
        seen = _seconds(state.seconds) if state.observable else "n/a"
        detail = state.detail if state.reached or not state.observable else "not seen"
        rows.append((f"{number}. {state.hop.title}", seen, detail))
    return table(rows)


def lag_table(rows: list[LagRow]) -> str:
    if not rows:
        return "  (no consumer group reported)"
    shown = [("GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER")]
    for row in rows:
        shown.append((row.group, row.topic, str(row.partition), "-" if row.committed is None else str(row.committed),
                      "-" if row.end is None else str(row.end), "-" if row.lag is None else str(row.lag), row.member))
    return "\n".join("  " + line for line in table(shown).splitlines())


def text(tracker: Tracker, lag_note: str = "") -> str:
    lines = [hop_table(tracker), "", "Consumer lag (kafka-consumer-groups --describe --all-groups):"]
    lines.append(lag_note if lag_note else lag_table(tracker.rows))
    return "\n".join(lines)


def document(tracker: Tracker, event: dict, timeout: float, elapsed: float, stopped: str | None,
             next_step: str | None, lag_note: str = "") -> dict:
    return {
        "ok": stopped is None,
        "event": event,
        "timeout_seconds": timeout,
        "elapsed_seconds": round(elapsed, 3),
        "hops": [{"hop": state.hop.key, "title": state.hop.title, "service": state.hop.service,
                  "observable": state.observable, "reached": state.reached,
                  "seconds": None if state.seconds is None else round(state.seconds, 3), "detail": state.detail}
                 for state in tracker.states],
        "stopped_before": stopped,
        "next_step": next_step,
        "lag": [row.as_dict() for row in tracker.rows],
        "lag_note": lag_note or None,
    }
