"""`edge-agent providers` and `edge-agent serve` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import openai

from tests.conftest import cli
from tests.serving.conftest import BUNDLE_NAME, MakeBundle


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli("edge-agent", *args), capture_output=True, text=True, timeout=120)


def test_providers_explains_the_choice_for_a_manifest(serving_bundle: MakeBundle, tmp_path: Path) -> None:
    bundle = serving_bundle(
        "5.0.0", providers=("CUDAExecutionProvider", "CPUExecutionProvider"), device="gpu"
    )
    proc = run("providers", "--manifest", str(bundle / "manifest.json"), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "CPUExecutionProvider" in out["device"]["available_providers"]
    assert out["device"]["memory"]["total_mb"] > 0
    assert out["choice"]["variant"] == "cpu-fp32"
    assert out["choice"]["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert any("not available here" in r for r in out["choice"]["reasons"])

    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed_precisions: [int4]\n")
    proc = run("providers", "--manifest", str(bundle), "--policy", str(policy))
    assert proc.returncode == 1 and "no variant this device can run" in proc.stderr

    proc = run("providers")
    assert proc.returncode == 0 and "Execution providers" in proc.stdout


def test_serve_a_bundle_standalone(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("5.1.0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EDGE_AGENT_API_KEY": "k"}
    proc = subprocess.Popen(
        cli("edge-agent", "serve", "--bundle", str(bundle), "--port", str(port), "--log-level", "warning"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        r = client.chat.completions.create(
            model=f"{BUNDLE_NAME}:alpha", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert r.model == f"{BUNDLE_NAME}@5.1.0:alpha" and r.usage.completion_tokens >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"serving {BUNDLE_NAME}@5.1.0" in out


def test_serve_refuses_an_exposed_port_without_a_key(tmp_path: Path) -> None:
    proc = run("serve", "--model-dir", str(tmp_path), "--host", "0.0.0.0")
    assert proc.returncode == 1 and "api_key" in proc.stderr
