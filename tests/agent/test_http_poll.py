"""Without a broker: the agent polls channels/<channel>.json (with ETag) and installs what it names."""

from __future__ import annotations

import json
from pathlib import Path

from build_side.fleet.channels import write_channel
from build_side.fleet.desired import build_desired
from edge_agent.contracts import BundleRef, DeploymentPolicy
from edge_agent.hashing import sha256_file
from tests.agent.helpers import Agent, release, wait_final, write_config


def bundle_ref(bundle_dir: Path) -> BundleRef:
    name, version = bundle_dir.parent.name, bundle_dir.name
    return BundleRef(
        name=name,
        version=version,
        manifest_url=f"bundles/{name}/{version}/manifest.json",
        manifest_sha256=sha256_file(bundle_dir / "manifest.json"),
    )


def test_polled_channel_installed_then_replaced(
    tmp_path: Path, make_bundle, registry_dir: Path, registry_tap, signing_key, keys_dir
) -> None:
    url, tap = registry_tap
    b1 = release(make_bundle, registry_dir, signing_key, "1.0.0")
    b2 = release(make_bundle, registry_dir, signing_key, "2.0.0")
    state = tmp_path / "state"
    config = write_config(tmp_path, "lab", url, keys_dir, state, mqtt_on=False, channel="stable")
    policy = DeploymentPolicy(health_timeout_s=60)
    # The fleet tool's own desired-state writer: what operators publish is what the agent accepts.
    first = build_desired(
        revision=1, bundle=bundle_ref(b1), key=signing_key, deployment_id="poll-1", policy=policy
    )
    write_channel(str(registry_dir), "stable", first)

    with Agent(config, tmp_path / "agent.log") as agent:
        assert wait_final(state, "poll-1", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        assert (state / "current").resolve().name == "tiny-chat@1.0.0"
        benched = DeploymentPolicy(health_timeout_s=60, bench_after_install=True)
        second = build_desired(
            revision=2, bundle=bundle_ref(b2), key=signing_key, deployment_id="poll-2", policy=benched
        )
        write_channel(str(registry_dir), "stable", second)
        assert wait_final(state, "poll-2", proc=agent.proc)["state"] == "SUCCEEDED", agent.log_text()
        assert (state / "current").resolve().name == "tiny-chat@2.0.0"
        assert (state / "previous").resolve().name == "tiny-chat@1.0.0"
        assert agent.terminate() == 0
    # The probe-only agent benched the new version in a child process and kept the record.
    [bench] = [json.loads(line) for line in (state / "bench.jsonl").read_text().splitlines()]
    assert bench["model"] == "tiny-chat@2.0.0" and bench["meta"]["repetitions"] >= 1

    polls = tap.served("/channels/stable.json")
    assert sum(r.status == 200 for r in polls) == 2, "one full read per change"
    assert any(r.status == 304 for r in polls), "unchanged polls are answered 304 (ETag)"
