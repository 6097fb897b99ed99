"""The MQTT topic layout of DESIGN.md section 5, in one place, both ways (build and parse).

slmops/v1/{fleet}/{device}/desired          retained, fleet -> device
slmops/v1/{fleet}/group/{group}/desired     retained, fleet -> devices of a group
slmops/v1/{fleet}/{device}/reported         retained, device -> fleet
slmops/v1/{fleet}/{device}/state            retained `online`; the last will sets `offline`
slmops/v1/{fleet}/{device}/events           not retained
slmops/v1/{fleet}/{device}/bench            not retained
slmops/v1/{fleet}/_rollcall                 not retained, fleet -> devices: report again
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.transports.topics import roll_call_topic as roll_call_topic  # re-exported

PREFIX = "slmops/v1"
DEVICE_KINDS = ("desired", "reported", "state", "events", "bench")
SYNC = "_sync"  # operator-only barrier topic; `_` can never start a device id


def device_topic(fleet: str, device: str, kind: str) -> str:
    if kind not in DEVICE_KINDS:
        raise ValueError(f"unknown device topic kind {kind!r}")
    return f"{PREFIX}/{fleet}/{device}/{kind}"


def group_desired_topic(fleet: str, group: str) -> str:
    return f"{PREFIX}/{fleet}/group/{group}/desired"


def device_pattern(fleet: str, kind: str) -> str:
    """The wildcard that matches `kind` for every device of the fleet."""
    return f"{PREFIX}/{fleet}/+/{kind}"


def group_desired_pattern(fleet: str) -> str:
    return f"{PREFIX}/{fleet}/group/+/desired"


def sync_topic(fleet: str, token: str) -> str:
    return f"{PREFIX}/{fleet}/{SYNC}/{token}"


@dataclass(frozen=True)
class Topic:
    fleet: str
    kind: str  # one of DEVICE_KINDS, "group-desired" or "sync"
    device: str | None = None
    group: str | None = None
    token: str | None = None


def parse_topic(topic: str) -> Topic | None:
    """The parts of a slmops topic, or None for anything else."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:2]) != PREFIX:
        return None
    fleet = parts[2]
    if len(parts) == 6 and parts[3] == "group" and parts[5] == "desired":
        return Topic(fleet, "group-desired", group=parts[4])
    if len(parts) == 5 and parts[3] == SYNC:
        return Topic(fleet, "sync", token=parts[4])
    if len(parts) == 5 and parts[4] in DEVICE_KINDS and parts[3] != "group":
        return Topic(fleet, parts[4], device=parts[3])
    return None
