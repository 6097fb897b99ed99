"""Faults that used to break the agent: a disk that fills up, a junk flood, a registry down at
ACCEPTED, a broker that goes away. Real agent processes, real broker, real registry, real tmpfs."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import MqttSettings
from edge_agent.http_server import BackgroundServer
from edge_agent.transports.topics import DeviceTopics
from tests.agent.helpers import (
    DEVICE,
    Agent,
    Fleet,
    desired,
    fill,
    litter,
    read_events,
    release,
    serving,
    states_of,
    wait_final,
    wait_until,
    write_config,
)
from tests.mosquitto import Mosquitto, free_port


@pytest.fixture
def fleet(fleet_id: str, mqtt_broker) -> Iterator[Fleet]:
    f = Fleet(fleet_id)
    yield f
    f.close()


def test_a_disk_that_fills_up_fails_the_deployment_and_the_agent_lives_on(
    tmp_path: Path,
    make_bundle,
    registry_dir: Path,
    registry_tap,
    fleet: Fleet,
    signing_key,
    keys_dir,
    small_disk,
) -> None:
    url, tap = registry_tap
    small = release(make_bundle, registry_dir, signing_key, "1.0.0")  # int4: 5.6 MB
    large = release(make_bundle, registry_dir, signing_key, "2.0.0", variants=("cpu-fp32",))  # fp32: 16 MB
    state = small_disk / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state, api=True)
    fleet.publish_desired(desired(signing_key, 1, small))
    with Agent(config, tmp_path / "agent.log") as agent:
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        tap.rate = 2_000_000
        fleet.publish_desired(desired(signing_key, 2, large, "fills-up"))
        wait_until(
            lambda: any(e.get("progress", {}).get("done", 0) > 1_000_000 for e in read_events(state)),
            60,
            "1 MB downloaded",
            agent.proc,
        )
        fill(small_disk, "filler-1")  # another process takes the rest of the disk mid-download
        final = wait_final(state, "fills-up", proc=agent.proc)
        assert (final["state"], final["error"]["code"]) == ("FAILED", "DISK_FULL"), agent.log_text()
        assert not litter(state) and not list((state / "staging").iterdir()), "no .part, no temp file"
        assert "tiny-chat@1.0.0" in serving(state)

        # The disk full again: a garbage message is rejected, the agent answers and stays up.
        fill(small_disk, "filler-2")
        fleet.client.publish(fleet.topics.desired, b"garbage", qos=1).wait_for_publish(5)
        wait_until(
            lambda: any(e["state"] == "REJECTED" for e in fleet.events()),
            30,
            "REJECTED on the broker",
            agent.proc,
        )
        assert "tiny-chat@1.0.0" in serving(state)
        assert agent.terminate() == 0
    # ... and it starts on a full disk (reported state, MQTT on_connect) without dying.
    fleet.messages.clear()
    with Agent(config, tmp_path / "agent.log") as agent:
        reported = wait_until(lambda: fleet.on("reported"), 60, "the reported state published", agent.proc)
        time.sleep(1)
        assert agent.proc.poll() is None, agent.log_text()
        url = json.loads(reported[-1])["api_url"]  # reported.json on the full disk is the old one
        body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert (
            httpx.post(f"{url}/chat/completions", json=body, timeout=60).json()["model"] == "tiny-chat@1.0.0"
        )
        assert agent.terminate() == 0
    assert "Traceback" not in (tmp_path / "agent.log").read_text()


def test_a_junk_flood_does_not_make_the_agent_forget_what_it_applied(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_server: str, fleet: Fleet, signing_key, keys_dir
) -> None:
    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, registry_server, keys_dir, state)
    fleet.publish_desired(desired(signing_key, 1, b1), group="canary")  # retained, applied below
    with Agent(config, tmp_path / "agent.log") as agent:
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        for i in range(70):
            junk = json.dumps({"deployment_id": f"junk-{i}", "revision": 9}).encode()  # unsigned
            fleet.client.publish(fleet.topics.desired, junk, qos=1)
        wait_until(lambda: len(read_events(state)) >= 6 + 70, 60, "70 rejections", agent.proc)
        assert agent.terminate() == 0
    before = read_events(state)
    with Agent(config, tmp_path / "agent.log") as agent:  # the retained dep-1 comes again
        fleet.client.publish(fleet.topics.desired, b"sentinel", qos=1)
        wait_until(lambda: len(read_events(state)) > len(before), 60, "the sentinel rejected", agent.proc)
        time.sleep(0.5)
        assert agent.terminate() == 0
    after = read_events(state)
    assert states_of(state, "dep-1") == [e["state"] for e in before if e["deployment_id"] == "dep-1"]
    assert [e.get("error", {}).get("code") for e in after[len(before) :]] == ["INVALID_MESSAGE"]
    pairs = [(e["deployment_id"], e["seq"]) for e in after]
    assert len(pairs) == len(set(pairs)), "no (deployment_id, seq) twice"


def test_a_registry_down_at_accepted_is_retried_and_the_document_is_not_dropped(
    tmp_path: Path, make_bundle, registry_dir: Path, fleet: Fleet, signing_key, keys_dir
) -> None:
    from build_side.registry_server import registry_app

    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    port = free_port()
    state = tmp_path / "state"
    config = write_config(
        tmp_path, fleet.fleet, f"http://127.0.0.1:{port}", keys_dir, state, download_retries=0
    )
    fleet.publish_desired(desired(signing_key, 1, b1, max_attempts=3))
    with Agent(config, tmp_path / "agent.log") as agent:  # nothing listens on the registry's port
        final = wait_final(state, "dep-1", proc=agent.proc)
        assert (final["state"], final["error"]["code"]) == ("FAILED", "DOWNLOAD_FAILED")
        assert states_of(state, "dep-1") == ["ACCEPTED", "DEFERRED", "DEFERRED", "FAILED"]
        assert agent.terminate() == 0
    ledger = json.loads((state / "agent-state.json").read_text())
    assert ledger["applied_revision"] is None, "a transient failure does not count as applied"
    with (
        BackgroundServer(registry_app(registry_dir), port=port),
        Agent(config, tmp_path / "agent.log") as agent,
    ):
        # the same retained document, once the registry is back: tried again, and it converges
        wait_until(lambda: states_of(state, "dep-1")[-1] == "SUCCEEDED", 90, "SUCCEEDED", agent.proc)
        assert agent.terminate() == 0
    seqs = [e["seq"] for e in read_events(state) if e["deployment_id"] == "dep-1"]
    assert seqs == list(range(len(seqs))), "the second try continues the event seqs"


def test_reconnect_delays_are_jittered_and_bounded() -> None:
    from edge_agent.transports.backoff import reconnect_delay

    assert MqttSettings().reconnect_max_s == 10
    rng = random.Random(1)
    delays = [reconnect_delay(n, 1.0, 10.0, rng) for n in range(12)]
    assert all(0.5 <= d <= 10 for d in delays) and max(delays[5:]) <= 10 and min(delays[5:]) >= 5
    assert len({round(reconnect_delay(6, 1.0, 10.0, rng), 6) for _ in range(20)}) > 10, "jitter"


def test_the_agent_is_back_soon_after_the_broker_and_logs_no_errors(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_server: str, keys_dir
) -> None:
    broker = Mosquitto(tmp_path).start()
    cfg = {
        "device_id": DEVICE,
        "fleet": "reconnect",
        "registry_url": registry_server,
        "trusted_keys": [str(keys_dir)],
        "state_dir": str(tmp_path / "state"),
        "mqtt": {"url": broker.url, "keepalive": 5},  # the default reconnect bounds
        "api": {"enabled": False},
    }
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(cfg))
    state_topic = DeviceTopics("reconnect", DEVICE).state

    def online() -> bool:
        got: list[bytes] = []
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_message = lambda cl, u, m: got.append(bytes(m.payload))
        try:
            c.connect("127.0.0.1", broker.port)
        except OSError:
            return False
        c.subscribe(state_topic, qos=1)
        c.loop_start()
        time.sleep(0.2)
        c.loop_stop()
        c.disconnect()
        return got[-1:] == [b"online"]

    try:
        with Agent(config, tmp_path / "agent.log") as agent:
            wait_until(online, 30, "online", agent.proc)
            broker.stop()
            time.sleep(4)
            broker.start()
            back = time.monotonic()
            wait_until(online, 15, "online again", agent.proc)
            assert time.monotonic() - back < 11, "at most reconnect_max_s (10 s) after the broker"
            assert agent.terminate() == 0
    finally:
        broker.stop()
    errors = [line for line in agent.log_text().splitlines() if " ERROR " in line]
    assert not errors, errors
