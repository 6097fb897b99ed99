"""The operator's MQTT session (5 or 3.1.1): publish retained QoS 1 and wait for PUBACK, subscribe, sync.

paho-mqtt runs its network loop on a thread; every message received is put on one queue that the
caller drains on its own thread, so no slmops code runs inside paho's callbacks except that hand-off.
`sync()` is a barrier: after it returns, every retained message of the subscriptions made so far has
been delivered (the broker sends retained messages right after SUBACK, before our own echo).

The URL chooses the protocol (`?protocol=3.1.1`, default 5) and, for a broker that delivers retained
messages only to subscriptions without wildcards (RabbitMQ's MQTT plugin), `?roll-call=on`: the
snapshot then asks the devices to publish their reported state again (status.py).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse

import paho.mqtt.client as mqtt

from build_side.fleet.errors import BrokerError
from build_side.fleet.topics import sync_topic
from edge_agent.transports.mqtt_protocol import (
    connect_options,
    new_client,
    normalize_protocol,
    refused_line,
)

_QUERY_KEYS = {"protocol", "roll-call"}
_YES, _NO = {"1", "on", "yes", "true"}, {"0", "off", "no", "false"}


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    protocol: str = "5"
    roll_call: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://[user:pass@]host[:1883][?protocol=3.1.1&roll-call=on]` or `mqtts://...:8883`."""
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise BrokerError(f"{url!r} is not a broker URL (expected mqtt://host:port or mqtts://...)")
        query = {k: v[-1] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - _QUERY_KEYS)
        if unknown:
            raise BrokerError(
                f"{url!r}: unknown broker URL option {unknown[0]!r} (known: protocol, roll-call)"
            )
        try:
            protocol = normalize_protocol(query.get("protocol", "5"))
        except ValueError as exc:
            raise BrokerError(f"{url!r}: {exc}") from exc
        roll_call = query.get("roll-call", "off").lower()
        if roll_call not in _YES | _NO:
            raise BrokerError(f"{url!r}: roll-call={roll_call!r} is not on or off")
        tls = parsed.scheme == "mqtts"
        return cls(
            host=parsed.hostname,
            port=parsed.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            protocol=protocol,
            roll_call=roll_call in _YES,
        )

    def __str__(self) -> str:
        """The URL without credentials, options included (what error messages name)."""
        options = [f"protocol={self.protocol}"] if self.protocol != "5" else []
        options += ["roll-call=on"] if self.roll_call else []
        query = f"?{'&'.join(options)}" if options else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}{query}"


class BrokerSession:
    """One connection to the broker; use as a context manager."""

    def __init__(self, url: str, fleet: str, timeout_s: float = 10.0) -> None:
        self.address = BrokerAddress.parse(url)
        self.fleet = fleet
        self.timeout_s = timeout_s
        self.messages: queue.Queue[Message] = queue.Queue()
        self._client = new_client(self.address.protocol, f"slmops-op-{uuid.uuid4().hex[:10]}")
        if self.address.username:
            self._client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self._client.tls_set()
        self._connected = threading.Event()
        self._connect_rc: object = None
        self._closed_early = False
        self._acks: dict[int, tuple[threading.Event, list[object]]] = {}
        self._acks_lock = threading.Lock()
        self._sync_seen: set[str] = set()
        self._sync_cond = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._sync_subscribed = False

    # connection --------------------------------------------------------------------------------------

    def __enter__(self) -> BrokerSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        try:
            self._client.connect(
                self.address.host, self.address.port, keepalive=30, **connect_options(self.address.protocol)
            )
        except OSError as exc:
            raise BrokerError(f"cannot reach the MQTT broker at {self.address} ({exc})") from exc
        self._client.loop_start()
        if not self._connected.wait(self.timeout_s):
            self.close()
            raise BrokerError(f"the MQTT broker at {self.address} did not answer within {self.timeout_s} s")
        if self._closed_early:
            self.close()
            reason = "it closed the connection without answering CONNECT"
            raise BrokerError(refused_line(str(self.address), self.address.protocol, reason))
        if getattr(self._connect_rc, "is_failure", False):
            self.close()
            raise BrokerError(refused_line(str(self.address), self.address.protocol, self._connect_rc))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self._connect_rc = reason_code
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if not self._connected.is_set():  # closed before any CONNACK: the broker did not take our CONNECT
            self._closed_early = True
            client.disconnect()  # no reconnecting behind the caller's back
            self._connected.set()

    # publishing --------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        """Publish at QoS 1 and return once the broker acknowledged it (PUBACK without error)."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
        done, result = self._ack_slot(info.mid)
        try:
            if not done.wait(self.timeout_s):
                raise BrokerError(
                    f"the broker did not acknowledge the message on {topic} in {self.timeout_s} s"
                )
        finally:
            with self._acks_lock:
                self._acks.pop(info.mid, None)
        reason = result[0] if result else None
        if getattr(reason, "is_failure", False):
            raise BrokerError(f"the broker refused the message on {topic}: {reason}")

    def clear_retained(self, topic: str) -> None:
        """An empty retained message removes the retained one (MQTT's way to delete)."""
        self.publish(topic, b"", retain=True)

    def _ack_slot(self, mid: int) -> tuple[threading.Event, list[object]]:
        """Where the acknowledgement of packet `mid` lands (whichever thread gets there first makes it)."""
        with self._acks_lock:
            return self._acks.setdefault(mid, (threading.Event(), []))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        done, result = self._ack_slot(mid)
        result.append(reason_code)
        done.set()

    # subscribing -------------------------------------------------------------------------------------

    def subscribe(self, *patterns: str, qos: int = 1) -> None:
        """Subscribe (QoS 1 unless told) and wait for the SUBACK of each pattern.

        QoS 0 suits a reader that only looks (the dashboard): Mosquitto sends it on at once, while at
        QoS 1 it drops messages to a client more than `max_queued_messages` (1000) behind."""
        for pattern in patterns:
            rc, mid = self._client.subscribe(pattern, qos=qos)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                raise BrokerError(f"cannot subscribe to {pattern}: {mqtt.error_string(rc)}")
            done, result = self._ack_slot(mid)
            try:
                if not done.wait(self.timeout_s):
                    raise BrokerError(f"the broker did not acknowledge the subscription {pattern}")
            finally:
                with self._acks_lock:
                    self._acks.pop(mid, None)
            failures = [r for r in result if getattr(r, "is_failure", False)]
            if failures:
                raise BrokerError(f"the broker refused the subscription {pattern}: {failures[0]}")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # type: ignore[no-untyped-def]
        done, result = self._ack_slot(mid)
        result.extend(reason_codes)
        done.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        token = msg.topic.rsplit("/", 1)[-1]
        if msg.topic == sync_topic(self.fleet, token):
            with self._sync_cond:
                self._sync_seen.add(token)
                self._sync_cond.notify_all()
            return
        self.messages.put(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def sync(self) -> None:
        """Return once everything the broker queued for us before now has been delivered."""
        if not self._sync_subscribed:
            self.subscribe(sync_topic(self.fleet, "+"), qos=0)  # the same path as the snapshot's messages
            self._sync_subscribed = True
        token = uuid.uuid4().hex
        # Not retained, and our session is clean: nothing of it outlives us (no message expiry needed).
        self.publish(sync_topic(self.fleet, token), b"")
        deadline = time.monotonic() + self.timeout_s
        with self._sync_cond:
            while token not in self._sync_seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerError(f"the broker at {self.address} did not echo our sync message")
                self._sync_cond.wait(left)
            self._sync_seen.discard(token)

    def drain(self) -> list[Message]:
        """Every message received so far, without waiting."""
        out: list[Message] = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def get(self, timeout_s: float) -> Message | None:
        try:
            return self.messages.get(timeout=max(timeout_s, 0))
        except queue.Empty:
            return None


__all__ = ["BrokerAddress", "BrokerSession", "Message"]
