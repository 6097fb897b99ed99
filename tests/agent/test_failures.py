"""Every way a deployment can go wrong ends in its event code, with the old version still active.

One agent process (real broker, real HTTP registry) installs 1.0.0, then is sent one bad desired state
after another. Each must end in the right REJECTED/FAILED code and leave 1.0.0 active and loadable.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from build_side.manifest_io import file_entries, write_signed_manifest
from edge_agent.contracts import BundleManifest
from edge_agent.hashing import sha256_bytes
from edge_agent.runtime import GenerationParams, LoadedModel
from edge_agent.signing import sign_document
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


@pytest.fixture
def fleet(fleet_id: str, mqtt_broker) -> Iterator[Fleet]:
    f = Fleet(fleet_id)
    yield f
    f.close()


def still_serving_v1(state: Path, api: bool = False) -> None:
    """1.0.0 is active, loadable, and (with the API on) the model the agent answers with."""
    assert (state / "current").resolve().name == "tiny-chat@1.0.0"
    if api:
        assert "tiny-chat@1.0.0" in serving(state)
    else:
        model = LoadedModel(state / "current" / "cpu-int4")
        assert model.generate_text("hi", GenerationParams(max_new_tokens=3)) is not None


def outcome(state: Path, deployment_id: str, proc) -> tuple[str, str | None]:
    final = wait_final(state, deployment_id, proc=proc)
    return final["state"], (final.get("error") or {}).get("code")


def test_bad_desired_states_and_bundles_change_nothing(
    tmp_path: Path,
    make_bundle,
    registry_dir: Path,
    registry_tap,
    fleet: Fleet,
    signing_key,
    other_key,
    keys_dir,
) -> None:
    url, tap = registry_tap
    good = release(make_bundle, registry_dir, signing_key, "1.0.0")
    # fp32: weights the device does not hold, so they come from the registry (held ones are linked)
    tampered = release(make_bundle, registry_dir, signing_key, "1.1.0", variants=("cpu-fp32",))
    data = tampered / "cpu-fp32" / "model.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # same size, different bytes
    data.unlink()  # a published file is a read-only hardlink to the registry's blob: replace the name
    data.write_bytes(bytes(blob))
    untrusted_manifest = release(make_bundle, registry_dir, other_key, "1.2.0")
    missing = release(make_bundle, registry_dir, signing_key, "1.3.0", variants=("cpu-fp32",))
    (missing / "cpu-fp32" / "model.onnx.data").unlink()  # weights no version on the device holds

    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state, api=True)
    fleet.publish_desired(desired(signing_key, 1, good))
    with Agent(config, tmp_path / "agent.log") as agent:
        p = agent.proc
        assert outcome(state, "dep-1", p) == ("SUCCEEDED", None), agent.log_text()

        fleet.publish_desired(desired(signing_key, 2, tampered, "tampered"))
        assert outcome(state, "tampered", p) == ("FAILED", "CHECKSUM_MISMATCH")
        assert states_of(state, "tampered")[-2] == "VERIFYING"

        fleet.publish_desired(desired(signing_key, 3, untrusted_manifest, "bad-manifest-sig"))
        assert outcome(state, "bad-manifest-sig", p) == ("FAILED", "SIGNATURE_INVALID")

        fleet.publish_desired(desired(other_key, 4, good, "untrusted-desired"))
        assert outcome(state, "untrusted-desired", p) == ("REJECTED", "SIGNATURE_INVALID")

        unsigned = {k: v for k, v in desired(signing_key, 4, good, "unsigned").items() if k != "signature"}
        fleet.publish_desired(unsigned)
        assert outcome(state, "unsigned", p) == ("REJECTED", "SIGNATURE_INVALID")

        fleet.publish_desired(desired(signing_key, 1, good, "replayed"))
        assert outcome(state, "replayed", p) == ("REJECTED", "STALE_REVISION")

        doc = desired(signing_key, 5, good, "expired")
        doc["expires"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        fleet.publish_desired(sign_document(doc, signing_key))
        assert outcome(state, "expired", p) == ("REJECTED", "STALE_REVISION")

        whole = json.dumps(desired(signing_key, 6, good, "truncated")).encode()
        cut = whole[: len(whole) // 2]
        fleet.publish_desired(cut)
        assert outcome(state, f"invalid-{sha256_bytes(cut)[:12]}", p) == ("REJECTED", "INVALID_MESSAGE")

        bad_field = desired(signing_key, 7, good, "malformed")
        bad_field["bundle"]["version"] = "not-a-version"
        fleet.publish_desired(sign_document(bad_field, signing_key))
        assert outcome(state, "malformed", p) == ("REJECTED", "INVALID_MESSAGE")

        fleet.publish_desired(desired(signing_key, 8, missing, "not-found"))
        assert outcome(state, "not-found", p) == ("FAILED", "DOWNLOAD_FAILED")
        assert [r.status for r in tap.served("1.3.0/cpu-fp32/model.onnx.data")] == [404], "no retry on a 4xx"

        for dep in ("tampered", "bad-manifest-sig", "not-found"):
            assert states_of(state, dep)[0] == "ACCEPTED"
        still_serving_v1(state, api=True)
        reported = json.loads((state / "reported.json").read_text())
        assert reported["active"]["bundle"] == "tiny-chat@1.0.0" and reported["applied_revision"] == 8
        assert agent.terminate() == 0
    assert not list((state / "staging").iterdir())
    assert sorted(p.name for p in (state / "store").iterdir()) == ["tiny-chat@1.0.0"]


def broken_release(make_bundle, registry_dir: Path, key, version: str) -> Path:
    """Files that match their signed manifest, but a model that cannot load; published."""
    from build_side.registry import publish

    bundle = make_bundle(version)
    (bundle / "cpu-int4" / "genai_config.json").write_text('{"model": "this is not a model config"}')
    manifest = BundleManifest.model_validate_json((bundle / "manifest.json").read_bytes())
    manifest.variants[0].files = file_entries(bundle, "cpu-int4")
    write_signed_manifest(bundle, manifest, key)
    return publish(bundle, registry_dir, key).path


def test_failed_health_gate_rolls_back_and_is_not_retried(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_server: str, fleet: Fleet, signing_key, keys_dir
) -> None:
    good = release(make_bundle, registry_dir, signing_key, "1.0.0")
    bad = broken_release(make_bundle, registry_dir, signing_key, "2.0.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, fleet.fleet, registry_server, keys_dir, state, api=True)
    fleet.publish_desired(desired(signing_key, 1, good))
    with Agent(config, tmp_path / "agent.log") as agent:
        assert outcome(state, "dep-1", agent.proc) == ("SUCCEEDED", None), agent.log_text()
        fleet.publish_desired(desired(signing_key, 2, bad, "unhealthy", health_timeout_s=60))
        assert outcome(state, "unhealthy", agent.proc) == ("ROLLED_BACK", "HEALTH_CHECK_FAILED")
        assert states_of(state, "unhealthy") == [
            "ACCEPTED",
            "DOWNLOADING",
            "DOWNLOADING",
            "VERIFYING",
            "INSTALLING",
            "HEALTH_CHECK",
            "ROLLED_BACK",
        ]
        still_serving_v1(state, api=True)
        assert agent.terminate() == 0
    assert not (state / "store" / "tiny-chat@2.0.0").exists(), "the failed version is removed"

    # A restart sees the same retained document again and leaves it alone; a new revision for the
    # same broken version is refused without another attempt.
    with Agent(config, tmp_path / "agent.log") as agent:
        wait_until(lambda: b"online" in fleet.on("state")[-1:], 60, "online again", agent.proc)
        fleet.publish_desired(desired(signing_key, 3, bad, "unhealthy-again"))
        assert outcome(state, "unhealthy-again", agent.proc) == ("REJECTED", "HEALTH_CHECK_FAILED")
        assert agent.terminate() == 0
    assert states_of(state, "unhealthy").count("ACCEPTED") == 1
    still_serving_v1(state)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 14 MB filesystem (tmpfs) for the state folder; skipped where mounting is not allowed.
    1.0.0 (5.6 MB) fits; 2.0.0 does not, even though its tokenizer files are linked from 1.0.0."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=14m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip() or proc.returncode}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_too_small_fails_before_the_first_byte(
    tmp_path: Path,
    make_bundle,
    registry_dir: Path,
    registry_tap,
    fleet: Fleet,
    signing_key,
    keys_dir,
    tiny_disk,
) -> None:
    url, tap = registry_tap
    small = release(make_bundle, registry_dir, signing_key, "1.0.0")  # int4: 5.6 MB
    large = release(make_bundle, registry_dir, signing_key, "2.0.0", variants=("cpu-fp32",))  # fp32: 16 MB
    state = tiny_disk / "state"
    config = write_config(tmp_path, fleet.fleet, url, keys_dir, state)
    fleet.publish_desired(desired(signing_key, 1, small))
    with Agent(config, tmp_path / "agent.log") as agent:
        assert outcome(state, "dep-1", agent.proc) == ("SUCCEEDED", None), agent.log_text()
        fleet.publish_desired(desired(signing_key, 2, large, "too-big"))
        assert outcome(state, "too-big", agent.proc) == ("FAILED", "DISK_FULL")
        assert agent.terminate() == 0
    assert not tap.served("2.0.0/cpu-fp32/model.onnx.data"), "refused before the first byte"
    still_serving_v1(state)
    assert any("MB free" in (e.get("error") or {}).get("detail", "") for e in read_events(state))
