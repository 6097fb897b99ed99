"""What the agent imports at rest: nothing heavy until a model is served.

A device with little RAM runs the agent beside its own workload, so ONNX Runtime, onnxruntime-genai
and numpy load with the first model, FastAPI and uvicorn only when the API is on, and httpx with the
first download. Each case runs the real CLI in a child process and reads the child's `sys.modules`
when it exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.helpers import Fleet, wait_until, write_config
from tests.conftest import REPO

MODEL_RUNTIME = {"onnxruntime", "onnxruntime_genai", "numpy"}
WEB_SERVER = {"fastapi", "uvicorn", "starlette"}
HTTP_CLIENT = {"httpx", "httpcore"}

# Runs the edge-agent CLI in this process and writes the top-level packages it imported on exit.
CHILD = """
import atexit, json, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted({m.split(".")[0] for m in sys.modules}))))
sys.argv = ["edge-agent", *sys.argv[2:]]
runpy.run_module("edge_agent", run_name="__main__")
"""


def cli_child(out: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), *args], env=env, **kwargs)


def packages(out: Path) -> set[str]:
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize(
    "args", [["version"], ["--help"], ["run", "--help"], ["status", "--json", "--state-dir", "{tmp}"]]
)
def test_quick_commands_import_no_runtime_and_no_web_server(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "modules.json"
    proc = cli_child(out, *[a.format(tmp=tmp_path / "state") for a in args], stdout=subprocess.PIPE)
    assert proc.wait(60) == 0
    loaded = packages(out)
    assert "typer" in loaded  # the list is real: the CLI itself is in it
    assert not loaded & (MODEL_RUNTIME | WEB_SERVER | HTTP_CLIENT), sorted(
        loaded & (MODEL_RUNTIME | WEB_SERVER)
    )


@pytest.mark.parametrize("api", [False, True], ids=["api-off", "api-on"])
def test_the_idle_agent_holds_no_model_runtime(
    tmp_path: Path, keys_dir: Path, fleet_id: str, mqtt_broker: tuple[str, int], api: bool
) -> None:
    config = write_config(tmp_path, fleet_id, "http://127.0.0.1:9/", keys_dir, api=api)
    out, log = tmp_path / "modules.json", tmp_path / "agent.log"
    fleet = Fleet(fleet_id)
    try:
        with open(log, "wb") as sink:
            proc = cli_child(out, "run", "--config", str(config), stdout=sink, stderr=sink)
        try:
            wait_until(lambda: b"online" in fleet.on("state"), 60, "the agent to come online", proc)
            if api:  # the API answers before any model is active
                wait_until(lambda: (tmp_path / "state" / "reported.json").exists(), 30, "reported.json")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        fleet.close()
    loaded = packages(out)
    assert {"paho", "pydantic"} <= loaded  # it did run: the broker link and the contracts are there
    assert not loaded & (MODEL_RUNTIME | HTTP_CLIENT), sorted(loaded & (MODEL_RUNTIME | HTTP_CLIENT))
    if api:
        assert loaded >= WEB_SERVER
    else:
        assert not loaded & WEB_SERVER, sorted(loaded & WEB_SERVER)
