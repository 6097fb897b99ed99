"""MQTT 5 or 3.1.1: the one place that knows what differs between the two for slmops.

The contract needs nothing only MQTT 5 has (docs/design.md, beside the topic layout): expiry lives
in the signed desired document, identities in the topic and payload, and a persistent session is
`clean_session=False` under 3.1.1 (the broker keeps it as long as it is configured to) instead of
`clean_start=False` plus a session expiry. So a client differs only in how it is built and how it
connects; both the agent and the operator ask this module for those two things.

A broker that does not speak the version asked for either answers CONNACK with "unsupported
protocol version" (NATS) or closes the socket without a CONNACK (RabbitMQ with MQTT 5): both end up
as one line from `refused_line`, naming the URL and the version tried.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MqttProtocol = Literal["5", "3.1.1"]
PROTOCOLS: tuple[str, ...] = ("5", "3.1.1")
_ALIASES = {"5": "5", "5.0": "5", "v5": "5", "mqttv5": "5", "3.1.1": "3.1.1", "311": "3.1.1"}
_ALIASES |= {"v311": "3.1.1", "mqttv311": "3.1.1", "4": "3.1.1"}  # 4: the protocol level byte


def normalize_protocol(value: object) -> str:
    """`5`, `"5"`, `"3.1.1"` (and the spellings mosquitto_pub takes) -> "5" or "3.1.1"."""
    text = str(value).strip().lower()
    if text not in _ALIASES:
        raise ValueError(f"MQTT protocol {value!r} is not one of {', '.join(PROTOCOLS)}")
    return _ALIASES[text]


def protocol_from_url(url: str) -> str | None:
    """The `?protocol=` of a broker URL, normalized; None when the URL does not say."""
    values = parse_qs(urlsplit(url).query).get("protocol")
    return normalize_protocol(values[-1]) if values else None


def new_client(protocol: str, client_id: str | None = None, persistent: bool = False) -> mqtt.Client:
    """A paho client for `protocol`; `persistent` keeps subscriptions and queued QoS 1 across reconnects."""
    client_id = client_id or f"slmops-{uuid.uuid4().hex[:10]}"
    if protocol == "5":
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    return mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=not persistent
    )


def connect_options(protocol: str, persistent: bool = False, session_expiry_s: int = 0) -> dict[str, Any]:
    """Keyword arguments for `connect`/`connect_async` (3.1.1 sets its session flag on the client)."""
    if protocol != "5":
        return {}
    if not persistent:
        return {"clean_start": True}
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    return {"clean_start": False, "properties": props}


def refused_line(url: str, protocol: str, reason: object) -> str:
    """One line for a broker that turned our CONNECT down (or closed the socket instead of answering)."""
    text = str(reason)
    other = "3.1.1" if protocol == "5" else "5"
    hint = ""
    if "protocol" in text.lower():
        hint = f"; try MQTT {other} (?protocol={other})"
    elif "closed" in text.lower():
        hint = (
            f" (a broker that does not speak MQTT {protocol} does that, e.g. RabbitMQ with 5: try "
            f"?protocol={other}; so does one out of connections or file descriptors)"
        )
    return f"the MQTT broker at {url} refused MQTT {protocol}: {text}{hint}"


__all__ = [
    "PROTOCOLS",
    "MqttProtocol",
    "connect_options",
    "new_client",
    "normalize_protocol",
    "protocol_from_url",
    "refused_line",
]
