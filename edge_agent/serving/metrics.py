"""Prometheus metrics of the API, in a registry of its own (one per app, so tests never collide).

Requests, TTFT and decode tok/s histograms, tokens, queue depth and running generations, the
active model and provider (read from the model host at scrape time), and what the process holds:
`process_resident_memory_bytes` (now), its peak, and the resident memory once the active model had
loaded, so the fleet sees what each device pays to serve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge_agent.memory import MB, peak_rss_mb

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TOKS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class ApiMetrics:
    def __init__(self, status: Callable[[], dict[str, Any]], queue: Callable[[], tuple[int, int]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "edge_agent_requests",
            "API requests by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "edge_agent_ttft_seconds", "time to the first generated token", buckets=TTFT_BUCKETS, registry=r
        )
        self.decode = Histogram(
            "edge_agent_decode_tokens_per_second",
            "generated tokens after the first / time after the first token",
            buckets=TOKS_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("edge_agent_prompt_tokens", "prompt tokens processed", registry=r)
        self.completion_tokens = Counter("edge_agent_completion_tokens", "tokens generated", registry=r)
        self.cancelled = Counter(
            "edge_agent_cancelled_generations", "generations stopped because the client went away", registry=r
        )
        queued = Gauge("edge_agent_queue_depth", "requests waiting for a generation slot", registry=r)
        queued.set_function(lambda: queue()[1])
        running = Gauge("edge_agent_running_generations", "generations running now", registry=r)
        running.set_function(lambda: queue()[0])
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds, ...
        peak = Gauge(
            "edge_agent_peak_resident_memory_bytes", "the process's peak resident memory", registry=r
        )
        peak.set_function(lambda: peak_rss_mb() * MB)
        r.register(_ModelCollector(status))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _ModelCollector(Collector):
    """The active model as an info-style gauge (value 1), plus swap and release counts."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterator[Any]:
        status = self._status()
        info = GaugeMetricFamily(
            "edge_agent_active_model",
            "the model being served (value 1), with its version, variant and execution provider",
            labels=["model", "version", "variant", "provider"],
        )
        active = status.get("active")
        if active:
            info.add_metric([active["model"], active["version"], active["variant"], active["provider"]], 1)
        yield info
        fallbacks = GaugeMetricFamily(
            "edge_agent_provider_fallbacks", "providers the active model fell back past when it loaded"
        )
        fallbacks.add_metric([], len(active["fallbacks"]) if active else 0)
        yield fallbacks
        loaded = GaugeMetricFamily(
            "edge_agent_active_model_resident_memory_bytes",
            "the process's resident memory once the active model had loaded and answered the probe",
        )
        loaded.add_metric([], active["rss_mb"] * MB if active else 0)
        yield loaded
        swaps = CounterMetricFamily("edge_agent_model_swaps", "models swapped in while serving")
        swaps.add_metric([], status.get("swaps", 0))
        yield swaps
