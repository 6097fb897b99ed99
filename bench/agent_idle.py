"""Benchmark of the edge agent at rest: time from process start to `online`, and idle memory.

    python -m bench.agent_idle [--runs 5] [--broker mqtt://127.0.0.1:1883] [--json]

Each run starts a real `python -m edge_agent run` with a fresh state folder (no model installed),
subscribes to its retained `state` topic first, and measures from `Popen` to the `online` message.
After `--settle` seconds idle it reads the process's RSS and USS. Two set-ups are measured: the API
off (a probe-only agent: no web server, no ONNX Runtime in the process) and the API on (FastAPI and
uvicorn imported; ONNX Runtime, onnxruntime-genai, numpy and httpx wait for the first model or
download, so neither set-up holds them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.signing import SigningKey
from edge_agent.transports.topics import device_topic

REPO = Path(__file__).resolve().parents[1]


def one_run(broker: str, api: bool, settle_s: float, workdir: Path) -> dict[str, float]:
    fleet, device = "b" + uuid.uuid4().hex[:10], "bench-1"
    keys = workdir / "keys"
    if not keys.exists():
        SigningKey.generate().save(keys)
    config = {
        "device_id": device,
        "fleet": fleet,
        "mqtt": {"url": broker},
        "registry_url": "http://127.0.0.1:9/",
        "trusted_keys": [str(keys)],
        "state_dir": str(workdir / f"state-{fleet}"),
        "api": {"port": 0} if api else {"enabled": False},
        "log": {"level": "WARNING"},
    }
    cfg_path = workdir / f"{fleet}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))

    online = threading.Event()
    parts = urlsplit(broker)
    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: online.set() if m.payload == b"online" else None
    watcher.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    watcher.subscribe(device_topic(fleet, device, "state"), qos=1)
    watcher.loop_start()
    time.sleep(0.2)  # the subscription is in place before the agent starts
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config", str(cfg_path)], env=env)
    try:
        if not online.wait(120):
            raise RuntimeError("the agent did not come online within 120 s")
        to_online = time.perf_counter() - t0
        time.sleep(settle_s)
        mem = psutil.Process(proc.pid).memory_full_info()
        return {"start_to_online_s": to_online, "rss_mb": mem.rss / 2**20, "uss_mb": mem.uss / 2**20}
    finally:
        proc.terminate()
        proc.wait(30)
        watcher.publish(device_topic(fleet, device, "state"), b"", qos=1, retain=True).wait_for_publish(5)
        watcher.publish(device_topic(fleet, device, "reported"), b"", qos=1, retain=True).wait_for_publish(5)
        watcher.loop_stop()
        watcher.disconnect()


def summarize(samples: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "samples": [round(s, 3) for s in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before reading memory")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "cpu": f"{psutil.cpu_count()} cores",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="agent-idle-") as tmp:
        for name, api in (("api_off", False), ("api_on", True)):
            runs = [one_run(args.broker, api, args.settle, Path(tmp)) for _ in range(args.runs)]
            results[name] = {k: summarize([r[k] for r in runs]) for k in runs[0]}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"edge agent at rest ({results['cpu']}, load {results['load_avg_1m']}, Python {results['python']})")
    print(f"{'set-up':<10}{'start->online s':>18}{'RSS MB':>10}{'USS MB':>10}   (median of {args.runs})")
    for name in ("api_off", "api_on"):
        r = results[name]
        print(
            f"{name:<10}{r['start_to_online_s']['median']:>18.2f}{r['rss_mb']['median']:>10.1f}"
            f"{r['uss_mb']['median']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
