"""The long-running agent: wire config, store, transports, reconciler and serving together, then run.

Start-up order matters for crash safety: repair the store, then restore the active version, then
resume an interrupted deployment, and only then take new desired states from the transports.

With `api.enabled` (the default) the agent serves the OpenAI-compatible API itself: the serving
side's `ModelHost` is the activator, so a new version is loaded and probed beside the one serving
and swapped in without failing requests. With the API off, `ProbeActivator` probes each version in
a child process and the agent holds no model at all.
SIGTERM (or SIGINT) sets `stop`: the running step stops at a safe point (the journal resumes it on
the next start), the transports say `offline`, and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from edge_agent import __version__
from edge_agent.activation import Activator
from edge_agent.config import AgentConfig
from edge_agent.deploy.journal import Journal, Ledger
from edge_agent.deploy.probe import ProbeActivator
from edge_agent.deploy.reconciler import Reconciler
from edge_agent.deploy.reserve import Reserve
from edge_agent.deploy.store import Store
from edge_agent.errors import ConfigError, SlmopsError
from edge_agent.http_server import BackgroundServer
from edge_agent.reporting import Reporter
from edge_agent.signing import TrustedKeys
from edge_agent.transports.base import DesiredStateSource
from edge_agent.transports.http_poll import HttpPoller
from edge_agent.transports.mqtt import MqttLink
from edge_agent.transports.topics import DeviceTopics

log = logging.getLogger(__name__)


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(addr)
        sock.sendall(message.encode())


class AgentService:
    def __init__(self, config: AgentConfig, activator: Activator | None = None) -> None:
        self.config = config
        self.stop = threading.Event()
        self.store = Store(config.state_dir)
        self.reserve = Reserve(config.state_dir, config.limits.state_reserve_kb * 1024)
        self.journal = Journal(config.state_dir, self.reserve)
        self.ledger = Ledger(config.state_dir, self.reserve)
        self.reporter = Reporter(config, self.store, self.ledger)
        self.trusted = TrustedKeys.from_paths(config.trusted_keys)
        if not len(self.trusted):
            raise ConfigError(f"trusted_keys: no public key found in {[str(p) for p in config.trusted_keys]}")
        self.model_host = None
        self.api: BackgroundServer | None = None
        if activator is None and config.api.enabled:
            from edge_agent.serving.model_host import ModelHost

            self.model_host = ModelHost(config.runtime)
            activator = self.model_host
        self.activator: Activator = activator or ProbeActivator(config.runtime)
        self.reconciler = Reconciler(
            config,
            self.store,
            self.journal,
            self.ledger,
            self.reporter,
            self.activator,
            self.trusted,
            self.stop,
        )
        self.sources: list[DesiredStateSource] = []
        self.mqtt: MqttLink | None = None
        if config.mqtt:
            topics = DeviceTopics(config.fleet, config.device_id, tuple(config.groups))
            self.mqtt = MqttLink(config.mqtt, topics)
            self.mqtt.on_connect(self.reporter.reported)
            self.reporter.publishers.append(self.mqtt)
            self.sources.append(self.mqtt)
        if config.http_poll:
            self.sources.append(
                HttpPoller(config.registry_url, config.http_poll, config.limits.download_timeout_s)
            )

    def restore_active(self) -> None:
        """Load the active version into the serving activator (a probe-only activator needs nothing)."""
        cur = self.store.current()
        if cur is None or not getattr(self.activator, "serves", True):
            return
        try:
            candidate = self.activator.load_candidate(
                cur.path, cur.manifest(), cur.variant, [cur.provider or "CPUExecutionProvider"], 300.0
            )
        except SlmopsError as exc:
            log.error("the active version %s does not load: %s", cur.ref, exc)
            return
        self.activator.promote(candidate)
        self.reconciler.served = cur.ref

    def start_api(self) -> None:
        if self.model_host is None:
            return
        from edge_agent.serving.api import create_app
        from edge_agent.status import read_status

        def agent_status() -> dict:
            info = read_status(self.config.state_dir)
            info.pop("events", None)
            return info

        app = create_app(self.model_host, self.config.api, status_provider=agent_status)
        self.api = BackgroundServer(app, self.config.api.host, self.config.api.port).start()
        self.reporter.api_url = f"{self.api.url}/v1"
        log.info("API on %s (ready once a model is active)", self.reporter.api_url)

    def run(self) -> None:
        started = time.monotonic()
        log.info("edge-agent %s starting: %s", __version__, self.config.redacted())
        self.store.recover()
        if not self.reserve.ensure():
            log.warning("the state disk has no room for the %d KB state reserve", self.reserve.size // 1024)
        self.start_api()
        self.restore_active()
        for source in self.sources:
            source.start(self.reconciler.submit)
        self.reporter.reported()
        sd_notify("READY=1")
        log.info(
            "started in %.2f s; trusted keys: %s", time.monotonic() - started, ", ".join(self.trusted.ids())
        )
        try:
            self.reconciler.run()
        finally:
            sd_notify("STOPPING=1")
            for source in self.sources:
                source.stop()
            self.reconciler.http.close()
            if self.api:
                self.api.stop()
            if self.model_host:
                self.model_host.close()
            log.info("stopped")


__all__ = ["AgentService", "sd_notify"]
