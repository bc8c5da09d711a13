"""Live progress while waiting: one line per service as its state changes (Progress), and what
changed in the containers since the wait began (Watch: restarts, exits, recreation).
"""

from __future__ import annotations

import sys
import time

from pathlib import Path

from posthog_compose.configuration import compose
from posthog_compose.errors import OperatorError
from posthog_compose.operations.stack.states import ContainerDetail, ServiceState


class Progress:
    """Live progress of a wait for health.

    On a terminal: one status line, redrawn in place and cut to the terminal's width (read again at
    every redraw, so a resized window never wraps it and no stale rows are left), e.g.
    ``[ 12s] 5/8 ready | starting: web, worker | waiting: plugins``. Elsewhere (a log, CI, a pipe):
    a plain line per service whose state changed. Both end with one summary line from finish().
    """

    def __init__(self, services: list[str], enabled: bool = True, stream=None):
        self.services = services
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last: dict[str, str] = {}
        self.started = time.monotonic()
        self.drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @staticmethod
    def width() -> int:
        import shutil

        return max(20, shutil.get_terminal_size((80, 24)).columns)

    def compact(self, labels: dict[str, str]) -> str:
        """The one-line view: ready count, then the other services grouped by their state."""
        ready = [name for name, label in labels.items() if label in ("healthy", "running")]
        groups: dict[str, list[str]] = {}
        for name, label in labels.items():
            if name not in ready:
                groups.setdefault(label, []).append(name)
        parts = [f"[{self.elapsed():4.0f}s] {len(ready)}/{len(labels)} ready"]
        parts += [f"{label}: {', '.join(names)}" for label, names in groups.items()]
        return " | ".join(parts)

    @staticmethod
    def fit(line: str, width: int) -> str:
        """``line`` cut to fit ``width`` columns, never touching the last one (some terminals wrap there)."""
        limit = width - 1
        return line if len(line) <= limit else line[:max(0, limit - 3)] + "..."

    def update(self, states: dict[str, ServiceState]) -> None:
        if not self.enabled:
            return
        labels = {name: states[name].label() if name in states else "waiting" for name in self.services}
        if self.tty:
            self.stream.write("\r\033[K" + self.fit(self.compact(labels), self.width()))
            self.drawn = True
        else:
            for name, label in labels.items():
                if self.last.get(name) != label:
                    self.stream.write(f"  [{self.elapsed():4.0f}s] {name:<10} {label}\n")
        self.stream.flush()
        self.last = labels

    def summary(self) -> str:
        ready = [name for name, label in self.last.items() if label in ("healthy", "running")]
        if self.last and len(ready) == len(self.last):
            return f"{len(ready)} of {len(self.services)} services ready in {self.elapsed():.0f}s."
        others = ", ".join(f"{name} ({label})" for name, label in self.last.items() if name not in ready)
        return f"{len(ready)} of {len(self.services)} services ready after {self.elapsed():.0f}s" + \
            (f"; not ready: {others}." if others else ".")

    def finish(self) -> None:
        """End the live view with one summary line (on a terminal it replaces the status line)."""
        if not self.enabled:
            return
        line = self.summary()
        if self.tty:
            self.stream.write("\r\033[K" + self.fit(line, self.width()) + "\n")
        else:
            self.stream.write(f"  {line}\n")
        self.stream.flush()


class Watch:
    """Judges services only once Compose has acted on them (reconcile, do not judge early).

    A container that had already exited or was restarting when the operation began is the state
    the operation is about to repair, not a failure; it counts as failed once it was (re)started
    after the operation began, its restart count rose, or Compose has finished. A container that was
    in a restart loop when the operation began (Docker's restart policy starts it again and again by
    itself) is judged only once Compose replaced it or has finished: its restarts are not Compose's.
    """

    def __init__(self, before: dict[str, ContainerDetail], began: float):
        self.before = before
        self.began = began

    def acted(self, name: str, now: dict[str, ContainerDetail], compose_done: bool) -> bool:
        if compose_done:
            return True
        detail = now.get(name)
        if detail is None:
            return False
        old = self.before.get(name)
        if old is None or old.id != detail.id:
            return True  # created by this operation
        if old.status == "restarting" or old.restart_count > 0:
            return False  # the restart policy's loop, not Compose: wait for the replacement
        return detail.started_at >= self.began - 1 or detail.restart_count > old.restart_count


class Dependencies:
    """Since when each service's dependencies (docker-compose.yml's depends_on) have all been ready.

    PostHog's processes exit while what they need is not there yet (web and the worker's launcher while
    ClickHouse is starting, the worker while web has not migrated), and Docker's restart policy brings
    them back: after a host or engine restart every container starts at once, in no order. Such a
    service is judged only by a start made once its dependencies were ready, not by its crashes before."""

    def __init__(self, depends: dict[str, list[str]]):
        self.depends = depends
        self.ready_since: dict[str, float] = {}

    def update(self, states: dict[str, ServiceState], expected: list[str], at: float) -> None:
        for name in expected:
            needed = [dep for dep in self.depends.get(name, []) if dep in expected]
            if all(dep in states and states[dep].ready for dep in needed):
                self.ready_since.setdefault(name, at)
            else:
                self.ready_since.pop(name, None)

    def judgeable(self, name: str, detail: ContainerDetail | None) -> bool:
        since = self.ready_since.get(name)
        return since is not None and (detail is None or detail.started_at >= since - 1)


def depends_on(root: Path) -> dict[str, list[str]]:
    """service -> the services it waits for, from docker-compose.yml ({} when it cannot be read: every
    service is then judged as soon as Compose acted on it)."""
    try:
        services = compose.load_document(root).data.get("services") or {}
    except (OperatorError, OSError, ValueError, AttributeError):
        return {}
    return {name: list((body or {}).get("depends_on") or []) for name, body in services.items()
            if isinstance(body, dict) and isinstance(body.get("depends_on") or [], (list, dict))}
