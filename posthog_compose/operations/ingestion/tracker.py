"""Following one event along the path: what each look at Kafka's consumer groups and at ClickHouse's events
table says about the hops it has passed, when each was first seen, and which hop it stopped before.

A hop is reached when Kafka or ClickHouse shows it, never by guessing from time: capture's 200 means Kafka
acknowledged the event (posthog/api/capture.py:318-342 waits for it); the plugin server consumed it when its
group's committed offset on events_plugin_ingestion reaches the log end seen after capture; it produced the
row when clickhouse_events_json grew past where it was before the event was sent; ClickHouse consumed it
when group1's committed offset reaches that end; and it is stored when the row is in `events`. The row
proves every hop before it. A hop that cannot be seen from this host (Kafka or ClickHouse external) is
left out of the verdict and said so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from posthog_compose.operations.ingestion import lag as lags
from posthog_compose.operations.ingestion.path import (
    CLICKHOUSE_GROUP,
    EVENTS_TOPIC,
    HOPS,
    INGESTION_TOPIC,
    PLUGIN_GROUP,
    Hop,
)


@dataclass
class HopState:
    hop: Hop
    seconds: float | None = None  # since the event was sent; None while not reached
    detail: str = ""
    observable: bool = True

    @property
    def reached(self) -> bool:
        return self.seconds is not None


def _caught_up(current: dict[int, tuple[int | None, int | None]], target: dict[int, int]) -> bool:
    return bool(target) and all((current.get(p, (None, None))[0] or 0) >= end for p, end in target.items())


def _lag_text(current: dict[int, tuple[int | None, int | None]], target: dict[int, int] | None, group: str,
              topic: str) -> str:
    if not current:
        return f"group {group} has no offset on {topic}: it has never read it"
    if not target:
        return f"group {group}"
    behind = sum(max(0, end - (current.get(p, (None, None))[0] or 0)) for p, end in target.items())
    return f"group {group} is {behind} message(s) behind it on {topic}"


@dataclass
class Tracker:
    """The hops of one probe; ``kafka`` and ``clickhouse`` say whether those can be seen from here."""

    kafka: bool = True
    clickhouse: bool = True
    states: list[HopState] = field(default_factory=list)
    baseline_events: dict[int, int] = field(default_factory=dict)
    target_ingestion: dict[int, int] | None = None
    target_events: dict[int, int] | None = None
    rows: list[lags.LagRow] = field(default_factory=list)
    waiting: str = ""

    def __post_init__(self):
        visible = {"capture": True, "plugin-server": self.kafka, "events-topic": self.kafka,
                   "clickhouse": self.kafka, "stored": self.clickhouse}
        self.states = [HopState(hop, observable=visible[hop.key]) for hop in HOPS]
        for state in self.states:
            if not state.observable:
                where = "Kafka is external" if state.hop.key != "stored" else "ClickHouse is external"
                state.detail = f"not seen from this host ({where})"

    def state(self, key: str) -> HopState:
        return next(state for state in self.states if state.hop.key == key)

    def _reach(self, key: str, at: float, detail: str) -> None:
        state = self.state(key)
        if not state.reached:
            state.seconds, state.detail = at, detail

    def baseline(self, rows: list[lags.LagRow]) -> None:
        """Where clickhouse_events_json ended before the event was sent."""
        self.baseline_events = lags.topic_ends(rows, EVENTS_TOPIC)

    def sent(self, at: float, detail: str) -> None:
        self._reach("capture", at, detail)

    def observe_lag(self, rows: list[lags.LagRow], at: float) -> None:
        self.rows = rows
        if self.target_ingestion is None and lags.topic_ends(rows, INGESTION_TOPIC):
            self.target_ingestion = lags.topic_ends(rows, INGESTION_TOPIC)  # the first look after capture's 200
        plugin = lags.offsets(rows, PLUGIN_GROUP, INGESTION_TOPIC)
        if self.target_ingestion is not None and _caught_up(plugin, self.target_ingestion):
            self._reach("plugin-server", at, f"{PLUGIN_GROUP} committed {sum(self.target_ingestion.values())} "
                                             f"on {INGESTION_TOPIC}")
        if not self.state("plugin-server").reached:
            behind = _lag_text(plugin, self.target_ingestion, PLUGIN_GROUP, INGESTION_TOPIC)
            self.waiting = f"the plugin server to consume it ({behind})"
            return
        ends = lags.topic_ends(rows, EVENTS_TOPIC)
        if self.target_events is None and any(end > self.baseline_events.get(p, 0) for p, end in ends.items()):
            self.target_events = ends
            self._reach("events-topic", at, f"{EVENTS_TOPIC} log end {sum(ends.values())} "
                                            f"(was {sum(self.baseline_events.values())})")
        if self.target_events is None:
            self.waiting = f"the plugin server to produce its row to {EVENTS_TOPIC}"
            return
        clickhouse = lags.offsets(rows, CLICKHOUSE_GROUP, EVENTS_TOPIC)
        if _caught_up(clickhouse, self.target_events):
            self._reach("clickhouse", at, f"{CLICKHOUSE_GROUP} committed {sum(self.target_events.values())} "
                                          f"on {EVENTS_TOPIC}")
        else:
            behind = _lag_text(clickhouse, self.target_events, CLICKHOUSE_GROUP, EVENTS_TOPIC)
            self.waiting = f"ClickHouse to consume it ({behind})"
            return
        self.waiting = "the row in the events table"

    def observe_stored(self, count: int, at: float) -> None:
        if count < 1:
            return
        for state in self.states:
            if state.observable and not state.reached:
                state.seconds = at
                state.detail = "shown by the stored row" if state.hop.key != "stored" else f"{count} row(s)"

    @property
    def done(self) -> bool:
        return all(state.reached for state in self.states if state.observable)

    def stopped(self) -> HopState | None:
        """The first hop the event has not been seen to pass (None when it passed them all)."""
        return next((state for state in self.states if state.observable and not state.reached), None)

    def lag_detail(self, key: str) -> str:
        """The lag behind a stopped hop, from the last look at the consumer groups."""
        if key == "plugin-server":
            return _lag_text(lags.offsets(self.rows, PLUGIN_GROUP, INGESTION_TOPIC), self.target_ingestion,
                             PLUGIN_GROUP, INGESTION_TOPIC)
        if key == "clickhouse":
            return _lag_text(lags.offsets(self.rows, CLICKHOUSE_GROUP, EVENTS_TOPIC), self.target_events,
                             CLICKHOUSE_GROUP, EVENTS_TOPIC)
        return ""
