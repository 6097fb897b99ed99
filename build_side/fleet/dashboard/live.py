"""The dashboard's live view of the fleet: one broker session, one FleetWatch, one thread.

The thread wakes every `tick_s`, folds whatever arrived into the watch's snapshot (the same code the
CLI uses), and hands one `Change` (which devices changed, which events and bench records are new) to
the listener. Gathering per tick rather than per message is what keeps a rollout over a thousand
devices from queueing a thousand page updates: a burst becomes one update per tick.
Request handlers read the snapshot under the same lock, so they never see it half-applied.
"""

from __future__ import annotations

import queue
import threading
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


@dataclass
class Change:
    devices: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    bench: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.devices or self.events or self.bench)


class _Tap:
    """The broker session as FleetWatch sees it, noting which device each delivered message is about."""

    def __init__(self, session: BrokerSession) -> None:
        self._session = session
        self.touched: set[str] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)

    def subscribe(self, *patterns: str) -> None:
        """At QoS 0: the dashboard only looks, and a burst must not make the broker drop messages."""
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
                if change and self.listener:
                    self.listener(change, self._watch.snapshot)


__all__ = ["Change", "LiveFleet"]
