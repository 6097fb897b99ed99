"""Test helpers for the agent: publish bundles, sign desired states, run the agent, watch what it says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.hashing import sha256_file
from edge_agent.signing import SigningKey, sign_document
from edge_agent.transports.topics import DeviceTopics, group_desired_topic
from tests.conftest import MQTT_HOST, MQTT_PORT, REPO, cli

DEVICE = "dev-1"


def release(make_bundle, registry_dir: Path, key: SigningKey, version: str, **kw: Any) -> Path:
    """Build a signed bundle of the tiny model and publish it the way the build side does."""
    from build_side.registry import publish

    return publish(make_bundle(version, key=key, **kw), registry_dir, key).path


def desired(
    key: SigningKey,
    revision: int,
    bundle_dir: Path,
    deployment_id: str | None = None,
    manifest_url: str | None = None,
    **policy: Any,
) -> dict[str, Any]:
    """A signed desired state pointing at a bundle published under registry/bundles/<name>/<version>."""
    name, version = bundle_dir.parent.name, bundle_dir.name
    doc = {
        "schema": "slmops.desired/1",
        "revision": revision,
        "deployment_id": deployment_id or f"dep-{revision}",
        "bundle": {
            "name": name,
            "version": version,
            "manifest_url": manifest_url or f"bundles/{name}/{version}/manifest.json",
            "manifest_sha256": sha256_file(bundle_dir / "manifest.json"),
        },
        "policy": {"health_timeout_s": 60, **policy},
    }
    return sign_document(doc, key)


def write_config(
    tmp_path: Path,
    fleet: str,
    registry_url: str,
    keys_dir: Path,
    state_dir: Path | None = None,
    mqtt_on: bool = True,
    channel: str | None = None,
    api: bool = False,
    **limits: Any,
) -> Path:
    cfg: dict[str, Any] = {
        "device_id": DEVICE,
        "fleet": fleet,
        "groups": ["canary"],
        "registry_url": registry_url,
        "trusted_keys": [str(keys_dir)],
        "state_dir": str(state_dir or tmp_path / "state"),
        "limits": {
            "min_free_disk_mb": 0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.2,
            "download_retries": 2,
            **limits,
        },
        # api on: the agent serves (ModelHost probes in-process); off: ProbeActivator in a child process
        "api": {"port": 0} if api else {"enabled": False},
        "log": {"level": "DEBUG"},
    }
    if mqtt_on:
        cfg["mqtt"] = {"url": f"mqtt://{MQTT_HOST}:{MQTT_PORT}", "keepalive": 5, "reconnect_max_s": 2}
    if channel:
        cfg["http_poll"] = {"channel": channel, "interval_s": 0.3}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def api_url(state_dir: Path) -> str:
    return json.loads((state_dir / "reported.json").read_text())["api_url"]


def serving(state_dir: Path) -> list[str]:
    """Model ids the agent's API serves now, after answering one chat completion with the model."""
    url = api_url(state_dir)
    ids = [m["id"] for m in httpx.get(f"{url}/models", timeout=10).json()["data"]]
    reply = httpx.post(
        f"{url}/chat/completions",
        json={"model": ids[0], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return ids


def read_events(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def states_of(state_dir: Path, deployment_id: str) -> list[str]:
    return [e["state"] for e in read_events(state_dir) if e["deployment_id"] == deployment_id]


def wait_until(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition", proc=None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the agent exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_final(state_dir: Path, deployment_id: str, timeout: float = 90, proc=None) -> dict[str, Any]:
    final = {"SUCCEEDED", "FAILED", "ROLLED_BACK", "REJECTED"}

    def last() -> dict[str, Any] | None:
        evs = [
            e for e in read_events(state_dir) if e["deployment_id"] == deployment_id and e["state"] in final
        ]
        return evs[-1] if evs else None

    return wait_until(last, timeout, f"{deployment_id} to end", proc)


class Agent:
    """`python -m edge_agent run --config ...` as a real process."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.log, self.env = config, log, env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> Agent:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        out = open(self.log, "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            cli("edge-agent", "run", "--config", str(self.config)), stdout=out, stderr=out, env=env
        )
        out.close()
        return self

    def kill9(self) -> None:
        assert self.proc
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"the agent ignored SIGTERM for {timeout} s") from None
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> Agent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Fleet:
    """The operator's side of the broker for one test fleet: publish desired, watch topics."""

    def __init__(self, fleet: str) -> None:
        self.topics = DeviceTopics(fleet, DEVICE, ("canary",))
        self.fleet = fleet
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"op-{fleet}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.subscribe(f"slmops/v1/{fleet}/{DEVICE}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def publish_desired(self, payload: dict | bytes, group: str | None = None) -> None:
        topic = group_desired_topic(self.fleet, group) if group else self.topics.desired
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic, data, qos=1, retain=True).wait_for_publish(5)

    def on(self, kind: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == self.topics.of(kind)]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on("events")]

    def close(self) -> None:
        for kind in ("desired", "state", "reported"):  # leave no retained litter on the shared broker
            self.client.publish(self.topics.of(kind), b"", qos=1, retain=True).wait_for_publish(5)
        self.client.publish(
            group_desired_topic(self.fleet, "canary"), b"", qos=1, retain=True
        ).wait_for_publish(5)
        self.client.loop_stop()
        self.client.disconnect()


def fill(disk: Path, name: str = "filler") -> Path:
    """Take every free byte of the filesystem, as another process would (unbuffered writes)."""
    filler = disk / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def litter(state: Path) -> list[str]:
    """`.part` and temporary files left in the state folder."""
    return [str(p.relative_to(state)) for p in state.rglob("*") if p.name.endswith((".part", ".tmp"))]
