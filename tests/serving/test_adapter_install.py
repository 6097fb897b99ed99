"""A release whose adapter was exported for another base is refused at install: FAILED with
INCOMPATIBLE, and the version before keeps serving. Both health gates: in the serving host (API on)
and in the probe child (API off)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from build_side.registry import publish
from tests.agent.helpers import Agent, Fleet, desired, serving, states_of, wait_final, write_config
from tests.serving.conftest import BUNDLE_NAME, MakeBundle


@pytest.fixture
def fleet(fleet_id: str, mqtt_broker) -> Iterator[Fleet]:
    f = Fleet(fleet_id)
    yield f
    f.close()


@pytest.mark.parametrize("api", [True, False], ids=["serving-host", "probe-child"])
def test_an_adapter_for_another_base_fails_the_install_and_the_old_version_serves(
    api: bool,
    tmp_path: Path,
    serving_bundle: MakeBundle,
    registry_dir: Path,
    registry_server: str,
    fleet: Fleet,
    signing_key,
    keys_dir: Path,
) -> None:
    tag = "1" if api else "2"
    good = publish(serving_bundle(f"{tag}.0.0"), registry_dir, signing_key).path
    foreign = publish(serving_bundle(f"{tag}.1.0", base_sha256="cd" * 32), registry_dir, signing_key).path
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, registry_server, keys_dir, state, api=api)
    fleet.publish_desired(desired(signing_key, 1, good))
    with Agent(config, tmp_path / "agent.log") as agent:
        final = wait_final(state, "dep-1", proc=agent.proc)
        assert final["state"] == "SUCCEEDED", agent.log_text()[-3000:]
        fleet.publish_desired(desired(signing_key, 2, foreign, "foreign-adapter"))
        final = wait_final(state, "foreign-adapter", proc=agent.proc)
        assert (final["state"], final["error"]["code"]) == ("FAILED", "INCOMPATIBLE"), final
        assert "belongs to another base" in final["error"]["detail"]
        assert states_of(state, "foreign-adapter") == ["ACCEPTED", "FAILED"]  # refused before any download
        assert (state / "current").resolve().name == f"{BUNDLE_NAME}@{tag}.0.0"
        if api:
            ids = serving(state)
            assert f"{BUNDLE_NAME}@{tag}.0.0" in ids and f"{BUNDLE_NAME}:alpha" in ids
        assert agent.terminate() == 0
