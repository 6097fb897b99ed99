"""Swapping versions under load fails no request; a burst past the queue bound gets 429s, not a crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import openai

from edge_agent.bundle_check import parse_manifest
from tests.serving.conftest import BUNDLE_NAME, VARIANT, MakeBundle, serving

HELLO = [{"role": "user", "content": "Say hello."}]


def test_swap_during_a_stream_of_requests_fails_none(serving_bundle: MakeBundle) -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0"]
    bundles = [serving_bundle(v) for v in versions]
    with serving(bundles[0], max_concurrent=2, max_queue=16) as running:
        stop = threading.Event()
        failures: list[BaseException] = []
        seen: list[list[str]] = [[] for _ in range(4)]

        def client_loop(i: int) -> None:
            client = running.client()
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 2:
                        chunks = list(
                            client.chat.completions.create(
                                model=BUNDLE_NAME,
                                messages=HELLO,
                                max_tokens=24,
                                stream=True,
                                extra_body={"min_tokens": 24},
                            )
                        )
                        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                        assert chunks[-1].choices[0].finish_reason == "length", text
                        seen[i].append(chunks[-1].model)
                    else:
                        r = client.completions.create(
                            model=BUNDLE_NAME, prompt="Hi", max_tokens=16, extra_body={"min_tokens": 16}
                        )
                        assert r.usage.completion_tokens == 16
                        seen[i].append(r.model)
                except BaseException as exc:  # every failure counts, whatever it is
                    failures.append(exc)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        host = running.host

        def wait_for(pred, what: str) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 90
            while not pred():
                assert time.monotonic() < deadline and not failures, f"waited for {what}: {failures[:3]}"
                time.sleep(0.05)

        def served_by(version: str) -> int:
            return sum(s.count(f"{BUNDLE_NAME}@{version}") for s in seen)

        for active, bundle in zip(versions, bundles[1:], strict=False):
            # a request that started before the last swap may finish on the version before it: wait
            # until the active version itself has answered, so that every version serves some
            wait_for(lambda v=active: served_by(v) >= 1, f"a request served by {active}")  # type: ignore[misc]
            manifest = parse_manifest((bundle / "manifest.json").read_bytes())
            candidate = host.load_candidate(bundle, manifest, VARIANT, ["CPUExecutionProvider"], timeout_s=60)
            host.promote(candidate)
        wait_for(lambda: served_by(versions[-1]) >= 2, "requests on the last version")
        stop.set()
        for t in threads:
            t.join(timeout=60)

        assert failures == []
        served = [m for per_thread in seen for m in per_thread]
        assert {f"{BUNDLE_NAME}@{v}" for v in versions} <= set(served), served
        for per_thread in seen:  # each client only ever moves forward in versions
            assert per_thread == sorted(per_thread, key=lambda m: versions.index(m.split("@")[1]))
        status = httpx.get(f"{running.url}/status").json()
        assert status["active"]["version"] == "1.2.0" and status["swaps"] == 2
        assert status["retired"] == [] and status["released"] == 2  # old models freed once idle
        assert status["active"]["in_flight"] == 0


def test_burst_past_the_queue_bound_gets_429_and_the_agent_stays_up(module_bundle: Path) -> None:
    burst = 12
    with serving(module_bundle, max_concurrent=1, max_queue=2) as running:
        barrier = threading.Barrier(burst)
        results: list[object] = []

        def one() -> None:
            client = running.client()
            barrier.wait()
            try:
                r = client.completions.create(
                    model=BUNDLE_NAME, prompt="Hi", max_tokens=300, extra_body={"min_tokens": 300}
                )
                results.append(r.usage.completion_tokens)
            except openai.RateLimitError as exc:
                results.append(exc)

        threads = [threading.Thread(target=one) for _ in range(burst)]
        for t in threads:
            t.start()
        # while the burst is being served and refused, the agent keeps answering other requests
        while len(results) < burst - 3 and any(t.is_alive() for t in threads):
            time.sleep(0.02)
        assert httpx.get(f"{running.url}/healthz", timeout=10).status_code == 200
        during = httpx.get(f"{running.url}/status", timeout=10).json()["api"]
        assert during["running"] == 1, during  # answered while a generation was running
        for t in threads:
            t.join(timeout=120)

        refused = [r for r in results if isinstance(r, openai.RateLimitError)]
        served = [r for r in results if r == 300]
        assert len(refused) + len(served) == burst
        assert len(served) >= 3 and len(refused) >= 1  # 1 running + 2 queued fit; the rest were refused
        for exc in refused:
            assert exc.status_code == 429 and exc.body["code"] == "rate_limit_exceeded"
            assert int(exc.response.headers["retry-after"]) >= 1
        status = httpx.get(f"{running.url}/status").json()["api"]
        assert status["rejected"] == len(refused) and status["running"] == 0 and status["queued"] == 0
        metrics = httpx.get(f"{running.url}/metrics").text
        assert (
            f'edge_agent_requests_total{{endpoint="/v1/completions",status="429"}} {len(refused)}.0'
            in metrics
        )
        after = running.client().completions.create(model=BUNDLE_NAME, prompt="Hi", max_tokens=3)
        assert after.usage.completion_tokens == 3
