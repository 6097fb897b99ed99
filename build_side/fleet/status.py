"""A snapshot of the fleet from the broker's retained messages (reported, state, desired).

Subscribe to the fleet's wildcards, then `sync()`: the broker has delivered every retained message
once our own echo comes back, so the snapshot is complete without guessing a wait. Messages are
parsed leniently at this boundary: a device that publishes something malformed is shown with the
problem rather than breaking the operator's view of everyone else.

On a broker that delivers retained messages only to subscriptions without wildcards (RabbitMQ's
MQTT plugin; its URL carries `roll-call=on`), the snapshot also publishes a roll call and folds in
the reported states the online devices publish in answer, until none has come for `quiet_s`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from build_side.fleet.broker import BrokerSession, Message
from build_side.fleet.history import History
from build_side.fleet.topics import device_pattern, group_desired_pattern, parse_topic, roll_call_topic
from edge_agent.contracts import BenchRecord, DesiredState, Event, ReportedState


@dataclass
class DeviceView:
    device: str
    reported: ReportedState | None = None
    online: bool | None = None
    state_time: datetime | None = None
    desired: DesiredState | None = None
    last_event: Event | None = None
    last_bench: BenchRecord | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def groups(self) -> list[str]:
        return self.reported.groups if self.reported else []

    @property
    def active_bundle(self) -> str | None:
        return self.reported.active.bundle if self.reported and self.reported.active else None

    @property
    def last_seen(self) -> datetime | None:
        times = [t for t in (self.state_time, self.reported.time if self.reported else None) if t]
        if self.last_event:
            times.append(self.last_event.time)
        return max(times) if times else None

    def to_json(self) -> dict[str, Any]:
        r, a = self.reported, self.reported.active if self.reported else None
        return {
            "device": self.device,
            "online": self.online,
            "fleet": r.fleet if r else None,
            "groups": self.groups,
            "active": a.bundle if a else None,
            "variant": a.variant if a else None,
            "provider": a.provider if a else None,
            "applied_revision": r.applied_revision if r else None,
            "desired": self.desired.bundle.ref if self.desired else None,
            "desired_revision": self.desired.revision if self.desired else None,
            "last_state": str(r.last_state) if r and r.last_state else None,
            "last_error": r.last_error.model_dump(mode="json") if r and r.last_error else None,
            "last_event": self.last_event.model_dump(mode="json", by_alias=True) if self.last_event else None,
            "last_bench": bench_summary(self.last_bench) if self.last_bench else None,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "api_url": r.api_url if r else None,
            "problems": self.problems,
        }


@dataclass
class FleetSnapshot:
    fleet: str
    devices: dict[str, DeviceView] = field(default_factory=dict)
    group_desired: dict[str, DesiredState] = field(default_factory=dict)

    def view(self, device: str) -> DeviceView:
        return self.devices.setdefault(device, DeviceView(device))

    def members(self, group: str) -> list[str]:
        return sorted(d for d, v in self.devices.items() if group in v.groups)

    def highest_revision(self) -> int:
        """The highest revision any retained desired or reported state of the fleet carries."""
        revs = [s.revision for s in self.group_desired.values()]
        for v in self.devices.values():
            revs += [v.desired.revision] if v.desired else []
            revs += [v.reported.applied_revision] if v.reported and v.reported.applied_revision else []
        return max(revs, default=0)

    def apply(self, msg: Message) -> None:
        """Fold one retained (or live) message into the snapshot."""
        t = parse_topic(msg.topic)
        if t is None or t.fleet != self.fleet:
            return
        if t.kind == "group-desired" and t.group:
            state = _parse(DesiredState, msg.payload)
            if isinstance(state, DesiredState):
                self.group_desired[t.group] = state
            elif msg.payload == b"":
                self.group_desired.pop(t.group, None)
            return
        if not t.device or t.kind not in ("reported", "state", "desired"):
            return
        view = self.view(t.device)
        if msg.payload == b"":  # a cleared retained message
            return
        if t.kind == "state":
            view.online, view.state_time = parse_online(msg.payload)
            return
        model = ReportedState if t.kind == "reported" else DesiredState
        parsed = _parse(model, msg.payload)
        if isinstance(parsed, str):
            view.problems.append(f"{t.kind}: {parsed}")
        elif t.kind == "reported":
            view.reported = parsed  # type: ignore[assignment]
        else:
            view.desired = parsed  # type: ignore[assignment]

    def add_history(self, history: History) -> None:
        """Last events and bench records are not retained: take them from what the operator saw."""
        for device, event in history.last_events(self.fleet).items():
            if device in self.devices:
                self.devices[device].last_event = event
        for device, record in history.last_bench(self.fleet).items():
            if device in self.devices:
                self.devices[device].last_bench = record


def parse_online(payload: bytes) -> tuple[bool | None, datetime | None]:
    """`online` / `offline`, bare or as JSON ({"state": "online", "time": ...})."""
    text = payload.decode(errors="replace").strip()
    when = None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = text
    if isinstance(doc, dict):
        raw_time = doc.get("time")
        text = str(doc.get("state") or doc.get("status") or "")
        if isinstance(raw_time, str):
            try:
                when = datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
            except ValueError:
                when = None
    elif isinstance(doc, str):
        text = doc
    text = text.lower()
    return (True if text == "online" else False if text == "offline" else None), when


def _parse(model: type, payload: bytes) -> Any:
    try:
        return model.model_validate_json(payload)  # type: ignore[attr-defined]
    except ValidationError as exc:
        return f"unreadable ({exc.error_count()} problems: {exc.errors()[0]['msg']})"


def collect_snapshot(
    session: BrokerSession, history: History | None = None, quiet_s: float = 1.0
) -> FleetSnapshot:
    """Everything retained for the fleet, now. Subscriptions stay on, so live updates keep arriving."""
    snap = FleetSnapshot(session.fleet)
    # QoS 0: a broker queues at most so many QoS 1 messages per client (Mosquitto's
    # max_queued_messages, 1000 by default) and drops the rest of a burst of retained messages; at
    # QoS 0 it writes them straight out. A retained state missed is read again by the next snapshot.
    session.subscribe(
        device_pattern(session.fleet, "reported"),
        device_pattern(session.fleet, "state"),
        device_pattern(session.fleet, "desired"),
        group_desired_pattern(session.fleet),
        qos=0,
    )
    session.sync()
    for msg in session.drain():
        snap.apply(msg)
    if session.address.roll_call:
        roll_call(session, snap, quiet_s)
    if history is not None:
        snap.add_history(history)
    return snap


def roll_call(session: BrokerSession, snap: FleetSnapshot, quiet_s: float) -> None:
    """Ask every online device to publish its reported state again; fold in answers until quiet."""
    session.publish(roll_call_topic(session.fleet), b"{}")
    deadline = time.monotonic() + session.timeout_s + quiet_s
    while time.monotonic() < deadline:
        msg = session.get(quiet_s)
        if msg is None:
            return
        snap.apply(msg)


def bench_summary(record: BenchRecord) -> dict[str, Any]:
    """The figures a table shows: medians of the headline metrics."""
    figures = {k: round(v.median, 2) for k, v in record.metrics.items()}
    return {
        "model": record.model,
        "variant": record.variant,
        "provider": record.provider,
        "scenario": record.scenario,
        "time": record.time.isoformat(),
        "metrics": figures,
        "peak_rss_mb": record.peak_rss_mb,
        "rss_mb": record.rss_mb,
        "error": record.error,
    }


def bench_line(record: BenchRecord, short: bool = False) -> str:
    """One line: `decode 41.2 tok/s, TTFT 35 ms, prefill 300 tok/s` (`short`: the first two)."""
    m = {k: v.median for k, v in record.metrics.items()}
    parts = []
    if "decode_tok_s" in m:
        parts.append(f"decode {m['decode_tok_s']:.1f} tok/s")
    if "ttft_ms" in m:
        parts.append(f"TTFT {m['ttft_ms']:.0f} ms")
    if "prefill_tok_s" in m and not short:
        parts.append(f"prefill {m['prefill_tok_s']:.0f} tok/s")
    if not parts:
        parts = [f"{k} {v:.2f}" for k, v in list(m.items())[:3]]
    if record.error:
        parts.append(f"error: {record.error}")
    return ", ".join(parts) or "no figures"


__all__ = [
    "DeviceView",
    "FleetSnapshot",
    "bench_line",
    "bench_summary",
    "collect_snapshot",
    "parse_online",
]
