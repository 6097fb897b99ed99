"""`slmops registry serve`: a real server process on a real socket, with Range, HEAD and ETags."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

from build_side.registry import publish
from edge_agent.signing import SigningKey
from tests.conftest import cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_range_head_and_etag(make_bundle, registry_dir: Path, signing_key: SigningKey) -> None:
    publish(make_bundle("1.0.0"), registry_dir, signing_key)
    weights = registry_dir / "bundles/tiny-chat/1.0.0/cpu-int4/model.onnx.data"
    data = weights.read_bytes()
    port = free_port()
    proc = subprocess.Popen(
        cli("slmops", "registry", "serve", str(registry_dir), "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/index.json", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "registry serve did not start within 60 s"
                time.sleep(0.3)
        with httpx.Client(base_url=base) as client:
            rel = "/bundles/tiny-chat/1.0.0/cpu-int4/model.onnx.data"
            head = client.head(rel)
            assert head.status_code == 200 and int(head.headers["content-length"]) == len(data)
            part = client.get(rel, headers={"Range": f"bytes=100-{len(data) - 1}"})
            assert part.status_code == 206 and part.content == data[100:]
            assert client.get(rel, headers={"If-None-Match": head.headers["etag"]}).status_code == 304
            assert client.get("/index.json").json()["bundles"][0]["name"] == "tiny-chat"
            assert client.get("/bundles/missing/1.0.0/manifest.json").status_code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)
