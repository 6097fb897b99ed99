"""The dashboard's live view of the fleet: one broker session, one FleetWatch, one thread.

The thread wakes every `tick_s`, folds whatever arrived into the watch's snapshot (the same code the
CLI uses), and hands one `Change` (which devices changed, which events and bench records are new) to
the listener. Gathering per tick rather than per message is what keeps a rollout over a thousand
devices from queueing a thousand page updates: a burst becomes one update per tick.
Request handlers read the snapshot under the same lock, so they never see it half-applied.

Every tick with a change is a new `version`. A page is rendered at some version and its event stream
connects a moment later; `since(version)` is what changed in between (devices, bench, and the last
RECENT events), so nothing that happened in that gap is missed.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from build_side.fleet.broker import BrokerSession, Message
from build_side.fleet.history import History
from build_side.fleet.status import FleetSnapshot
from build_side.fleet.topics import parse_topic
from build_side.fleet.watch import FleetWatch
from edge_agent.contracts import BenchRecord, DeploymentState, Event

T = TypeVar("T")
RECENT = 20_000  # events kept in memory for pages that reconnect or were rendered a moment ago


@dataclass
class Change:
    devices: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    bench: set[str] = field(default_factory=set)
    version: int = 0  # the tick that made it; pages say which version they show

    def __bool__(self) -> bool:
        return bool(self.devices or self.events or self.bench)


class _Tap:
    """The broker session as FleetWatch sees it, noting which device each delivered message is about."""

    def __init__(self, session: BrokerSession) -> None:
        self._session = session
        self.touched: set[str] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)

    def subscribe(self, *patterns: str, qos: int = 0) -> None:
        """At QoS 0 whatever the caller asks: the dashboard only looks, and a burst must not make the
        broker drop messages."""
        self._session.subscribe(*patterns, qos=0)

    def get(self, timeout_s: float) -> Message | None:
        msg = self._session.get(timeout_s)
        if msg is not None:
            self._note(msg)
        return msg

    def drain(self) -> list[Message]:
        msgs = self._session.drain()
        for msg in msgs:
            self._note(msg)
        return msgs

    def _note(self, msg: Message) -> None:
        t = parse_topic(msg.topic)
        if t is not None and t.device:
            self.touched.add(t.device)


class _Recorder:
    """The history as the watch sees it, with events written by a thread of their own.

    Recording an event is one SQLite transaction (milliseconds, an fsync); a rollout over a thousand
    devices sends thousands of events within seconds, and written in line they would hold the page
    updates back by as long. The watch already deduplicates; the writer only has to keep up eventually.
    """

    def __init__(self, history: History) -> None:
        self._history = history
        self._queue: queue.Queue[tuple[str, Event] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._write, name="dashboard-recorder", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> object:
        return getattr(self._history, name)

    def add_event(self, fleet: str, event: Event) -> bool:
        self._queue.put((fleet, event))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            self._history.add_event(*item)


class LiveFleet:
    def __init__(
        self, broker: str, fleet: str, history: History, tick_s: float = 0.2, timeout_s: float = 10.0
    ) -> None:
        self.history = history
        self.fleet = fleet
        self.tick_s = tick_s
        self.listener: Callable[[Change, FleetSnapshot], None] | None = None  # runs under the lock
        self._session = BrokerSession(broker, fleet, timeout_s=timeout_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bench: set[str] = set()
        self._tap: _Tap | None = None
        self._watch: FleetWatch | None = None
        self._recorder: _Recorder | None = None
        # the latest state each device reported for each deployment, for the rollout page
        self.deployment_states: dict[tuple[str, str], DeploymentState] = {}
        self.version = 0
        self._changed: dict[str, int] = {}  # device -> version of its last change
        self._bench_changed: dict[str, int] = {}
        self._recent: deque[tuple[int, Event]] = deque(maxlen=RECENT)

    def start(self) -> LiveFleet:
        """Connect, take the retained snapshot, then follow live messages on a thread."""
        self._session.connect()
        self._tap = _Tap(self._session)
        self._recorder = _Recorder(self.history)
        self._watch = FleetWatch(
            cast(BrokerSession, self._tap), cast(History, self._recorder), on_bench=self._on_bench
        )
        for device, event in self.history.last_events(self.fleet).items():
            self.deployment_states[(device, event.deployment_id)] = event.state
        self._tap.touched.clear()
        self._thread = threading.Thread(target=self._run, name="dashboard-live", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._session.close()
        if self._recorder:
            self._recorder.close()

    def read(self, fn: Callable[[FleetSnapshot], T]) -> T:
        """Run `fn` on the snapshot while no message is being applied to it."""
        assert self._watch is not None, "start() first"
        with self._lock:
            return fn(self._watch.snapshot)

    def read_versioned(self, fn: Callable[[FleetSnapshot], T]) -> tuple[int, T]:
        """`read`, and the version the snapshot was at."""
        assert self._watch is not None, "start() first"
        with self._lock:
            return self.version, fn(self._watch.snapshot)

    def since(self, version: int, fn: Callable[[Change, FleetSnapshot], T]) -> T:
        """Run `fn` on what changed after `version` (as one Change) and the snapshot, under the lock."""
        assert self._watch is not None, "start() first"
        with self._lock:
            change = Change(
                {d for d, v in self._changed.items() if v > version},
                [e for v, e in self._recent if v > version],
                {d for d, v in self._bench_changed.items() if v > version},
                self.version,
            )
            return fn(change, self._watch.snapshot)

    def recent_events(self, device: str) -> list[Event]:
        """The events of `device` seen lately (some may not be in the history yet: it is written behind)."""
        with self._lock:
            return [e for _, e in self._recent if e.device == device]

    def _on_bench(self, device: str, record: BenchRecord) -> None:
        self._bench.add(device)

    def _run(self) -> None:
        assert self._watch is not None and self._tap is not None
        while not self._stop.wait(self.tick_s):
            with self._lock:
                events = self._watch.pump(0)
                for event in events:
                    self.deployment_states[(event.device, event.deployment_id)] = event.state
                change = Change(self._tap.touched, events, self._bench)
                self._tap.touched, self._bench = set(), set()
                if not change:
                    continue
                self.version = change.version = self.version + 1
                self._changed.update(dict.fromkeys(change.devices, self.version))
                self._bench_changed.update(dict.fromkeys(change.bench, self.version))
                self._recent.extend((self.version, e) for e in events)
                if self.listener:
                    self.listener(change, self._watch.snapshot)


__all__ = ["Change", "LiveFleet"]
