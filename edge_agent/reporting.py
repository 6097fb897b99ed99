"""Events and the reported state: written locally first, then published.

Every event is appended to `state_dir/events.jsonl` (kept even with no broker: `edge-agent status`
and a person on the device read it), then published on `.../events`. The reported state is written to
`state_dir/reported.json` and published retained on `.../reported` after every change. A full disk
(with the state reserve spent) costs the local copy only: it is logged and the message still goes out.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import psutil

from edge_agent import __version__
from edge_agent.config import AgentConfig
from edge_agent.contracts import (
    ActiveModel,
    BenchRecord,
    DeploymentState,
    Event,
    EventError,
    ReportedState,
    StoreUsage,
)
from edge_agent.deploy import atomic
from edge_agent.deploy.journal import Ledger
from edge_agent.deploy.store import Store
from edge_agent.errors import DiskFullError
from edge_agent.transports.base import Publisher

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
BENCH_FILE = "bench.jsonl"
REPORTED_FILE = "reported.json"
ROTATE_BYTES = 1 << 20  # events.jsonl -> events.jsonl.1 past 1 MiB


class Reporter:
    def __init__(self, config: AgentConfig, store: Store, ledger: Ledger) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.publishers: list[Publisher] = []
        self.events_path = Path(config.state_dir) / EVENTS_FILE
        self.reported_path = Path(config.state_dir) / REPORTED_FILE
        self.provider_fallbacks: list[str] = []
        self.in_progress: tuple[str, DeploymentState] | None = None
        self.api_url: str | None = None
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        line = event.model_dump_json(by_alias=True, exclude_none=True)
        with self._lock:
            if self.events_path.exists() and self.events_path.stat().st_size > ROTATE_BYTES:
                os.replace(self.events_path, self.events_path.with_suffix(".jsonl.1"))
            try:
                atomic.append_line(self.events_path, line, self.ledger.reserve)
            except DiskFullError as exc:
                log.error("event not kept locally (published all the same): %s", exc)
        extra = f" {event.progress.done}/{event.progress.total}" if event.progress else ""
        err = f" {event.error.code}: {event.error.detail}" if event.error else ""
        log.info(
            "%s %s seq=%d %s%s%s", event.deployment_id, event.state, event.seq, event.bundle or "", extra, err
        )
        for pub in self.publishers:
            pub.publish("events", line.encode())

    def bench(self, record: BenchRecord) -> None:
        """A post-install bench record: kept in bench.jsonl, published on `.../bench`."""
        if record.store_bytes is None:
            record = record.model_copy(update={"store_bytes": self.store.usage().disk_bytes})
        line = record.model_dump_json(by_alias=True, exclude_none=True)
        with self._lock:
            try:
                atomic.append_line(Path(self.config.state_dir) / BENCH_FILE, line, self.ledger.reserve)
            except DiskFullError as exc:
                log.error("bench record not kept locally (published all the same): %s", exc)
        for pub in self.publishers:
            pub.publish("bench", line.encode())

    def state(self) -> ReportedState:
        cur = self.store.current()
        active = None
        if cur:
            active = ActiveModel(
                bundle=cur.ref, variant=cur.variant, provider=cur.provider or "", installed=cur.installed
            )
        others = [v.ref for v in reversed(self.store.versions()) if not cur or v.ref != cur.ref]
        used = self.store.usage()
        d = self.ledger.data
        last_deployment, last_state, last_error = d.last_deployment, d.last_state, d.last_error
        if self.in_progress:
            (last_deployment, last_state), last_error = self.in_progress, None
        return ReportedState(
            device=self.config.device_id,
            fleet=self.config.fleet,
            groups=self.config.groups,
            agent_version=__version__,
            applied_revision=d.applied_revision,
            active=active,
            previous=others,
            last_deployment=last_deployment,
            last_state=last_state,
            last_error=last_error,
            provider_fallbacks=self.provider_fallbacks,
            free_disk_mb=self.store.free_bytes() // (1 << 20),
            store=StoreUsage(
                disk_bytes=used.disk_bytes,
                logical_bytes=used.logical_bytes,
                versions=len(self.store.versions()),
            ),
            free_memory_mb=psutil.virtual_memory().available // (1 << 20),
            api_url=self.api_url,
        )

    def reported(self) -> ReportedState:
        state = self.state()
        data = state.model_dump_json(by_alias=True, exclude_none=True).encode()
        with self._lock:
            try:
                atomic.write_bytes(self.reported_path, data, self.ledger.reserve)
            except DiskFullError as exc:
                log.error("reported state not kept locally (published all the same): %s", exc)
        for pub in self.publishers:
            pub.publish("reported", data, retain=True)
        return state


def error_of(code, detail: str) -> EventError:
    return EventError(code=code, detail=detail[:1000])


__all__ = ["BENCH_FILE", "EVENTS_FILE", "REPORTED_FILE", "Reporter", "error_of"]
