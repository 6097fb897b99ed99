"""`slmops deploy`: signed, numbered, retained desired states; refusal of what the registry lacks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from build_side.fleet.catalog import resolve_bundle
from build_side.fleet.errors import BundleNotFoundError
from edge_agent.contracts import DesiredState
from edge_agent.hashing import sha256_bytes
from edge_agent.signing import SigningKey, TrustedKeys, verify_document
from tests.conftest import cli


def retained(host: str, port: int, topic: str, timeout: float = 5.0) -> bytes | None:
    """The retained message on `topic`, read by a fresh subscriber (None if there is none)."""
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_message = lambda cl, ud, msg: got.append(bytes(msg.payload)) if msg.retain else None
    c.connect(host, port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    return got[0] if got else None


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli("slmops", *args), capture_output=True, text=True, check=check, timeout=120)


def test_deploy_to_a_device_and_a_group_publishes_signed_retained_states(
    mqtt_broker: tuple[str, int], fleet_id: str, registry: Path, key_file: Path, signing_key: SigningKey
) -> None:
    common = ["--registry", str(registry), "--fleet", fleet_id, "--key", str(key_file), "--json"]
    first = json.loads(
        run(
            "deploy", "tiny-chat@1.0.0", "--device", "dev-a", "--bench", "--health-timeout", "30", *common
        ).stdout
    )
    second = json.loads(
        run(
            "deploy",
            "tiny-chat@2.0.0",
            "--group",
            "lab",
            "--variant-policy",
            "precisions=int4;devices=cpu",
            *common,
        ).stdout
    )
    assert [p["revision"] for p in first["published"] + second["published"]] == [1, 2]

    dev = DesiredState.model_validate_json(
        retained(*mqtt_broker, f"slmops/v1/{fleet_id}/dev-a/desired") or b"{}"
    )
    manifest = registry / "bundles/tiny-chat/1.0.0/manifest.json"
    assert dev.bundle.manifest_sha256 == sha256_bytes(manifest.read_bytes())
    assert dev.bundle.manifest_url == "bundles/tiny-chat/1.0.0/manifest.json"
    assert dev.policy.bench_after_install and dev.policy.health_timeout_s == 30
    raw = json.loads(retained(*mqtt_broker, f"slmops/v1/{fleet_id}/group/lab/desired") or b"{}")
    verify_document(raw, TrustedKeys([signing_key.public]))  # the bytes on the wire carry a valid signature
    grp = DesiredState.model_validate(raw)
    assert grp.bundle.ref == "tiny-chat@2.0.0" and grp.revision == 2
    assert grp.variant_policy.allowed_precisions == ["int4"] and grp.variant_policy.preferred_devices == [
        "cpu"
    ]
    # a tampered copy no longer verifies
    raw["bundle"]["version"] = "9.9.9"
    with pytest.raises(Exception, match="does not match"):
        verify_document(raw, TrustedKeys([signing_key.public]))


def test_deploy_refuses_a_bundle_the_registry_does_not_hold(
    mqtt_broker: tuple[str, int], fleet_id: str, registry: Path, key_file: Path
) -> None:
    proc = run(
        "deploy", "tiny-chat@3.0.0", "--device", "dev-a", "--registry", str(registry),
        "--fleet", fleet_id, "--key", str(key_file), check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "does not hold tiny-chat@3.0.0" in proc.stderr and "Traceback" not in proc.stderr
    assert retained(*mqtt_broker, f"slmops/v1/{fleet_id}/dev-a/desired", timeout=1.0) is None


def test_resolve_bundle_checks_the_signed_index_and_works_over_http(
    registry: Path, registry_server: str, registry_dir: Path, signing_key: SigningKey
) -> None:
    import shutil

    from build_side.registry import index_bytes, write_index

    plain = resolve_bundle(str(registry), "tiny-chat@2.0.0")  # no index yet: the standard path
    index = write_index(registry, signing_key)
    assert resolve_bundle(str(registry), "tiny-chat@2.0.0") == plain
    # an index that disagrees with the manifest's bytes is refused
    entry = index.bundles[1].model_copy(update={"manifest_sha256": "f" * 64})
    (registry / "index.json").write_bytes(index_bytes(index.model_copy(update={"bundles": [entry]})))
    with pytest.raises(Exception, match="hash to"):
        resolve_bundle(str(registry), "tiny-chat@2.0.0")
    # the same registry served over HTTP resolves to the same reference; a missing one names what is held
    shutil.copytree(registry / "bundles", registry_dir / "bundles")
    write_index(registry_dir, signing_key)
    assert resolve_bundle(registry_server, "tiny-chat@2.0.0") == plain
    with pytest.raises(BundleNotFoundError, match=r"holds tiny-chat@1.0.0, tiny-chat@2.0.0"):
        resolve_bundle(registry_server, "tiny-chat@7.0.0")


def test_channel_for_http_polling_devices_is_written_atomically(
    fleet_id: str, registry: Path, key_file: Path, signing_key: SigningKey
) -> None:
    run(
        "deploy", "tiny-chat@1.0.0", "--channel", "stable", "--registry", str(registry),
        "--fleet", fleet_id, "--key", str(key_file),
    )  # fmt: skip
    run(
        "deploy", "tiny-chat@2.0.0", "--channel", "stable", "--registry", str(registry),
        "--fleet", fleet_id, "--key", str(key_file),
    )  # fmt: skip
    path = registry / "channels" / "stable.json"
    doc = json.loads(path.read_bytes())
    verify_document(doc, TrustedKeys([signing_key.public]))
    assert doc["bundle"]["version"] == "2.0.0" and doc["revision"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["stable.json"]  # no temporary left behind


def test_revisions_rise_above_what_the_broker_already_holds(
    mqtt_broker: tuple[str, int], fleet_id: str, registry: Path, key_file: Path, signing_key: SigningKey
) -> None:
    """A fresh operator database must not issue a revision the device would ignore as stale."""
    from build_side.fleet.desired import build_desired, desired_payload

    old = build_desired(revision=41, bundle=resolve_bundle(str(registry), "tiny-chat@1.0.0"), key=signing_key)
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(*mqtt_broker)
    c.loop_start()
    c.publish(
        f"slmops/v1/{fleet_id}/dev-b/desired", desired_payload(old), qos=1, retain=True
    ).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    out = json.loads(
        run(
            "deploy", "tiny-chat@2.0.0", "--device", "dev-c", "--registry", str(registry),
            "--fleet", fleet_id, "--key", str(key_file), "--json",
        ).stdout
    )  # fmt: skip
    assert out["published"][0]["revision"] == 42
