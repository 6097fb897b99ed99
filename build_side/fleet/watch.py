"""Follow a fleet live: events (deduplicated), bench records, and the retained state as it changes.

`FleetWatch` owns the snapshot of one broker session and folds every message into it. Events are
deduplicated on (device, deployment_id, seq), the way DESIGN.md asks receivers to, and recorded in
the history (one transaction per batch of messages) together with bench records, since the broker
does not keep either.
`wait_for_outcomes` is what a deployment or a rollout wave waits with: a terminal event per device,
or, for what happened while nobody was listening, the device's retained reported state.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from build_side.fleet.broker import BrokerSession
from build_side.fleet.history import History
from build_side.fleet.status import FleetSnapshot, collect_snapshot
from build_side.fleet.topics import device_pattern, parse_topic
from edge_agent.contracts import TERMINAL_STATES, BenchRecord, DeploymentState, Event

EventHook = Callable[[Event], None]
BenchHook = Callable[[str, BenchRecord], None]


@dataclass(frozen=True)
class Outcome:
    device: str
    deployment_id: str
    state: DeploymentState | None  # None: timed out without a terminal state
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.state == DeploymentState.SUCCEEDED


class FleetWatch:
    def __init__(
        self,
        session: BrokerSession,
        history: History,
        on_event: EventHook | None = None,
        on_bench: BenchHook | None = None,
    ) -> None:
        self.session = session
        self.history = history
        self.fleet = session.fleet
        self.on_event = on_event
        self.on_bench = on_bench
        self._seen: set[tuple[str, str, int]] = set()
        self.terminal: dict[tuple[str, str], Event] = {}  # (device, deployment_id) -> terminal event
        self.unreadable: Counter[str] = Counter()  # device -> messages that were not events/records
        session.subscribe(device_pattern(self.fleet, "events"), device_pattern(self.fleet, "bench"))
        self.snapshot: FleetSnapshot = collect_snapshot(session, history)

    def refresh(self) -> FleetSnapshot:
        """Process what has arrived, then return the up-to-date snapshot."""
        self.pump(0)
        return self.snapshot

    def pump(self, timeout_s: float) -> list[Event]:
        """Wait up to `timeout_s` for messages, handle all that arrived; return the new events."""
        new: list[Event] = []
        first = self.session.get(timeout_s)
        if first is None:
            return new
        batch = [first, *self.session.drain()]
        for msg in batch:
            t = parse_topic(msg.topic)
            if t is None or t.fleet != self.fleet:
                continue
            if t.kind == "events" and t.device:
                event = self._event(t.device, msg.payload)
                if event is not None:
                    new.append(event)
            elif t.kind == "bench" and t.device:
                self._bench(t.device, msg.payload)
            else:
                self.snapshot.apply(msg)
        if new:  # one transaction for the whole batch: a thousand devices send thousands of events
            self.history.add_events(self.fleet, new)
            for event in new:
                if self.on_event:
                    self.on_event(event)
        return new

    def _event(self, device: str, payload: bytes) -> Event | None:
        try:
            event = Event.model_validate_json(payload)
        except ValidationError:
            self.unreadable[device] += 1  # counted and reported, never fatal to the watch
            return None
        if event.device != device:  # the topic is the authority on who sent it
            event = event.model_copy(update={"device": device})
        key = (device, event.deployment_id, event.seq)
        if key in self._seen:
            return None
        self._seen.add(key)
        self.snapshot.view(device).last_event = event
        if event.state in TERMINAL_STATES:
            self.terminal[(device, event.deployment_id)] = event
        return event

    def _bench(self, device: str, payload: bytes) -> None:
        try:
            record = BenchRecord.model_validate_json(payload)
        except ValidationError:
            self.unreadable[device] += 1
            return
        if self.history.add_bench(self.fleet, device, record):
            self.snapshot.view(device).last_bench = record
            if self.on_bench:
                self.on_bench(device, record)

    def unreadable_line(self) -> str | None:
        """`ignored 3 unreadable messages from 2 devices (a, b)`, or None when all were readable."""
        if not self.unreadable:
            return None
        names = sorted(self.unreadable)
        shown = ", ".join(names[:5]) + (f", and {len(names) - 5} more" if len(names) > 5 else "")
        total = sum(self.unreadable.values())
        return f"ignored {total} unreadable messages from {len(names)} devices ({shown})"

    def outcome(self, device: str, deployment_id: str) -> Outcome | None:
        """The terminal outcome of a device's deployment if known (from events or reported state)."""
        event = self.terminal.get((device, deployment_id))
        if event is not None:
            return Outcome(device, deployment_id, event.state, _detail(event))
        view = self.snapshot.devices.get(device)
        rep = view.reported if view else None
        if rep and rep.last_deployment == deployment_id and rep.last_state in TERMINAL_STATES:
            detail = f"{rep.last_error.code}: {rep.last_error.detail}" if rep.last_error else ""
            return Outcome(device, deployment_id, rep.last_state, detail)
        return None

    def wait_for_outcomes(
        self,
        targets: dict[str, str],
        timeout_s: float,
        should_stop: Callable[[], bool] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> dict[str, Outcome]:
        """Wait until each device in {device: deployment_id} reached a terminal state, or time out.

        `on_outcome` sees each device's outcome as soon as it is known (a rollout records it then,
        so a rollout killed mid-wave does not wait again for devices that finished)."""
        deadline = time.monotonic() + timeout_s
        results: dict[str, Outcome] = {}
        while True:
            for device, dep in targets.items():
                if device not in results and (found := self.outcome(device, dep)):
                    results[device] = found
                    if on_outcome:
                        on_outcome(found)
            left = deadline - time.monotonic()
            if len(results) == len(targets) or left <= 0 or (should_stop and should_stop()):
                break
            self.pump(min(left, 0.5))
        for device, dep in targets.items():
            if device not in results:
                results[device] = Outcome(device, dep, None, f"no terminal state within {timeout_s:.0f} s")
                if on_outcome:
                    on_outcome(results[device])
        return results

    def follow(self, devices: Iterable[str] | None = None, duration_s: float | None = None) -> None:
        """Pump until `duration_s` passes (forever when None); hooks see every new event and record."""
        wanted = set(devices) if devices else None
        hook = self.on_event
        if wanted is not None and hook is not None:
            self.on_event = lambda e: hook(e) if e.device in wanted else None
        try:
            end = None if duration_s is None else time.monotonic() + duration_s
            while end is None or time.monotonic() < end:
                self.pump(1.0 if end is None else max(min(end - time.monotonic(), 1.0), 0))
        finally:
            self.on_event = hook


def _detail(event: Event) -> str:
    if event.error:
        return f"{event.error.code}: {event.error.detail}"
    return event.message


__all__ = ["FleetWatch", "Outcome"]
