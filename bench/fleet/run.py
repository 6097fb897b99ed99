"""`bench fleet`: a staged rollout over a simulated fleet, once converging and once aborting, timed.

The operator is the real `slmops rollout` in its own process (so its peak RSS and CPU seconds are
its own, read from the kernel's rusage when it exits); the devices are a FleetSimulator against the
same broker; the registry is a real HTTP server over a folder of signed manifests. Then
`slmops fleet status` is timed over the live fleet and again with retained states seeded up to
`status_at` devices (seeded devices answer roll calls through one extra connection).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet.sim import FailureRates, FleetSimulator, SimConfig
from build_side.fleet.broker import BrokerAddress
from edge_agent.contracts import ActiveModel, ReportedState
from edge_agent.signing import SigningKey, TrustedKeys
from edge_agent.transports.mqtt_protocol import connect_options, new_client
from edge_agent.transports.topics import device_topic, roll_call_topic

BUNDLE = "sim-chat"


@dataclass
class FleetBenchOptions:
    broker: str
    devices: int = 1000
    groups: int = 1
    seed: int = 0
    failures: FailureRates = field(default_factory=lambda: FailureRates(crash=0.01))
    abort_failures: FailureRates = field(default_factory=lambda: FailureRates(health=0.2))
    canary: float = 0.01
    growth: float = 5.0
    max_failed: float = 0.05
    step_delay_s: float = 0.05
    wave_timeout_s: float = 300.0
    garbage_devices: int = 2
    status_at: list[int] = field(default_factory=lambda: [10_000])
    workdir: Path | None = None


@dataclass
class RolloutRun:
    name: str
    status: str
    expected: str
    ok: bool
    wall_s: float
    converge_s: float | None
    waves: list[dict[str, Any]]
    events: int
    events_per_s: float
    operator_peak_rss_mb: float
    operator_cpu_s: float
    broker_messages: int
    unreadable_counted: int  # what the operator said it ignored (the garbage devices' messages)
    planned: int  # devices the rollout put in waves
    skipped: dict[str, int]  # why the others were left out: reason -> devices
    problems: list[str]


@dataclass
class FleetBenchResult:
    broker: str
    protocol: str
    devices: int
    group_size: int
    runs: list[RolloutRun]
    status_s: dict[int, float]
    garbage_sent: int
    manifest_fetches: int
    machine: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status_s"] = {str(k): v for k, v in self.status_s.items()}
        out["ok"] = self.ok
        return out


def publish_releases(registry: Path, key: SigningKey, versions: list[str]) -> None:
    """Signed manifests of a tiny bundle (a manifest is all a simulated device fetches)."""
    from build_side.manifest_io import write_signed_manifest
    from edge_agent.contracts import BundleManifest, FileEntry, SourceInfo, Variant

    for version in versions:
        folder = registry / "bundles" / BUNDLE / version
        folder.mkdir(parents=True, exist_ok=True)
        variant = Variant(
            id="cpu-int4",
            precision="int4",
            execution_providers=["CPUExecutionProvider"],
            min_memory_mb=64,
            files=[FileEntry(path="cpu-int4/model.onnx", size=3, sha256="0" * 64)],
        )
        manifest = BundleManifest(
            name=BUNDLE,
            version=version,
            source=SourceInfo(kind="hf-folder", ref="simulated"),
            variants=[variant],
        )
        write_signed_manifest(folder, manifest, key)


def run_operator(argv: list[str], env: dict[str, str]) -> tuple[int, str, str, float, float, float]:
    """Run an slmops command; (rc, stdout, stderr, wall s, peak RSS MB, CPU s) of that process alone."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "build_side", *argv], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(), err.read().decode()
    rss_mb = usage.ru_maxrss / 1024  # Linux: kilobytes
    return proc.returncode, text, errors, wall, rss_mb, usage.ru_utime + usage.ru_stime


class Seeder:
    """Retained reported/state of devices that are not simulated live, for `fleet status` at scale.

    One more connection on the simulator's loop; on a roll-call broker it answers for all of them.
    """

    def __init__(self, sim: FleetSimulator, names: list[str], bundle: str) -> None:
        self.sim, self.names, self.bundle = sim, names, bundle
        self.fleet = sim.config.fleet
        address = sim.address
        self.client = new_client(address.protocol, f"seed-{uuid.uuid4().hex[:8]}")
        if address.username:
            self.client.username_pw_set(address.username, address.password)
        self.client.on_message = lambda *_a: self.publish_all()
        self.client.on_publish = self._acked
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self._acks = 0
        self._want = 0
        self._all_acked = threading.Event()

    def reported(self, name: str) -> bytes:
        rep = ReportedState(
            device=name,
            fleet=self.fleet,
            groups=["seeded"],
            agent_version="seeded",
            active=ActiveModel(bundle=self.bundle, variant="cpu-int4", provider="CPUExecutionProvider"),
        )
        return rep.model_dump_json(by_alias=True).encode()

    def _acked(self, *_args: object) -> None:
        self._acks += 1
        if self._acks >= self._want:
            self._all_acked.set()

    def publish_all(self, clear: bool = False) -> None:
        """Queue every seeded device's retained messages (on the loop's thread)."""
        for name in self.names:
            for kind, body in (("reported", self.reported(name)), ("state", b"online")):
                self._want += 1
                self.client.publish(device_topic(self.fleet, name, kind), b"" if clear else body, 1, True)

    def _publish_and_wait(self, clear: bool = False) -> None:
        self._all_acked.clear()
        self.sim.call(self.publish_all, clear)
        if not self._all_acked.wait(300):
            raise TimeoutError(f"the broker acknowledged {self._acks} of {self._want} seeded messages")

    def __enter__(self) -> Seeder:
        address = self.sim.address

        def connect() -> None:
            self.sim.pump.attach(self.client, lambda: 1.0)
            self.client.connect(address.host, address.port, **connect_options(address.protocol))

        self.sim.call(connect)
        if not self._connected.wait(30):
            raise TimeoutError("the seeding connection did not connect")
        self._publish_and_wait()
        if address.roll_call:
            self.sim.call(self.client.subscribe, roll_call_topic(self.fleet), 1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.sim.call(self.client.unsubscribe, roll_call_topic(self.fleet))
        self._publish_and_wait(clear=True)
        self.sim.pump.detach(self.client)
        self.sim.call(self.client.disconnect)


def wave_times(report: dict[str, Any], sim: FleetSimulator, bundle_ref: str) -> list[dict[str, Any]]:
    """Per wave: devices, outcome counts, and the time from its first desired received to its last end."""
    by_id = {d.deployment_id: d for d in sim.deployments.values()}
    waves = []
    for wave in report.get("waves", []):
        deps = [by_id[d["deployment_id"]] for d in wave["devices"] if d.get("deployment_id") in by_id]
        starts = [d.received for d in deps]
        ends = [d.finished for d in deps if d.finished is not None]
        counts: dict[str, int] = {}
        for d in wave["devices"]:
            counts[d["status"]] = counts.get(d["status"], 0) + 1
        waves.append(
            {
                "wave": wave["wave"],
                "devices": len(wave["devices"]),
                "status": wave["status"],
                "outcomes": counts,
                "time_s": round(max(ends) - min(starts), 2) if starts and ends else None,
            }
        )
    return waves


def check_abort(report: dict[str, Any], sim: FleetSimulator, bundle_ref: str) -> list[str]:
    """The rule: stopped at the first wave whose cumulative failed share passed max_failed, that wave
    rolled back, and no device of a later wave ever received the new bundle."""
    problems = []
    waves = report.get("waves", [])
    stopped = [w["wave"] for w in waves if w["status"] in ("rolled-back", "failed")]
    if report.get("status") != "rolled-back" or not stopped:
        return [f"rollout ended {report.get('status')!r}, not rolled-back"]
    stop = stopped[0]
    later = {d["device"] for w in waves if w["wave"] > stop for d in w["devices"]}
    touched = {d.device for d in sim.deployments.values() if d.bundle == bundle_ref and d.device in later}
    if touched:
        problems.append(f"{len(touched)} devices of later waves received {bundle_ref}")
    if any(w["status"] != "pending" for w in waves if w["wave"] > stop):
        problems.append("a later wave is not pending")
    stop_wave = next(w for w in waves if w["wave"] == stop)
    bad_rb = [d["device"] for d in stop_wave["devices"] if d["rollback_status"] not in ("succeeded", "none")]
    if bad_rb:
        problems.append(f"rollback not done on {len(bad_rb)} devices of wave {stop}")
    return problems


def rollout_run(
    name: str,
    version: str,
    opts: FleetBenchOptions,
    sim: FleetSimulator,
    common: list[str],
    env: dict[str, str],
) -> RolloutRun:
    ref = f"{BUNDLE}@{version}"
    before = (sim.counters.published, sim.counters.received, sim.counters.events)
    argv = [
        "rollout",
        ref,
        "--group",
        "g0",
        "--canary",
        str(opts.canary),
        "--growth",
        str(opts.growth),
        "--max-failed",
        str(opts.max_failed),
        "--wave-timeout",
        str(opts.wave_timeout_s),
        "--json",
        *common,
    ]
    sim.wait_settled()
    rc, out, err, wall, rss, cpu = run_operator(argv, env)
    sim.wait_idle(60)
    problems: list[str] = []
    try:
        report = json.loads(out)
    except json.JSONDecodeError:
        report = {}
        problems.append(f"slmops rollout exited {rc} without a report: {err.strip()[-500:]}")
    waves = wave_times(report, sim, ref)
    expected = "succeeded" if name == "converge" else "rolled-back"
    status = report.get("status", "error")
    planned = sum(len(w["devices"]) for w in report.get("waves", []))
    skipped: dict[str, int] = {}
    for d in report.get("skipped", []):
        skipped[d["detail"] or "?"] = skipped.get(d["detail"] or "?", 0) + 1
    group_size = sum(1 for d in sim.devices if "g0" in d.topics.groups)
    if report and planned + sum(skipped.values()) != group_size:
        problems.append(
            f"the rollout saw {planned + sum(skipped.values())} of the group's {group_size} devices"
        )
    if name == "converge" and skipped:
        problems.append(f"skipped {skipped}")
    if name == "converge":
        not_ok = [
            d["device"] for w in report.get("waves", []) for d in w["devices"] if d["status"] != "succeeded"
        ]
        if status != "succeeded" or not_ok:
            problems.append(f"{len(not_ok)} devices did not succeed (status {status})")
    elif report:
        problems += check_abort(report, sim, ref)
    deps = [d for d in sim.deployments.values() if d.bundle == ref and d.finished is not None]
    converge = round(max(d.finished for d in deps) - min(d.received for d in deps), 2) if deps else None
    published, received, events = (
        sim.counters.published - before[0],
        sim.counters.received - before[1],
        sim.counters.events - before[2],
    )
    counted = re.search(r"ignored (\d+) unreadable messages", err)
    return RolloutRun(
        name=name,
        status=status,
        expected=expected,
        ok=not problems and status == expected,
        wall_s=round(wall, 2),
        converge_s=converge,
        waves=waves,
        events=events,
        events_per_s=round(events / wall, 1) if wall else 0.0,
        operator_peak_rss_mb=round(rss, 1),
        operator_cpu_s=round(cpu, 2),
        broker_messages=published + received,
        unreadable_counted=int(counted.group(1)) if counted else 0,
        planned=planned,
        skipped=skipped,
        problems=problems,
    )


def time_status(common_status: list[str], env: dict[str, str]) -> tuple[float, int]:
    rc, out, err, wall, _, _ = run_operator(["fleet", "status", "--json", *common_status], env)
    if rc != 0:
        raise RuntimeError(f"slmops fleet status failed: {err.strip()[-500:]}")
    return round(wall, 2), len(json.loads(out)["devices"])


def run_fleet_bench(opts: FleetBenchOptions, say=print) -> FleetBenchResult:  # type: ignore[no-untyped-def]
    from build_side.registry_server import registry_app
    from edge_agent.http_server import BackgroundServer

    work = opts.workdir or Path(tempfile.mkdtemp(prefix="slmops-fleet-bench-"))
    key = SigningKey.generate()
    key_path, _ = key.save(work / "keys")
    registry = work / "registry"
    publish_releases(registry, key, ["1.0.0", "2.0.0", "3.0.0"])
    fleet = f"bench{uuid.uuid4().hex[:8]}"
    address = BrokerAddress.parse(opts.broker)
    env = os.environ | {"SLMOPS_HOME": str(work / "home")}
    db = work / "fleet.db"
    common_status = ["--fleet", fleet, "--broker", opts.broker, "--db", str(db)]
    common = ["--registry", str(registry), "--key", str(key_path), *common_status]
    groups = [f"g{i}" for i in range(max(opts.groups, 1))]
    with BackgroundServer(registry_app(registry)) as server:
        config = SimConfig(
            broker=opts.broker,
            fleet=fleet,
            registry_url=server.url,
            trusted=TrustedKeys([key.public]),
            initial_bundle=f"{BUNDLE}@1.0.0",
            seed=opts.seed,
            step_delay_s=opts.step_delay_s,
            garbage_devices=opts.garbage_devices,
        )
        sim = FleetSimulator(config, opts.devices, groups)
        say(f"connecting {opts.devices} simulated devices to {address} (fleet {fleet})")
        t0 = time.monotonic()
        sim.start()
        say(f"  connected in {time.monotonic() - t0:.1f} s")
        runs = []
        try:
            for name, version, rates in (
                ("converge", "2.0.0", opts.failures),
                ("abort", "3.0.0", opts.abort_failures),
            ):
                config.failures, config.fail_bundles = rates, {f"{BUNDLE}@{version}"}
                say(f"rollout {name}: {BUNDLE}@{version} over g0, failures {rates}")
                run = rollout_run(name, version, opts, sim, common, env)
                say(
                    f"  {run.status} in {run.wall_s} s{'; ' + '; '.join(run.problems) if run.problems else ''}"
                )
                runs.append(run)
            status_s = {}
            wall, seen = time_status(common_status, env)
            status_s[opts.devices] = wall
            say(f"fleet status over {seen} devices: {wall} s")
            for total in sorted(n for n in opts.status_at if n > opts.devices):
                names = [f"seed-{i:05d}" for i in range(total - opts.devices)]
                with Seeder(sim, names, f"{BUNDLE}@1.0.0"):
                    wall, seen = time_status(common_status, env)
                status_s[total] = wall
                say(f"fleet status over {seen} devices: {wall} s")
        finally:
            sim.stop(clear=True)
    return FleetBenchResult(
        broker=str(address),
        protocol=address.protocol,
        devices=opts.devices,
        group_size=sum(1 for d in sim.devices if "g0" in d.topics.groups),
        runs=runs,
        status_s=status_s,
        garbage_sent=sim.counters.garbage,
        manifest_fetches=sim.counters.manifest_fetches,
        machine={
            "cores": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
    )


__all__ = ["FleetBenchOptions", "FleetBenchResult", "RolloutRun", "publish_releases", "run_fleet_bench"]
