"""Over the real broker: a retained desired state is installed and reported, then a second replaces it."""

from __future__ import annotations

import json
import subprocess
from itertools import groupby
from pathlib import Path

import pytest

from edge_agent.runtime import LoadedModel
from tests.agent.helpers import (
    Agent,
    Fleet,
    desired,
    read_events,
    release,
    serving,
    states_of,
    wait_final,
    wait_until,
    write_config,
)
from tests.conftest import cli

HAPPY = ["ACCEPTED", "DOWNLOADING", "VERIFYING", "INSTALLING", "HEALTH_CHECK", "SUCCEEDED"]


def steps(state_dir: Path, deployment_id: str) -> list[str]:
    return [s for s, _ in groupby(states_of(state_dir, deployment_id))]


@pytest.fixture
def fleet(fleet_id: str, mqtt_broker) -> Fleet:
    f = Fleet(fleet_id)
    yield f
    f.close()


def test_retained_desired_installed_then_replaced(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_server: str, fleet: Fleet, signing_key, keys_dir
) -> None:
    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    b2 = release(make_bundle, registry_dir, signing_key, "1.1.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, registry_server, keys_dir, state, api=True)
    fleet.publish_desired(desired(signing_key, 1, b1))  # retained before the device is even up

    with Agent(config, tmp_path / "agent.log") as agent:
        wait_until(lambda: b"online" in fleet.on("state"), 60, "online", agent.proc)
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        assert steps(state, "dep-1") == HAPPY
        assert (state / "current").resolve().name == "tiny-chat@1.0.0"
        assert "tiny-chat@1.0.0" in serving(state)

        # a group's desired state with a newer revision replaces it
        fleet.publish_desired(desired(signing_key, 2, b2, bench_after_install=True), group="canary")
        assert wait_final(state, "dep-2", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        assert steps(state, "dep-2") == HAPPY
        assert (state / "current").resolve().name == "tiny-chat@1.1.0"
        assert (state / "previous").resolve().name == "tiny-chat@1.0.0"
        assert "tiny-chat@1.1.0" in serving(state), "the new version is swapped in"
        bench = json.loads(wait_until(lambda: fleet.on("bench"), 20, "the post-install bench record")[-1])
        assert (bench["model"], bench["variant"], bench["meta"]["device"]) == (
            "tiny-chat@1.1.0",
            "cpu-int4",
            "dev-1",
        )
        assert bench["metrics"]["decode_tok_s"]["median"] > 0

        reported = wait_until(
            lambda: [r for r in map(json.loads, fleet.on("reported")) if r.get("applied_revision") == 2],
            20,
            "reported revision 2",
        )[-1]
        assert (
            reported["active"]["bundle"] == "tiny-chat@1.1.0" and reported["active"]["variant"] == "cpu-int4"
        )
        assert reported["active"]["provider"] == "CPUExecutionProvider"
        assert reported["last_state"] == "SUCCEEDED" and "tiny-chat@1.0.0" in reported["previous"]
        on_wire = {(e["deployment_id"], e["seq"]) for e in fleet.events()}
        assert {(e["deployment_id"], e["seq"]) for e in read_events(state)} <= on_wire | set()
        assert agent.terminate() == 0

    assert fleet.on("state")[-1] == b"offline"
    LoadedModel(state / "current" / "cpu-int4")  # the active version is complete and loadable
    out = subprocess.run(
        cli("edge-agent", "status", "--config", str(config), "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["active"]["ref"] == "tiny-chat@1.1.0" and info["previous"] == "tiny-chat@1.0.0"
    assert info["last_deployment"]["state"] == "SUCCEEDED" and info["in_progress"] is None
