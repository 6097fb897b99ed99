"""kill -9 mid-download and mid-install: the next start resumes, and one complete version is active.

The registry is throttled so the download takes seconds (a reliable window for the kill); the install
window is held open by the agent's test hook EDGE_AGENT_TEST_PAUSE (a sleep at that point of the step).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.bundle_check import check_file
from edge_agent.deploy.store import Store
from edge_agent.runtime import LoadedModel
from tests.agent.helpers import (
    Agent,
    Fleet,
    desired,
    read_events,
    release,
    states_of,
    wait_final,
    wait_until,
    write_config,
)

TINY_INT4_FILES = 7


@pytest.fixture
def fleet(fleet_id: str, mqtt_broker) -> Fleet:
    f = Fleet(fleet_id)
    yield f
    f.close()


def assert_one_complete_version(state: Path, ref: str) -> None:
    store = Store(state, create=False)
    cur = store.current()
    assert cur and cur.ref == ref
    manifest = cur.manifest()
    for entry in manifest.variant(cur.variant).files:
        check_file(cur.path, entry)  # size and sha256 of every file
    assert not (state / "journal.json").exists()
    assert not list((state / "staging").iterdir()), "nothing half-downloaded is left behind"
    LoadedModel(cur.variant_dir)


def downloaded(state: Path) -> int:
    """Bytes of the bundle's files (finished or .part) in staging."""
    return sum(
        f.stat().st_size
        for f in (state / "staging").rglob("*")
        if f.is_file() and f.parent.name != "staging" and f.name not in ("manifest.json", "manifest.sig")
    )


def test_kill9_during_download_resumes_with_range(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_tap, fleet: Fleet, signing_key, keys_dir
) -> None:
    url, tap = registry_tap
    tap.rate = 1_000_000  # bytes/s: the 5.6 MB download takes ~6 s
    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state)
    fleet.publish_desired(desired(signing_key, 1, b1))

    first = Agent(config, tmp_path / "agent.log").start()
    try:
        wait_until(
            lambda: any(e.get("progress", {}).get("done", 0) >= 1_500_000 for e in read_events(state)),
            60,
            "1.5 MB downloaded",
            first.proc,
        )
    finally:
        first.kill9()
    on_disk = downloaded(state)
    total = json.loads((b1 / "manifest.json").read_text())["variants"][0]["files"]
    total = sum(f["size"] for f in total)
    assert 1_500_000 <= on_disk < total
    served_before = len(tap.requests)

    tap.rate = 20_000_000
    with Agent(config, tmp_path / "agent.log") as agent:
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        agent.terminate()

    # The restart's first progress report starts from the bytes already on disk...
    progress = [e["progress"] for e in read_events(state) if e["state"] == "DOWNLOADING"]
    resumed = [p for p in progress if p["done"] == on_disk]
    assert resumed, (on_disk, progress)
    # ...and the registry saw a Range request from where the cut file stopped, and only the rest again.
    after = [r for r in tap.requests[served_before:] if "/cpu-int4/" in r.path]
    ranged = [r for r in after if r.range]
    assert ranged and all(r.status == 206 for r in ranged), after
    assert int(ranged[0].range.split("=")[1].rstrip("-")) > 0
    assert sum(r.sent for r in after) == total - on_disk
    assert_one_complete_version(state, "tiny-chat@1.0.0")


def test_kill9_during_install_keeps_the_old_version_then_finishes(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_server: str, fleet: Fleet, signing_key, keys_dir
) -> None:
    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    b2 = release(make_bundle, registry_dir, signing_key, "2.0.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, registry_server, keys_dir, state)
    log = tmp_path / "agent.log"
    fleet.publish_desired(desired(signing_key, 1, b1))
    with Agent(config, log) as agent:
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        assert agent.terminate() == 0
    fleet.publish_desired(desired(signing_key, 2, b2))
    # Held inside INSTALLING (the new version already renamed into the store), then killed.
    with Agent(config, log, env={"EDGE_AGENT_TEST_PAUSE": "INSTALLING=60"}) as agent:
        wait_until(lambda: "test pause at INSTALLING" in agent.log_text(), 60, "the pause", agent.proc)
        agent.kill9()
    assert json.loads((state / "journal.json").read_text())["step"] == "INSTALLING"
    assert states_of(state, "dep-2")[-1] == "INSTALLING"
    active = Store(state, create=False).current()
    assert active and active.ref == "tiny-chat@1.0.0", "the old version stays active until the new one passed"

    with Agent(config, log) as agent:
        assert wait_final(state, "dep-2", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        agent.terminate()
        assert "resuming dep-2 at INSTALLING after a crash (1)" in agent.log_text()
    assert_one_complete_version(state, "tiny-chat@2.0.0")
    assert (state / "previous").resolve().name == "tiny-chat@1.0.0"


def test_sigterm_stops_mid_download_cleanly(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_tap, fleet: Fleet, signing_key, keys_dir
) -> None:
    url, tap = registry_tap
    tap.rate = 500_000
    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state)
    fleet.publish_desired(desired(signing_key, 1, b1))
    with Agent(config, tmp_path / "agent.log") as agent:
        wait_until(lambda: states_of(state, "dep-1")[-1:] == ["DOWNLOADING"], 60, "downloading", agent.proc)
        assert agent.terminate(timeout=15) == 0
        assert "stopped dep-1 in DOWNLOADING; it resumes on the next start" in agent.log_text()
    journal = json.loads((state / "journal.json").read_text())
    assert journal["step"] == "DOWNLOADING" and journal["clean_stop"] and not journal["crashes"]
    assert wait_until(lambda: fleet.on("state")[-1:] == [b"offline"], 10, "offline")
