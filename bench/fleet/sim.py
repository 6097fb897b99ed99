"""Simulated devices that speak the real protocol: many light devices in one process, one real broker.

Each device is one MQTT connection (its own client id and last will), so the broker sees a fleet,
not one client. What a device does with a desired state is what an edge agent does, minus the model:
`edge_agent.deploy.admission.admit_document` checks signature, contract, expiry and revision; the
manifest is fetched from the registry over HTTP and its SHA-256 compared with the desired state's
(one real request per deployment); then the event sequence of a real install is published with step
delays, and the deployment ends SUCCEEDED, or FAILED / ROLLED_BACK when a drawn failure says so.
A crash drops the connection without a goodbye (the will says `offline`), comes back, and resumes.

Everything runs on one asyncio loop in one thread: the paho clients are driven by it (bench.fleet.pump,
epoll rather than paho's select-based threads) and the walks are coroutines on it. Failure draws are seeded per (seed, device, deployment), so a run repeats.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import paho.mqtt.client as mqtt

from bench.fleet.pump import AsyncioPump, drop
from build_side.fleet.broker import BrokerAddress
from edge_agent.contracts import (
    ActiveModel,
    DeploymentState,
    ErrorCode,
    Event,
    EventError,
    ReportedState,
)
from edge_agent.deploy.admission import Rejected, admit_document
from edge_agent.hashing import sha256_bytes
from edge_agent.signing import TrustedKeys
from edge_agent.transports.mqtt_protocol import connect_options, new_client
from edge_agent.transports.topics import DeviceTopics

S = DeploymentState
log = logging.getLogger(__name__)
STEPS = ("download", "health", "crash")  # what --fail-rate STEP=P can name


@dataclass
class FailureRates:
    """Chance per deployment: download -> FAILED, health -> ROLLED_BACK, crash -> offline, then resume."""

    download: float = 0.0
    health: float = 0.0
    crash: float = 0.0

    @classmethod
    def parse(cls, items: list[str]) -> FailureRates:
        """`["health=0.05", "crash=0.01"]`; an unknown step or a share outside 0..1 is an error."""
        rates = cls()
        for item in items:
            step, _, value = item.partition("=")
            if step not in STEPS:
                raise ValueError(f"--fail-rate {item!r}: step must be one of {', '.join(STEPS)}")
            try:
                share = float(value)
            except ValueError as exc:
                raise ValueError(f"--fail-rate {item!r}: {value!r} is not a number") from exc
            if not 0 <= share <= 1:
                raise ValueError(f"--fail-rate {item!r}: a share between 0 and 1")
            setattr(rates, step, share)
        return rates


@dataclass
class SimConfig:
    broker: str
    fleet: str
    registry_url: str
    trusted: TrustedKeys
    initial_bundle: str | None = None
    failures: FailureRates = field(default_factory=FailureRates)
    fail_bundles: set[str] | None = None  # None: draws apply to every bundle but the initial one
    step_delay_s: float = 0.05
    crash_offline_s: float = 1.0
    seed: int = 0
    garbage_devices: int = 0  # this many devices also publish unreadable events and reports
    keepalive: int = 30


@dataclass
class Counters:
    """What the simulated fleet sent and received (the broker's traffic from the devices' side)."""

    published: int = 0
    received: int = 0
    events: int = 0
    garbage: int = 0
    manifest_fetches: int = 0
    crashes: int = 0
    acked: int = 0  # PUBACKs the devices got for what they published
    rejected: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        """Counted from paho's threads and the walk loop at once: under a lock."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def tally(self, name: str, key: str) -> None:
        with self._lock:
            getattr(self, name)[key] += 1


@dataclass
class Deployment:
    """What a device saw of one deployment, for the bench's per-wave times."""

    device: str
    deployment_id: str
    bundle: str
    received: float
    finished: float | None = None
    state: DeploymentState | None = None


class SimDevice:
    def __init__(self, sim: FleetSimulator, device: str, groups: tuple[str, ...], garbage: bool) -> None:
        self.sim, self.device, self.garbage = sim, device, garbage
        cfg = sim.config
        self.topics = DeviceTopics(cfg.fleet, device, groups)
        self.active = cfg.initial_bundle
        self.applied_revision = 0
        self.blocked: dict[str, str] = {}
        self.last: tuple[str, DeploymentState, EventError | None] | None = None
        self.working: str | None = None  # deployment id being walked
        self.crashed_once: set[str] = set()
        addr = sim.address
        self.client = new_client(addr.protocol, f"sim-{cfg.fleet}-{device}-{uuid.uuid4().hex[:4]}")
        if addr.username:
            self.client.username_pw_set(addr.username, addr.password)
        self.client.will_set(self.topics.state, b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = lambda *_a: sim.counters.add("acked")
        self.connected = threading.Event()
        self.crashing = False

    # connection (on the loop's thread) ---------------------------------------------------------------

    def connect(self) -> None:
        addr = self.sim.address
        self.sim.pump.attach(self.client, self._reconnect_delay)
        self.client.connect(
            addr.host, addr.port, keepalive=self.sim.config.keepalive, **connect_options(addr.protocol)
        )

    def _reconnect_delay(self) -> float:
        if self.crashing:  # the simulated outage
            self.crashing = False
            return self.sim.config.crash_offline_s
        return 1.0

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            return
        client.subscribe([(t, 1) for t in [*self.topics.desired_subscriptions(), self.topics.roll_call]])
        self.publish(self.topics.state, b"online", retain=True)
        self.report()
        self.connected.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:  # type: ignore[no-untyped-def]
        self.sim.counters.add("received")
        if msg.topic == self.topics.roll_call:
            self.publish(self.topics.state, b"online", retain=True)
            self.report()
            return
        if msg.payload:
            self.sim.submit(self.handle(bytes(msg.payload), msg.topic))

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.sim.counters.add("published")
        self.client.publish(topic, payload, qos=1, retain=retain)

    def stop(self, clear: bool = False) -> None:
        """Say `offline` like the will would; `clear` removes the device's retained topics instead."""
        if clear:
            for topic in (self.topics.state, self.topics.reported, self.topics.desired):
                self.publish(topic, b"", retain=True)
        else:
            self.publish(self.topics.state, b"offline", retain=True)
        self.client.disconnect()

    def crash(self) -> None:
        """Drop the TCP connection without DISCONNECT: the broker publishes our will (`offline`)."""
        self.connected.clear()
        self.crashing = True
        drop(self.client)

    # reporting ---------------------------------------------------------------------------------------

    def report(self) -> None:
        last = self.last
        rep = ReportedState(
            device=self.device,
            fleet=self.topics.fleet,
            groups=list(self.topics.groups),
            agent_version="simulated",
            applied_revision=self.applied_revision or None,
            active=ActiveModel(bundle=self.active, variant="cpu-int4", provider="CPUExecutionProvider")
            if self.active
            else None,
            last_deployment=last[0] if last else None,
            last_state=last[1] if last else None,
            last_error=last[2] if last else None,
        )
        self.publish(self.topics.reported, rep.model_dump_json(by_alias=True), retain=True)

    def emit(
        self,
        dep_id: str,
        seq: int,
        state: DeploymentState,
        revision: int | None,
        bundle: str | None,
        error: EventError | None = None,
    ) -> None:
        event = Event(
            device=self.device,
            deployment_id=dep_id,
            seq=seq,
            state=state,
            revision=revision,
            bundle=bundle,
            error=error,
        )
        self.sim.counters.add("events")
        self.publish(self.topics.events, event.model_dump_json(by_alias=True))

    # the walk (asyncio loop) -------------------------------------------------------------------------

    async def handle(self, payload: bytes, topic: str) -> None:
        cfg, sim = self.sim.config, self.sim
        try:
            admitted = admit_document(payload, topic, cfg.trusted, self.applied_revision, self.blocked)
        except Rejected as exc:
            if exc.code == ErrorCode.STALE_REVISION and exc.deployment_id == self.working:
                return  # our own deployment again (a retained redelivery after a reconnect)
            sim.counters.tally("rejected", str(exc.code))
            if exc.code != ErrorCode.STALE_REVISION:  # a stale retained document is not news
                self.emit(
                    exc.deployment_id,
                    0,
                    S.REJECTED,
                    exc.revision,
                    None,
                    EventError(code=exc.code, detail=exc.detail),
                )
            return
        desired = admitted.desired
        dep_id, ref, rev = desired.deployment_id, desired.bundle.ref, desired.revision
        if self.working is not None:
            return  # one deployment at a time; the retained document comes back after it
        self.working = dep_id
        self.applied_revision = rev
        track = Deployment(self.device, dep_id, ref, time.monotonic())
        sim.deployments[dep_id] = track
        seq = 0
        rng = random.Random(f"{cfg.seed}:{self.device}:{dep_id}")
        draw = {step: rng.random() for step in STEPS}
        risky = ref in cfg.fail_bundles if cfg.fail_bundles is not None else ref != cfg.initial_bundle

        def step(state: DeploymentState, error: EventError | None = None) -> None:
            nonlocal seq
            self.emit(dep_id, seq, state, rev, ref, error)
            seq += 1

        if self.garbage:
            sim.counters.add("garbage", 2)
            self.publish(self.topics.events, b"\x00not an event{")
            self.publish(self.topics.events, b'{"schema": "slmops.event/1", "seq": "many"}')

        step(S.ACCEPTED)
        if ref == self.active:
            await self.finish(track, step, S.SUCCEEDED)
            return
        await asyncio.sleep(cfg.step_delay_s)
        step(S.DOWNLOADING)
        ok = await sim.fetch_manifest(desired.bundle.manifest_url, desired.bundle.manifest_sha256)
        await asyncio.sleep(cfg.step_delay_s)
        if not ok or (risky and draw["download"] < cfg.failures.download):
            detail = "manifest hash mismatch" if not ok else "connection reset (simulated)"
            await self.finish(
                track, step, S.FAILED, EventError(code=ErrorCode.DOWNLOAD_FAILED, detail=detail)
            )
            return
        step(S.VERIFYING)
        await asyncio.sleep(cfg.step_delay_s)
        step(S.INSTALLING)
        if risky and draw["crash"] < cfg.failures.crash and dep_id not in self.crashed_once:
            self.crashed_once.add(dep_id)
            self.sim.counters.add("crashes")
            self.crash()
            await sim.wait_connected(self)
            step(S.INSTALLING)  # resumed from the journal, as a restarted agent does
        await asyncio.sleep(cfg.step_delay_s)
        step(S.HEALTH_CHECK)
        await asyncio.sleep(cfg.step_delay_s)
        if risky and draw["health"] < cfg.failures.health:
            error = EventError(code=ErrorCode.HEALTH_CHECK_FAILED, detail="probe did not answer (simulated)")
            self.blocked[desired.bundle.manifest_sha256] = error.detail
            await self.finish(track, step, S.ROLLED_BACK, error)
            return
        self.active = ref
        await self.finish(track, step, S.SUCCEEDED)

    async def finish(
        self, track: Deployment, step, state: DeploymentState, error: EventError | None = None
    ) -> None:  # type: ignore[no-untyped-def]
        step(state, error)
        self.last = (track.deployment_id, state, error)
        if self.garbage:
            self.sim.counters.add("garbage")
            self.publish(self.topics.reported, b"[1, 2, 3]", retain=False)
        self.report()
        track.finished, track.state = time.monotonic(), state
        self.sim.counters.tally("outcomes", str(state))
        self.working = None


class FleetSimulator:
    """N simulated devices in one process; use as a context manager (connects all, stops all)."""

    def __init__(self, config: SimConfig, devices: int, groups: list[str], prefix: str = "sim") -> None:
        if devices < 1 or not groups:
            raise ValueError("a simulated fleet needs at least one device and one group")
        self.config = config
        self.address = BrokerAddress.parse(config.broker)
        self.counters = Counters()
        self.deployments: dict[str, Deployment] = {}
        width = len(str(devices - 1))
        self.devices = [
            SimDevice(self, f"{prefix}-{i:0{width}d}", (groups[i % len(groups)],), i < config.garbage_devices)
            for i in range(devices)
        ]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fleet-sim", daemon=True)
        self.pump = AsyncioPump(self._loop)
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self._manifests: dict[str, bytes] = {}

    def __enter__(self) -> FleetSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 120.0) -> None:
        self._thread.start()
        self._http = self.call(self._make_http)
        for i in range(0, len(self.devices), 50):  # in batches, so CONNACKs are read meanwhile
            self.call(self._connect_batch, self.devices[i : i + 50])
        deadline = time.monotonic() + timeout_s
        for d in self.devices:
            if not d.connected.wait(max(deadline - time.monotonic(), 0)):
                raise TimeoutError(f"{d.device} did not connect to {self.address} within {timeout_s:.0f} s")
        if not self.wait_settled(max(deadline - time.monotonic(), 1.0)):
            raise TimeoutError(f"{self.address} did not acknowledge the devices' first reports in time")

    def call(self, fn, *args):  # type: ignore[no-untyped-def]
        """Run `fn(*args)` (a coroutine function or a plain one) on the loop's thread; return its result."""

        async def run():  # type: ignore[no-untyped-def]
            out = fn(*args)
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(120)

    @staticmethod
    def _connect_batch(devices: list[SimDevice]) -> None:
        for d in devices:
            d.connect()

    def wait_settled(self, timeout_s: float = 120.0) -> bool:
        """Until the broker acknowledged everything the devices published (their retained states are
        stored, so an operator starting now sees all of them)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.counters.acked >= self.counters.published:
                return True
            time.sleep(0.1)
        return False

    async def _make_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.config.registry_url, timeout=30, limits=httpx.Limits(max_connections=32)
        )

    def stop(self, clear: bool = False, timeout_s: float = 30.0) -> None:
        """Each device says goodbye (or clears its retained topics), then disconnects; the loop ends."""
        if not self._thread.is_alive():
            return
        self.pump.stopping = True
        self.call(lambda: [d.stop(clear) for d in self.devices])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(d.client.is_connected() for d in self.devices):
            time.sleep(0.1)
        if self._http is not None:
            self.call(self._http.aclose)
        self.call(self.pump.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def submit(self, coro) -> None:  # type: ignore[no-untyped-def]
        """Start a walk (called on the loop's thread, from a paho callback); a crash in it is printed."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a simulated device's walk failed", exc_info=task.exception())

    async def wait_connected(self, device: SimDevice, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not device.connected.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def fetch_manifest(self, url: str, sha256: str) -> bool:
        """One real GET of the manifest per deployment; True when its SHA-256 is the one signed."""
        assert self._http is not None
        response = await self._http.get(url)
        self.counters.add("manifest_fetches")
        return response.status_code == 200 and sha256_bytes(response.content) == sha256

    def wait_idle(self, timeout_s: float) -> bool:
        """Until no device is walking a deployment (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(d.working is None for d in self.devices):
                return True
            time.sleep(0.1)
        return False


__all__ = ["Counters", "Deployment", "FailureRates", "FleetSimulator", "SimConfig", "SimDevice"]
