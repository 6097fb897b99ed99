"""Load scenarios against a running OpenAI-compatible API (the agent's), as MLPerf names them.

- single-stream: one request at a time; latency p50/p90 is what a single user feels.
- server: requests arrive as a Poisson process at a given rate, whatever the server's state;
  TTFT and TPOT p99 say whether it keeps up.
- offline: every request sent at once; throughput (generated tokens / wall time) is the figure.

Each is bounded by a request count and a time limit: no new request starts after `max_seconds`, and
each request has its own timeout. Requests stream (SSE) so TTFT is measured at the first content
chunk; `min_tokens` (the agent's extension) fixes the length so every request does the same work.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from dataclasses import dataclass
from typing import Literal

import httpx

from edge_agent.bench_metrics import summarize
from edge_agent.contracts.bench_record import BenchMeta, BenchRecord, Summary

ScenarioName = Literal["single-stream", "server", "offline"]


@dataclass
class LoadOptions:
    url: str
    model: str
    max_tokens: int = 32
    count: int = 16
    max_seconds: float = 60.0
    rate: float = 1.0  # server scenario: mean arrivals per second
    timeout_s: float = 120.0  # per request
    api_key: str | None = None
    seed: int = 0


@dataclass
class RequestResult:
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    status: int | None = None
    error: str | None = None

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.completion_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.completion_tokens - 1)


def parse_sse_line(line: str) -> dict | None:
    """One `data: {...}` line of an SSE stream -> the chunk; None for anything else or `[DONE]`."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == "[DONE]":
        return None
    return json.loads(payload)


async def one_request(client: httpx.AsyncClient, opts: LoadOptions, prompt: str) -> RequestResult:
    body = {
        "model": opts.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": opts.max_tokens,
        "min_tokens": opts.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    start = time.perf_counter()
    result = RequestResult(ok=False, latency_s=0.0)
    chunks = 0
    try:
        async with client.stream(
            "POST",
            f"{opts.url.rstrip('/')}/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=opts.timeout_s,
        ) as resp:
            result.status = resp.status_code
            if resp.status_code != 200:
                await resp.aread()
                result.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                result.latency_s = time.perf_counter() - start
                return result
            async for line in resp.aiter_lines():
                chunk = parse_sse_line(line)
                if chunk is None:
                    continue
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    break
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    chunks += 1
                    if result.ttft_s is None:
                        result.ttft_s = time.perf_counter() - start
                if chunk.get("usage"):
                    result.completion_tokens = int(chunk["usage"].get("completion_tokens", 0))
                    result.prompt_tokens = int(chunk["usage"].get("prompt_tokens", 0))
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.latency_s = time.perf_counter() - start
    result.completion_tokens = result.completion_tokens or chunks
    result.ok = result.error is None and result.ttft_s is not None
    return result


async def _run(
    scenario: ScenarioName, opts: LoadOptions, prompts: list[str]
) -> tuple[list[RequestResult], float]:
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=max(opts.count, 1))
    async with httpx.AsyncClient(limits=limits) as client:
        start = time.perf_counter()
        deadline = start + opts.max_seconds
        if scenario == "single-stream":
            for i in range(opts.count):
                if time.perf_counter() >= deadline:
                    break
                results.append(await one_request(client, opts, prompts[i % len(prompts)]))
        elif scenario == "offline":
            tasks = [one_request(client, opts, prompts[i % len(prompts)]) for i in range(opts.count)]
            results = list(await asyncio.gather(*tasks))
        else:  # server: Poisson arrivals, launched on schedule whether or not earlier ones finished
            rng = random.Random(opts.seed)
            tasks = []
            at = start
            for i in range(opts.count):
                at += rng.expovariate(opts.rate)
                if at >= deadline:
                    break
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                tasks.append(asyncio.create_task(one_request(client, opts, prompts[i % len(prompts)])))
            results = list(await asyncio.gather(*tasks))
        wall = time.perf_counter() - start
    return results, wall


def run_load(scenario: ScenarioName, opts: LoadOptions, prompts: list[str]) -> BenchRecord:
    """Run one scenario and summarise it as a BenchRecord (engine `agent-api`)."""
    results, wall = asyncio.run(_run(scenario, opts, prompts))
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    metrics: dict[str, Summary] = {}
    if ok:
        metrics["latency_ms"] = summarize([r.latency_s * 1000 for r in ok], "ms")
        metrics["ttft_ms"] = summarize([r.ttft_s * 1000 for r in ok if r.ttft_s is not None], "ms")
        tpots = [r.tpot_s * 1000 for r in ok if r.tpot_s is not None]
        if tpots:
            metrics["tpot_ms"] = summarize(tpots, "ms")
        metrics["throughput_tok_s"] = summarize([sum(r.completion_tokens for r in ok) / wall], "tok/s")
        metrics["completed_qps"] = summarize([len(ok) / wall], "req/s")
    metrics["failed_requests"] = summarize([len(failed)], "count")
    name = f"server@{opts.rate:g}qps" if scenario == "server" else scenario
    prompt_tokens = [r.prompt_tokens for r in ok if r.prompt_tokens]
    error = None
    if not ok:
        error = f"no request succeeded ({len(results)} sent): {failed[0].error if failed else 'none sent'}"
    return BenchRecord(
        model=opts.model,
        variant=opts.model,
        engine="agent-api",
        provider=opts.url,
        scenario=name,
        meta=BenchMeta(
            prompt_tokens=round(sum(prompt_tokens) / len(prompt_tokens)) if prompt_tokens else 0,
            generation_tokens=opts.max_tokens,
            repetitions=len(results),
            host=socket.gethostname(),
        ),
        metrics=metrics,
        error=error,
    )


__all__ = ["LoadOptions", "RequestResult", "parse_sse_line", "run_load"]
