"""Edge agents on this machine, as a local fleet: one config, state dir and API port each.

Used by `slmops demo` (one local device) and the multi-agent tests (several). Each agent is the real
service, `python -m edge_agent run --config <file>`, in its own process; its output goes to a log
file beside its config, and stopping it sends SIGTERM (the agent drains and exits) before SIGKILL.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from build_side.fleet.errors import FleetError


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a port from bind(0) is an ephemeral one,
    and another process's outgoing connection can take it before the agent binds it."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_listening(host: str = "127.0.0.1", port: int = 1883, timeout_s: float = 1.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


@dataclass
class LocalDevice:
    """What makes one local device: its ids, where it learns its desired state, its own folders."""

    device_id: str
    fleet: str
    home: Path  # config, log and state_dir live here
    registry_url: str
    trusted_keys: list[Path]
    groups: list[str] = field(default_factory=list)
    mqtt_url: str | None = None
    channel: str | None = None
    poll_interval_s: float = 2.0
    api_port: int = field(default_factory=free_port)
    runtime: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.home / "agent.yaml"

    @property
    def log_path(self) -> Path:
        return self.home / "agent.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def config(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "device_id": self.device_id,
            "fleet": self.fleet,
            "groups": self.groups,
            "registry_url": self.registry_url,
            "trusted_keys": [str(p) for p in self.trusted_keys],
            "state_dir": str(self.home / "state"),
            "api": {"host": "127.0.0.1", "port": self.api_port},
        }
        if self.mqtt_url:
            doc["mqtt"] = {"url": self.mqtt_url, "keepalive": 5}
        if self.channel:
            doc["http_poll"] = {"channel": self.channel, "interval_s": self.poll_interval_s}
        if self.runtime:
            doc["runtime"] = self.runtime
        return {**doc, **self.extra}

    def write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        return self.config_path


class LocalAgent:
    """A running `edge_agent run` process for one LocalDevice; use as a context manager."""

    def __init__(self, device: LocalDevice, env: dict[str, str] | None = None) -> None:
        self.device = device
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalAgent:
        self.device.write_config()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        with open(self.device.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(self.device.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the operator's terminal is ours to forward
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.device.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_api(self, timeout_s: float = 60.0, path: str = "/healthz") -> None:
        """Wait until the agent's HTTP API answers (or fail with the end of its log)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise FleetError(f"agent {self.device.device_id} exited:\n{self.log_tail()}")
            try:
                if httpx.get(self.device.api_url + path, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise FleetError(f"agent {self.device.device_id} did not answer on {self.device.api_url}{path}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL if it does not come; the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a power cut would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> LocalAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LocalAgent", "LocalDevice", "broker_listening", "free_port"]
