"""`slmops fleet credentials` on a Mosquitto the test starts with that config: devices cannot speak
for each other, no device can publish a desired state, the operator can."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO, cli
from tests.mosquitto import Mosquitto, free_port

FLEET = "shop"
BASE = f"slmops/v1/{FLEET}"


class Client:
    """One MQTT 5 client that records what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.refused: int | None = None
        self.c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if user:
            self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self._add(m.topic, bytes(m.payload))
        connected = threading.Event()

        def on_connect(c, u, flags, rc, props) -> None:
            self.refused = rc.value if rc.is_failure else None
            connected.set()

        self.c.on_connect = on_connect
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert connected.wait(5), "no CONNACK"

    def _add(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.got.append((topic, payload))

    def sub(self, topic: str) -> None:
        self.c.subscribe(topic, qos=1)

    def pub(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.got]

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_hash_is_what_mosquitto_passwd_accepts(tmp_path: Path) -> None:
    from build_side.fleet.credentials import hash_password

    assert hash_password("x", b"0" * 12).startswith("$7$101$")


def test_devices_cannot_speak_for_each_other(tmp_path: Path) -> None:
    out = tmp_path / "creds"
    port = free_port()
    proc = subprocess.run(
        cli(
            "slmops",
            "fleet",
            "credentials",
            "--fleet",
            FLEET,
            "-d",
            "dev-a:lobby",
            "-d",
            "dev-b",
            "-o",
            str(out),
            "--port",
            str(port),
        ),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    creds = json.loads((out / "credentials.json").read_text())
    assert (out / "credentials.json").stat().st_mode & 0o077 == 0
    pw = {d["device"]: d["password"] for d in creds["devices"]} | {"operator": creds["operator"]["password"]}
    conf = (out / "mosquitto.conf").read_text().replace(f"listener {port}\n", "")
    with Mosquitto(tmp_path, port, extra=conf):
        assert Client(port, None, None).refused is not None, "anonymous clients are refused"
        assert Client(port, "dev-a", "wrong").refused is not None
        op, a, b = (Client(port, u, pw[u]) for u in ("operator", "dev-a", "dev-b"))
        try:
            assert op.refused is None and a.refused is None and b.refused is None
            op.sub(f"{BASE}/#")
            a.sub(f"{BASE}/dev-b/#")  # A reads B's topics: denied
            a.sub(f"{BASE}/#")  # ... or the whole fleet: denied
            a.sub(f"{BASE}/dev-a/desired")
            a.sub(f"{BASE}/group/lobby/desired")
            b.sub(f"{BASE}/dev-b/desired")
            time.sleep(0.3)
            a.pub(f"{BASE}/dev-b/reported", b"forged")  # A speaks for B: dropped
            a.pub(f"{BASE}/dev-b/events", b"forged")
            a.pub(f"{BASE}/dev-b/desired", b"forged")  # a device publishes a desired state: dropped
            a.pub(f"{BASE}/dev-a/desired", b"forged")
            a.pub(f"{BASE}/group/lobby/desired", b"forged")
            a.pub(f"{BASE}/dev-a/reported", b"mine")  # its own report: delivered
            op.pub(f"{BASE}/dev-b/desired", b"for b")  # the operator: delivered to B only
            op.pub(f"{BASE}/group/lobby/desired", b"for lobby")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and (
                f"{BASE}/dev-a/reported" not in op.topics() or f"{BASE}/dev-b/desired" not in b.topics()
            ):
                time.sleep(0.05)
            time.sleep(0.3)
            assert f"{BASE}/dev-a/reported" in op.topics()
            assert all(p != b"forged" for _, p in op.got + b.got + a.got), op.got
            assert b.got == [(f"{BASE}/dev-b/desired", b"for b")]
            # the broker checks every message against the reader's ACL, wildcards included
            assert set(a.got) == {(f"{BASE}/group/lobby/desired", b"for lobby")}, "A sees its group, not B"
        finally:
            for c in (op, a, b):
                c.close()
