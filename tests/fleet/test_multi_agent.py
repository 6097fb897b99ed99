"""Real edge agents on one machine behave as a fleet: a rollout over a group stops at a failing device.

Four `python -m edge_agent run` processes (own state dirs, API ports, configs) follow the group `lab`
over each real broker (Mosquitto with MQTT 5; RabbitMQ's MQTT and NATS with 3.1.1) and install from
a real registry server. Release 2.0.0 is the same tiny model
with a 128-token context window; dev-2's health probe (its own config) is a 200-token prompt, so
2.0.0 fails its health gate there and nowhere else: a real failure, found by the agent's real probe.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from build_side.fleet.broker import BrokerSession
from build_side.fleet.local_agent import LocalAgent, LocalDevice
from build_side.fleet.status import collect_snapshot
from edge_agent.signing import SigningKey
from tests.conftest import cli

pytestmark = pytest.mark.slow

LONG_PROBE = " ".join(["word"] * 200)  # 200 tokens: fits 1.0.0's 512-token context, not 2.0.0's 128


def publish_tiny(
    registry: Path, version: str, variant_dir: Path, key: SigningKey, context_length: int | None = None
) -> None:
    """A signed release of the tiny model in the registry; optionally with a shorter context window."""
    from build_side.manifest_io import file_entries, write_signed_manifest
    from edge_agent.contracts import BundleManifest, SourceInfo, Variant

    bundle = registry / "bundles" / "tiny-chat" / version
    shutil.copytree(variant_dir, bundle / "cpu-int4")
    if context_length:
        cfg_path = bundle / "cpu-int4" / "genai_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["model"]["context_length"] = context_length
        cfg["search"]["max_length"] = context_length
        cfg_path.write_text(json.dumps(cfg, indent=4))
    manifest = BundleManifest(
        name="tiny-chat",
        version=version,
        source=SourceInfo(kind="hf-folder", ref="tiny-llama"),
        variants=[
            Variant(
                id="cpu-int4",
                precision="int4",
                execution_providers=["CPUExecutionProvider"],
                min_memory_mb=64,
                files=file_entries(bundle, "cpu-int4"),
            )
        ],
    )
    write_signed_manifest(bundle, manifest, key)


@pytest.fixture
def local_fleet(
    tmp_path: Path,
    fleet_id: str,
    any_broker: str,
    registry_dir: Path,
    registry_server: str,
    keys_dir: Path,
) -> Iterator[dict[str, LocalAgent]]:
    agents = {}
    for i in range(4):
        name = f"dev-{i}"
        device = LocalDevice(
            device_id=name,
            fleet=fleet_id,
            home=tmp_path / name,
            registry_url=registry_server,
            trusted_keys=[keys_dir],
            groups=["lab"],
            mqtt_url=any_broker,  # MQTT 5 on Mosquitto, 3.1.1 on RabbitMQ and NATS (from the URL)
            runtime={"probe_prompt": LONG_PROBE} if name == "dev-2" else {},
        )
        agents[name] = LocalAgent(device).start()
    try:
        yield agents
    finally:
        codes = {name: a.stop() for name, a in agents.items()}
        assert codes == dict.fromkeys(agents, 0), codes  # SIGTERM drains and exits cleanly


def wait_online(fleet: str, broker: str, devices: list[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with BrokerSession(broker, fleet) as session:
            snap = collect_snapshot(session)
        if all(snap.devices.get(d) and snap.devices[d].online and snap.devices[d].reported for d in devices):
            return
        time.sleep(0.5)
    raise AssertionError(f"devices {devices} did not all come online")


def test_rollout_over_four_agents_stops_at_the_failing_one_and_rolls_its_wave_back(
    local_fleet: dict[str, LocalAgent],
    fleet_id: str,
    any_broker: str,
    registry_dir: Path,
    tiny_variants: dict[str, Path],
    signing_key: SigningKey,
    keys_dir: Path,
    tmp_path: Path,
) -> None:
    publish_tiny(registry_dir, "1.0.0", tiny_variants["cpu-int4"], signing_key)
    publish_tiny(registry_dir, "2.0.0", tiny_variants["cpu-int4"], signing_key, context_length=128)
    broker = any_broker
    common = [
        "--registry", str(registry_dir), "--fleet", fleet_id, "--broker", broker,
        "--key", str(keys_dir / f"{signing_key.key_id}.key"), "--db", str(tmp_path / "fleet.db"),
    ]  # fmt: skip
    devices = sorted(local_fleet)
    wait_online(fleet_id, broker, devices)

    first = subprocess.run(
        cli("slmops", "deploy", "tiny-chat@1.0.0", "--group", "lab", "--wait", "--wait-timeout", "120", "--json", *common),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr + "".join(a.log_tail() for a in local_fleet.values())
    assert {d: o["state"] for d, o in json.loads(first.stdout)["outcomes"].items()} == dict.fromkeys(
        devices, "SUCCEEDED"
    )

    proc = subprocess.run(
        cli("slmops", "rollout", "tiny-chat@2.0.0", "--group", "lab", "--canary", "1", "--growth", "2",
            "--wave-timeout", "120", "--health-timeout", "60", "--json", *common),
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "rolled-back"
    waves = {w["wave"]: w for w in report["waves"]}
    assert [(d["device"], d["status"]) for d in waves[0]["devices"]] == [("dev-0", "succeeded")]
    wave1 = {d["device"]: d for d in waves[1]["devices"]}
    assert wave1["dev-1"]["status"] == "succeeded"
    assert wave1["dev-2"]["status"] == "failed" and "HEALTH_CHECK_FAILED" in wave1["dev-2"]["detail"]
    assert {d["rollback_status"] for d in wave1.values()} == {"succeeded"}
    assert waves[1]["status"] == "rolled-back" and waves[2]["status"] == "pending"

    status = subprocess.run(
        cli("slmops", "fleet", "status", "--json", "--fleet", fleet_id, "--broker", broker,
            "--db", str(tmp_path / "fleet.db")),
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    rows = {d["device"]: d for d in json.loads(status.stdout)["devices"]}
    assert {d: rows[d]["active"] for d in devices} == {
        "dev-0": "tiny-chat@2.0.0",  # the canary keeps the new version
        "dev-1": "tiny-chat@1.0.0",  # rolled back with its wave
        "dev-2": "tiny-chat@1.0.0",  # failed its health gate, kept 1.0.0
        "dev-3": "tiny-chat@1.0.0",  # never touched
    }
    assert all(rows[d]["online"] for d in devices)
    assert rows["dev-3"]["desired"] is None  # no device-level desired state was ever sent to it
    assert rows["dev-2"]["last_error"] is None or rows["dev-2"]["last_state"] == "SUCCEEDED"
