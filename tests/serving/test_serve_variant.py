"""`edge-agent serve --bundle` chooses a variant as the agent does, and `--variant` pins one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from edge_agent.contracts import VariantPolicy
from edge_agent.serving.model_host import ModelHost
from tests.conftest import REPO, cli


def test_the_policy_picks_the_variant_served(make_bundle) -> None:
    bundle = make_bundle("1.0.0", variants=("cpu-fp32", "cpu-int4"))
    host = ModelHost()
    try:
        assert host.load_dir(bundle, policy=VariantPolicy(variant="cpu-int4")).variant_id == "cpu-int4"
        assert (
            host.load_dir(bundle, policy=VariantPolicy(allowed_precisions=["fp32"])).variant_id == "cpu-fp32"
        )
    finally:
        host.close()


def test_serve_takes_variant(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("1.0.0", variants=("cpu-fp32", "cpu-int4"))
    out = tmp_path / "serve.log"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            cli("edge-agent", "serve", "--bundle", str(bundle), "--variant", "cpu-int4", "--port", "0"),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + 60
        while "serving tiny-chat@1.0.0" not in out.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        assert "serving tiny-chat@1.0.0 (cpu-int4 on CPUExecutionProvider)" in out.read_text(), (
            out.read_text()
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    bad = subprocess.run(
        cli("edge-agent", "serve", "--bundle", str(bundle), "--variant", "cuda-int4", "--port", "0"),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert bad.returncode != 0 and "cuda-int4" in bad.stdout + bad.stderr
