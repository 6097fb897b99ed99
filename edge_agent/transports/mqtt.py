"""MQTT link of the agent (paho-mqtt 2.x, MQTT 5 or 3.1.1): desired state in, reports out.

- QoS 1 everywhere; the device's and its groups' `desired` topics are retained, so a device that
  (re)connects gets the latest document at once.
- A persistent session (MQTT 5: clean_start off and a session expiry; 3.1.1: clean_session off), so
  QoS 1 messages sent while the device was away are delivered when it returns.
- A roll call on the fleet's `_rollcall` topic republishes the reported state and `online`, for
  operators on brokers that do not deliver retained messages to wildcard subscriptions.
- `state` is `online` (retained) once connected; the broker's last will sets it to `offline`
  when the device vanishes, and a clean stop publishes `offline` itself.
- paho's network thread reconnects on its own; before each try we set its delay from
  `backoff.reconnect_delay` (exponential up to `reconnect_max_s`, with jitter). A lost broker is an
  expected condition: it is logged at WARNING, paho's socket errors included.
"""

from __future__ import annotations

import logging
import ssl
import threading

import paho.mqtt.client as mqtt

from edge_agent.config import MqttSettings
from edge_agent.transports.backoff import reconnect_delay
from edge_agent.transports.base import Deliver
from edge_agent.transports.mqtt_protocol import connect_options, new_client, refused_line
from edge_agent.transports.topics import DeviceTopics

log = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"


class MqttLink:
    """Both a DesiredStateSource and a Publisher over one MQTT connection."""

    def __init__(self, settings: MqttSettings, topics: DeviceTopics) -> None:
        self.settings = settings
        self.topics = topics
        self.connected = threading.Event()
        self._deliver: Deliver | None = None
        self._on_connect_hooks: list = []
        self.client_id = f"edge-agent-{topics.fleet}-{topics.device}"
        self.client = new_client(settings.protocol, self.client_id, persistent=True)
        self._stopping = False
        self._attempt = 0  # reconnect attempts since the last successful connection
        paho_log = logging.getLogger("edge_agent.transports.paho")
        paho_log.addFilter(self._quiet_when_stopping)
        paho_log.addFilter(_lost_broker_is_a_warning)
        self.client.enable_logger(paho_log)
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.use_tls:
            tls = settings.tls
            self.client.tls_set(
                ca_certs=str(tls.ca) if tls.ca else None,
                certfile=str(tls.cert) if tls.cert else None,
                keyfile=str(tls.key) if tls.key else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            self.client.tls_insecure_set(tls.insecure)
        self.client.will_set(topics.state, OFFLINE, qos=1, retain=True)
        self._next_delay()
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _quiet_when_stopping(self, record: logging.LogRecord) -> bool:
        # paho's network thread may still poll the socket our own disconnect just closed; not an error.
        return not (self._stopping and "Client is not connected" in record.getMessage())

    def _next_delay(self) -> float:
        """Set paho's next reconnect wait (min = max = our jittered delay; paho resets its doubling)."""
        delay = reconnect_delay(self._attempt, self.settings.reconnect_min_s, self.settings.reconnect_max_s)
        self._attempt += 1
        self.client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type] (paho accepts floats)
        return delay

    def on_connect(self, hook) -> None:
        """Run `hook()` after every (re)connection, e.g. to republish the reported state."""
        self._on_connect_hooks.append(hook)

    # -- DesiredStateSource --------------------------------------------------------------------

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        log.info(
            "connecting to %s (MQTT %s) as %s", self.settings.url, self.settings.protocol, self.client_id
        )
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            **connect_options(
                self.settings.protocol, persistent=True, session_expiry_s=self.settings.session_expiry_s
            ),
        )
        self.client.loop_start()

    def stop(self) -> None:
        """Say `offline` ourselves (a clean disconnect does not fire the will), then disconnect."""
        self._stopping = True
        if self.connected.is_set():
            info = self.client.publish(self.topics.state, OFFLINE, qos=1, retain=True)
            info.wait_for_publish(timeout=3)
        self.client.disconnect()
        self.client.loop_stop()

    # -- Publisher -----------------------------------------------------------------------------

    def publish(self, kind: str, payload: bytes, retain: bool = False) -> None:
        # Queued by paho while disconnected (QoS 1) and sent after the reconnect.
        self.client.publish(self.topics.of(kind), payload, qos=1, retain=retain)

    # -- paho callbacks (on paho's network thread) ---------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("%s", refused_line(self.settings.url, self.settings.protocol, reason_code))
            return
        client.subscribe([(t, 1) for t in [*self.topics.desired_subscriptions(), self.topics.roll_call]])
        client.publish(self.topics.state, ONLINE, qos=1, retain=True)
        log.info("connected to %s (session present: %s)", self.settings.url, flags.session_present)
        self._attempt = 0
        self._next_delay()
        self.connected.set()
        for hook in self._on_connect_hooks:
            hook()

    def _on_connect_fail(self, client, userdata) -> None:
        delay = self._next_delay()
        log.warning("broker %s not reachable; next try in %.1f s", self.settings.url, delay)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self.connected.is_set() and not self._stopping:  # closed before CONNACK
            why = "it closed the connection without answering CONNECT"
            log.error("%s", refused_line(self.settings.url, self.settings.protocol, why))
        self.connected.clear()
        if reason_code.is_failure:
            delay = self._next_delay()
            log.warning("disconnected from the broker (%s); reconnecting in %.1f s", reason_code, delay)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.topics.roll_call:
            client.publish(self.topics.state, ONLINE, qos=1, retain=True)
            for hook in self._on_connect_hooks:
                hook()
            return
        if not message.payload:  # a cleared retained document
            return
        if self._deliver:
            self._deliver(bytes(message.payload), message.topic)


def _lost_broker_is_a_warning(record: logging.LogRecord) -> bool:
    """paho logs a dropped socket at ERROR; for a device a broker that goes away is routine."""
    message = record.getMessage()
    if record.levelno >= logging.ERROR and ("on socket" in message or "not connected" in message):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


__all__ = ["OFFLINE", "ONLINE", "MqttLink"]
