"""Updates that move only what changed: the device links the files it holds by sha256.

A real agent process, the real broker, the real HTTP registry (its access log in a tap): 1.2.0, then a
1.2.1 whose only new file is a changed `genai_config.json`. The registry serves the one file; both
versions stay complete on disk and share the rest (`du` counts hardlinks once).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.bundle_check import check_file
from edge_agent.contracts import BundleManifest
from edge_agent.deploy.store import Store
from edge_agent.status import read_status
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
from tests.conftest import CHANGED, VARIANT


@pytest.fixture
def fleet(fleet_id: str, mqtt_broker) -> Iterator[Fleet]:
    f = Fleet(fleet_id)
    yield f
    f.close()


def du(state: Path) -> int:
    """`du -b` over the store, the blob pool and staging: a file several names share counted once."""
    dirs = [str(state / d) for d in ("store", "blobs", "staging") if (state / d).exists()]
    out = subprocess.run(["du", "-scb", *dirs], capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def variant_files(bundle: Path) -> dict[str, int]:
    manifest = BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())
    return {f.path: f.size for f in manifest.files_for(VARIANT)}


def fetched(tap, since: int, version: str) -> int:
    return sum(r.sent for r in tap.requests[since:] if f"/{version}/" in r.path)


def assert_complete(state: Path, ref: str) -> None:
    v = Store(state, create=False).get(ref)
    assert v is not None, ref
    for entry in v.manifest().files_for(v.variant):
        check_file(v.path, entry)


def test_an_update_fetches_only_the_changed_file_and_rollback_fetches_nothing(
    tmp_path: Path, make_bundle, patch_release, registry_dir, registry_tap, fleet, signing_key, keys_dir
) -> None:
    url, tap = registry_tap
    b0 = release(make_bundle, registry_dir, signing_key, "1.2.0")
    b1 = patch_release("1.2.1")
    sizes = variant_files(b1)
    variant_size = sum(sizes.values())
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state)
    with Agent(config, tmp_path / "agent.log") as agent:
        fleet.publish_desired(desired(signing_key, 1, b0))
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        du_before = du(state)

        mark = len(tap.requests)
        fleet.publish_desired(desired(signing_key, 2, b1, bench_after_install=True))
        assert wait_final(state, "dep-2", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        got = fetched(tap, mark, "1.2.1")
        files_got = {r.path.split("/1.2.1/")[1] for r in tap.requests[mark:] if r.sent}
        du_after = du(state)
        reported = json.loads((state / "reported.json").read_text())

        mark = len(tap.requests)
        fleet.publish_desired(desired(signing_key, 3, b0))
        assert wait_final(state, "dep-3", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        rollback = [r.path for r in tap.requests[mark:]]
        agent.terminate()

    print(
        f"\nvariant {variant_size} B; fetched for 1.2.1: {got} B ({got / variant_size:.3%}) "
        f"in {sorted(files_got)}; du before {du_before} B, after {du_after} B "
        f"({du_after / du_before:.4f}x); rollback requests {rollback}"
    )
    # the registry sent the manifest, its signature and the one changed file, nothing else
    assert files_got == {"manifest.json", "manifest.sig", CHANGED}
    assert got < 0.01 * variant_size
    first = next(
        e for e in read_events(state) if e["deployment_id"] == "dep-2" and e["state"] == "DOWNLOADING"
    )
    assert first["progress"]["reused"] == variant_size - sizes[CHANGED]
    assert first["progress"]["to_fetch"] == sizes[CHANGED]
    # both versions complete on disk, sharing every file but the changed one
    assert_complete(state, "tiny-chat@1.2.0")
    assert_complete(state, "tiny-chat@1.2.1")
    weights = f"{VARIANT}/model.onnx.data"
    assert os.path.samefile(
        state / "store/tiny-chat@1.2.0" / weights, state / "store/tiny-chat@1.2.1" / weights
    )
    assert du_after - du_before < 0.01 * variant_size
    assert abs(reported["store"]["disk_bytes"] - du_after) < 64 << 10  # du also counts the folders
    assert reported["store"]["logical_bytes"] > 1.9 * variant_size
    assert reported["store"]["versions"] == 2
    assert abs(read_status(state)["store"]["disk_bytes"] - du_after) < 64 << 10  # `edge-agent status`
    bench = json.loads((state / "bench.jsonl").read_text().splitlines()[-1])
    assert abs(bench["store_bytes"] - du_after) < 64 << 10, "the bench record carries the store's disk"
    # rollback: 1.2.0 is still installed, so only its manifest and signature are read
    assert all(p.endswith(("manifest.json", "manifest.sig")) for p in rollback), rollback
    assert (state / "current").resolve().name == "tiny-chat@1.2.0"


def flip_one_byte(path: Path, offset: int = 1000) -> None:
    """In place (same inode, as disk rot would), not by writing a new file."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x01]))


def test_a_reused_file_damaged_on_disk_is_fetched_again_not_linked(
    tmp_path: Path, make_bundle, patch_release, registry_dir, registry_tap, fleet, signing_key, keys_dir
) -> None:
    url, tap = registry_tap
    b0 = release(make_bundle, registry_dir, signing_key, "1.2.0")
    b1 = patch_release("1.2.1")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state)
    weights = f"{VARIANT}/model.onnx.data"
    with Agent(config, tmp_path / "agent.log") as agent:
        fleet.publish_desired(desired(signing_key, 1, b0))
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        old = state / "store/tiny-chat@1.2.0" / weights
        flip_one_byte(old)

        mark = len(tap.requests)
        fleet.publish_desired(desired(signing_key, 2, b1))
        assert wait_final(state, "dep-2", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        agent.terminate()
        assert f"{weights}: the copy at" in agent.log_text()
    served = {r.path.split("/1.2.1/")[1]: r.sent for r in tap.requests[mark:] if "/1.2.1/" in r.path}
    assert served[weights] == variant_files(b1)[weights], "the damaged file came from the registry again"
    assert set(served) == {"manifest.json", "manifest.sig", CHANGED, weights}
    new = state / "store/tiny-chat@1.2.1" / weights
    assert not os.path.samefile(old, new)
    assert_complete(state, "tiny-chat@1.2.1")
    entry = next(f for f in variant_files_entries(b1) if f.path == weights)
    assert os.path.samefile(new, state / "blobs" / entry.sha256), "the pool now names the good copy"


def variant_files_entries(bundle: Path):
    return BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes()).files_for(VARIANT)


def test_kill9_while_linking_resumes_and_ends_consistent(
    tmp_path: Path, make_bundle, patch_release, registry_dir, registry_tap, fleet, signing_key, keys_dir
) -> None:
    url, tap = registry_tap
    b0 = release(make_bundle, registry_dir, signing_key, "1.2.0")
    b1 = patch_release("1.2.1")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state)
    log = tmp_path / "agent.log"
    fleet.publish_desired(desired(signing_key, 1, b0))
    with Agent(config, log) as agent:
        assert wait_final(state, "dep-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        assert agent.terminate() == 0
    du_before = du(state)

    mark = len(tap.requests)
    fleet.publish_desired(desired(signing_key, 2, b1))
    # held after the first file is linked, then killed
    with Agent(config, log, env={"EDGE_AGENT_TEST_PAUSE": "LINKING=60"}) as agent:
        wait_until(lambda: "test pause at LINKING" in agent.log_text(), 60, "the pause", agent.proc)
        agent.kill9()
    assert json.loads((state / "journal.json").read_text())["step"] == "DOWNLOADING"
    staging = next((state / "staging").iterdir())
    linked = [p for p in staging.rglob("*") if p.is_file() and p.stat().st_nlink > 1]
    assert linked, "at least one file was linked before the kill"
    # a link cut short between link() and rename(): the temporary name must not survive
    (staging / VARIANT / "tokenizer.json.link").write_bytes(b"half")
    assert (state / "current").resolve().name == "tiny-chat@1.2.0"

    with Agent(config, log) as agent:
        assert wait_final(state, "dep-2", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        agent.terminate()
        assert "resuming dep-2 at DOWNLOADING after a crash (1)" in agent.log_text()
    assert states_of(state, "dep-2")[-1] == "SUCCEEDED"
    assert_complete(state, "tiny-chat@1.2.0")
    assert_complete(state, "tiny-chat@1.2.1")
    assert not list((state / "staging").iterdir())
    assert not list(state.rglob("*.link")), "no temporary link left anywhere"
    files_got = {r.path.split("/1.2.1/")[1] for r in tap.requests[mark:] if r.sent and "/1.2.1/" in r.path}
    assert files_got == {"manifest.json", "manifest.sig", CHANGED}
    assert du(state) - du_before < 0.01 * sum(variant_files(b1).values())
