"""The fault matrix: every fault at every deployment step, on real processes, broker and registry.

Each cell starts from a device serving 1.0.0 (a copy of one installed state), sends 2.0.0, holds the
agent at the start of one step (its BEFORE_<STEP> test pause), applies one fault, and asserts:
1.0.0 answers while the fault lasts, the deployment ends in its documented state, and nothing is
lost (one complete version active and answering, no journal, no `.part` or temporary file left, every
event's (deployment_id, seq) once). `SLMOPS_FAULT_MATRIX_OUT=file.jsonl` records each cell's result.

Documented end states:
- kill -9 / SIGTERM: the next start resumes the step (Range for a download) -> SUCCEEDED.
- disk full (all of it, from the start of the step on): the first write that finds no room decides.
  Bundle bytes (ACCEPTED stages the manifest, DOWNLOADING the files) or the store's install record
  (INSTALLING, ACTIVATING) -> DISK_FULL: FAILED, or ROLLED_BACK once the new version was loaded;
  staging removed. A state write (journal, ledger, events) releases the state reserve, and what is
  left of the deployment fits in it (VERIFYING, HEALTH_CHECK) -> SUCCEEDED.
- registry down: ACCEPTED and DOWNLOADING -> DEFERRED, retried, SUCCEEDED once it is back; later
  steps do not need it -> SUCCEEDED.
- broker down: the deployment goes on offline (events kept in events.jsonl) -> SUCCEEDED, and the
  reported state reaches the broker once it is back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.deploy.store import Store
from edge_agent.http_server import BackgroundServer
from edge_agent.transports.topics import DeviceTopics
from tests.agent.helpers import (
    DEVICE,
    Agent,
    desired,
    fill,
    litter,
    read_events,
    serving,
    wait_final,
    wait_until,
)
from tests.mosquitto import Mosquitto, free_port

STEPS = ["ACCEPTED", "DOWNLOADING", "VERIFYING", "INSTALLING", "HEALTH_CHECK", "ACTIVATING"]
FAULTS = ["kill -9", "SIGTERM", "disk full", "registry down", "broker down"]
EXPECTED: dict[tuple[str, str], tuple[str, str | None]] = {
    (fault, step): ("SUCCEEDED", None) for fault in FAULTS for step in STEPS
}
EXPECTED[("disk full", "ACCEPTED")] = ("FAILED", "DISK_FULL")
EXPECTED[("disk full", "DOWNLOADING")] = ("FAILED", "DISK_FULL")
EXPECTED[("disk full", "INSTALLING")] = ("FAILED", "DISK_FULL")
EXPECTED[("disk full", "ACTIVATING")] = ("ROLLED_BACK", "DISK_FULL")
V1, V2 = "tiny-chat@1.0.0", "tiny-chat@2.0.0"
FLEET = "fmatrix"


class Registry:
    """The registry server on a fixed port, so it can go away and come back at the same URL."""

    def __init__(self, root: Path) -> None:
        from build_side.registry_server import registry_app

        self.app = registry_app(root)
        self.port = free_port()
        self.server: BackgroundServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = BackgroundServer(self.app, port=self.port).start()

    def stop(self) -> None:
        if self.server:
            self.server._server.force_exit = True  # gone at once, keep-alive connections and all
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_variants, signing_key, keys_dir) -> Iterator[dict]:
    """Broker, registry with 1.0.0 and 2.0.0, and a state folder with 1.0.0 installed and active."""
    from build_side.bundle import BundleSettings, assemble
    from build_side.registry import publish

    root = tmp_path_factory.mktemp("matrix")
    convert_dir = next(iter(tiny_variants.values())).parent
    registry_dir = root / "registry"
    registry_dir.mkdir()
    bundles = {}
    # 2.0.0 ships other weights than 1.0.0 (the device holds 1.0.0's files and would link them instead
    # of downloading), so DOWNLOADING has bytes to fetch and the faults there meet a real download.
    for version, variant in (("1.0.0", "cpu-fp32"), ("2.0.0", "cpu-int4")):
        made = assemble(
            convert_dir,
            root / "bundles",
            BundleSettings(name="tiny-chat", version=version, variants=[variant]),
            signing_key,
        ).path
        bundles[version] = publish(made, registry_dir, signing_key).path
    registry = Registry(registry_dir)
    registry.start()
    broker = Mosquitto(root).start()
    template = root / "template"
    config = agent_config(root / "t", broker.url, registry.url, keys_dir, template / "state")
    publish_desired(broker, desired(signing_key, 1, bundles["1.0.0"], "install-v1"))
    with Agent(config, root / "t" / "agent.log") as agent:
        assert wait_final(template / "state", "install-v1", proc=agent.proc)["state"] == "SUCCEEDED"
        assert agent.terminate() == 0
    publish_desired(broker, b"")
    try:
        yield {
            "registry": registry,
            "broker": broker,
            "template": template / "state",
            "bundles": bundles,
            "keys_dir": keys_dir,
        }
    finally:
        broker.stop()
        registry.stop()


def agent_config(folder: Path, broker_url: str, registry_url: str, keys_dir: Path, state: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "device_id": DEVICE,
        "fleet": FLEET,
        "registry_url": registry_url,
        "trusted_keys": [str(keys_dir)],
        "state_dir": str(state),
        "limits": {
            "min_free_disk_mb": 0,
            "backoff_initial_s": 0.05,
            "backoff_max_s": 0.3,
            "download_retries": 1,
        },
        "mqtt": {"url": broker_url, "keepalive": 5, "reconnect_max_s": 1},
        "api": {"port": 0},
        "log": {"level": "DEBUG"},
    }
    path = folder / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def operator(broker: Mosquitto) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def publish_desired(broker: Mosquitto, doc: dict | bytes) -> None:
    client = operator(broker)
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    client.publish(DeviceTopics(FLEET, DEVICE).desired, data, qos=1, retain=True).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def retained_reported(broker: Mosquitto) -> dict | None:
    got: list[bytes] = []
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    client.connect("127.0.0.1", broker.port)
    client.subscribe(DeviceTopics(FLEET, DEVICE).of("reported"), qos=1)
    client.loop_start()
    deadline = time.monotonic() + 3
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return json.loads(got[-1]) if got and got[-1] else None


def check_nothing_lost(state: Path, deployment_id: str, active: str) -> list[str]:
    """What was lost; empty when nothing was."""
    lost = []
    store = Store(state, create=False)
    cur = store.current()
    if cur is None or cur.ref != active:
        lost.append(f"active is {cur and cur.ref}, not {active}")
    if (state / "journal.json").exists():
        lost.append("journal left")
    if leftover := litter(state):
        lost.append(f"left behind: {leftover}")
    if list((state / "staging").iterdir()):
        lost.append("staging not cleaned")
    pairs = [(e["deployment_id"], e["seq"]) for e in read_events(state)]
    if len(pairs) != len(set(pairs)):
        lost.append("an event (deployment_id, seq) repeats")
    return lost


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault_matrix(fault: str, step: str, world: dict, tmp_path: Path, signing_key, request) -> None:
    disk = request.getfixturevalue("small_disk") if fault == "disk full" else tmp_path
    state = disk / "state"
    # cp -a keeps the store's hardlinks (a version's files and their blobs are one inode each), so
    # the copy takes on the small disk what the device's own state takes.
    subprocess.run(["cp", "-a", str(world["template"]), str(state)], check=True)
    broker: Mosquitto = world["broker"]
    registry: Registry = world["registry"]
    dep = f"{fault.split()[0].strip('-').lower()}-{step.lower()}"
    doc = desired(signing_key, 2, world["bundles"]["2.0.0"], dep, max_attempts=60)
    publish_desired(broker, doc)
    config = agent_config(tmp_path, broker.url, registry.url, keys_dir_of(world), state)
    log = tmp_path / "agent.log"
    hold = 60 if fault in ("kill -9", "SIGTERM") else 1
    pause = {"EDGE_AGENT_TEST_PAUSE": f"BEFORE_{step}={hold}"}
    filler = None
    try:
        with Agent(config, log, env=pause) as agent:
            wait_until(
                lambda: f"test pause at BEFORE_{step}" in agent.log_text(), 60, "the pause", agent.proc
            )
            if fault == "kill -9":
                assert V1 in serving(state)
                agent.kill9()
            elif fault == "SIGTERM":
                assert V1 in serving(state)
                assert agent.terminate() == 0
            elif fault == "disk full":
                filler = fill(disk)
                assert V1 in serving(state)
            elif fault == "registry down":
                registry.stop()
                assert V1 in serving(state)
                if step in ("ACCEPTED", "DOWNLOADING"):
                    wait_until(
                        lambda: "DEFERRED" in [e["state"] for e in read_events(state)],
                        30,
                        "DEFERRED",
                        agent.proc,
                    )
                else:
                    wait_final(state, dep, proc=agent.proc)
                registry.start()
            elif fault == "broker down":
                broker.stop()
                assert V1 in serving(state)
                wait_final(state, dep, proc=agent.proc)
                broker.start()
            if agent.proc.poll() is None:
                final = wait_final(state, dep, proc=agent.proc)
                served = serving(state)
                if fault == "broker down":
                    wait_until(
                        lambda: (retained_reported(broker) or {}).get("applied_revision") == 2, 30, "reported"
                    )
                assert agent.terminate() == 0
        if fault in ("kill -9", "SIGTERM"):
            assert Store(state, create=False).current().ref == V1, "the old version stays active"
            with Agent(config, log) as agent:
                final = wait_final(state, dep, proc=agent.proc)
                served = serving(state)
                assert agent.terminate() == 0
    finally:
        if registry.server is None:
            registry.start()
        if broker.proc is None:
            broker.start()
        if filler is not None:
            filler.unlink()
    got = (final["state"], (final.get("error") or {}).get("code"))
    active = V2 if got[0] == "SUCCEEDED" else V1
    lost = check_nothing_lost(state, dep, active)
    assert active in served
    out = os.environ.get("SLMOPS_FAULT_MATRIX_OUT")
    if out:
        with open(out, "a") as fh:
            fh.write(
                json.dumps({"fault": fault, "step": step, "state": got[0], "code": got[1], "lost": lost})
                + "\n"
            )
    assert got == EXPECTED[(fault, step)], Path(log).read_text()[-3000:]
    assert not lost, lost


def keys_dir_of(world: dict) -> Path:
    return world["keys_dir"]
