"""`slmops fleet status|events|bench` from the retained topics and the events the operator saw."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from build_side.fleet.broker import BrokerSession
from build_side.fleet.deploy import DeployRequest, deploy
from build_side.fleet.history import History
from build_side.fleet.watch import FleetWatch
from edge_agent.contracts import DeploymentState
from edge_agent.signing import SigningKey
from tests.conftest import cli


def slmops(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "250"}  # a wide terminal, so the table is not folded
    return subprocess.run(
        cli("slmops", *args), capture_output=True, text=True, check=True, timeout=60, env=env
    ).stdout


def test_watch_dedupes_events_records_bench_and_status_shows_it(
    mqtt_broker: tuple[str, int],
    fleet_id: str,
    registry: Path,
    signing_key: SigningKey,
    scripted,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    a = scripted("dev-a", groups=("lab", "eu"), active="tiny-chat@1.0.0")
    scripted("dev-b", groups=("lab",), active="tiny-chat@1.0.0").stop(clear=False)  # says offline
    db = tmp_path / "fleet.db"
    broker_url = "mqtt://{}:{}".format(*mqtt_broker)
    seen = []
    with History(db) as history, BrokerSession(broker_url, fleet_id) as session:
        watch = FleetWatch(session, history, on_event=seen.append)
        assert watch.snapshot.devices["dev-b"].online is False
        [pub] = deploy(
            DeployRequest("tiny-chat@2.0.0", str(registry), devices=["dev-a"]),
            fleet=fleet_id,
            key=signing_key,
            history=history,
            session=session,
            snapshot=watch.snapshot,
        )
        out = watch.wait_for_outcomes({"dev-a": pub.state.deployment_id}, timeout_s=10)
        a.publish_bench("tiny-chat@2.0.0")
        watch.follow(duration_s=0.5)
    assert out["dev-a"].state == DeploymentState.SUCCEEDED
    # the scripted device sends its second event twice (QoS 1 may); the operator shows it once
    assert [e.seq for e in seen] == list(range(6))
    assert [e.state for e in seen][-1] == DeploymentState.SUCCEEDED

    common = ["--fleet", fleet_id, "--db", str(db), "--broker", broker_url]
    status = json.loads(slmops("fleet", "status", "--json", *common))
    rows = {d["device"]: d for d in status["devices"]}
    assert rows["dev-a"]["online"] is True and rows["dev-b"]["online"] is False
    assert rows["dev-a"]["active"] == "tiny-chat@2.0.0" and rows["dev-b"]["active"] == "tiny-chat@1.0.0"
    assert rows["dev-a"]["groups"] == ["lab", "eu"] and rows["dev-a"]["provider"] == "CPUExecutionProvider"
    assert rows["dev-a"]["last_event"]["state"] == "SUCCEEDED"
    assert rows["dev-a"]["last_bench"]["metrics"]["decode_tok_s"] == 42.0
    assert rows["dev-a"]["desired_revision"] == pub.state.revision

    table = slmops("fleet", "status", *common)
    assert "dev-a" in table and "offline" in table and "42.0 tok/s" in table and "TTFT 35 ms" in table

    events = [json.loads(line) for line in slmops("fleet", "events", "--json", *common).splitlines()]
    assert [e["seq"] for e in events] == list(range(6))
    bench = json.loads(slmops("fleet", "bench", "--json", *common))
    assert [(b["device"], b["summary"]["metrics"]["ttft_ms"]) for b in bench] == [("dev-a", 35.0)]
    assert bench[0]["summary"]["rss_mb"] == 187.4  # what the device holds with its model loaded
    bench_table = slmops("fleet", "bench", *common)
    assert "RSS MB" in bench_table and "187" in bench_table and "231" in bench_table


def test_events_follow_prints_live_events(
    mqtt_broker: tuple[str, int],
    fleet_id: str,
    registry: Path,
    key_file: Path,
    scripted,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    scripted("dev-a", groups=("lab",), active="tiny-chat@1.0.0", delay_s=0.3)
    common = ["--fleet", fleet_id, "--db", str(tmp_path / "f.db")]
    follower = subprocess.Popen(
        cli("slmops", "fleet", "events", "--follow", "--duration", "6", "--json", *common),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        import time

        time.sleep(2.0)  # let the follower subscribe (events are not retained)
        slmops(
            "deploy",
            "tiny-chat@2.0.0",
            "-d",
            "dev-a",
            "--registry",
            str(registry),
            "--key",
            str(key_file),
            *common,
        )
        out, _ = follower.communicate(timeout=30)
    finally:
        follower.kill()
    states = [json.loads(line)["state"] for line in out.splitlines()]
    assert states[0] == "ACCEPTED" and states[-1] == "SUCCEEDED" and len(states) == 6
