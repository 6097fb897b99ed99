"""`bench serve` against the agent's real OpenAI-compatible API serving the tiny model."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load import parse_sse_line
from edge_agent.contracts.bench_record import BenchRecord
from tests.conftest import cli


@pytest.fixture
def api_url(make_bundle) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from edge_agent.http_server import BackgroundServer
    from edge_agent.serving.api import create_app
    from edge_agent.serving.model_host import ModelHost
    from edge_agent.serving.settings import ApiSettings

    host = ModelHost()
    host.load_dir(make_bundle("1.0.0", variants=("cpu-int4",)))
    with BackgroundServer(create_app(host, ApiSettings(port=0, max_concurrent=2, max_queue=16))) as server:
        yield server.url
    host.close()


def test_sse_lines() -> None:
    assert parse_sse_line('data: {"a": 1}') == {"a": 1}
    assert parse_sse_line("data: [DONE]") is None
    assert parse_sse_line(": keep-alive") is None


def test_three_scenarios_against_a_real_server(api_url: str, tmp_path: Path) -> None:
    argv = cli(
        "bench", "serve", api_url, "--model", "tiny-chat",
        "--count", "4", "--rate", "8", "--max-tokens", "6", "--max-seconds", "30",
        "--json", "--results", str(tmp_path / "results.jsonl"),
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = {r["scenario"]: BenchRecord.model_validate(r) for r in json.loads(proc.stdout)}
    assert set(records) == {"single-stream", "server@8qps", "offline"}
    for r in records.values():
        assert r.error is None and r.engine == "agent-api" and r.meta.generation_tokens == 6
        assert r.metrics["failed_requests"].median == 0
        latency, ttft = r.metrics["latency_ms"], r.metrics["ttft_ms"]
        assert len(latency.samples) == 4 and r.meta.repetitions == 4
        assert all(t <= lat for t, lat in zip(ttft.samples, latency.samples, strict=True))
        assert len(r.metrics["tpot_ms"].samples) == 4  # every request made 6 tokens (min_tokens)
        assert r.metrics["throughput_tok_s"].median > 0 and r.meta.prompt_tokens > 0
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3


def test_bounded_in_time(api_url: str) -> None:
    argv = cli(
        "bench", "serve", api_url, "-m", "tiny-chat", "-s", "single-stream",
        "--count", "1000", "--max-seconds", "1", "--max-tokens", "4", "--json", "--no-save",
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = json.loads(proc.stdout)
    assert 1 <= record["meta"]["repetitions"] < 1000


def test_wrong_model_fails_clearly(api_url: str) -> None:
    argv = cli(
        "bench", "serve", api_url, "-m", "no-such-model", "-s", "offline", "-n", "2", "--json", "--no-save"
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    (record,) = json.loads(proc.stdout)
    assert "no request succeeded" in record["error"] and "HTTP 404" in record["error"]
