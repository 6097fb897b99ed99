"""The official `openai` client against the agent's API on a real socket, serving the tiny bundle."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.serving.conftest import BUNDLE_NAME, Running, serving

HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def api(module_bundle: Path) -> Iterator[Running]:
    with serving(module_bundle, max_concurrent=2, max_queue=4) as running:
        yield running


def test_models_lists_name_version_and_adapters(api: Running) -> None:
    ids = {m.id for m in api.client().models.list()}
    assert ids == {BUNDLE_NAME, f"{BUNDLE_NAME}@1.0.0", f"{BUNDLE_NAME}:alpha", f"{BUNDLE_NAME}:beta"}


def test_chat_completion(api: Running) -> None:
    r = api.client().chat.completions.create(model=BUNDLE_NAME, messages=HELLO, max_tokens=7, temperature=0)
    assert r.object == "chat.completion"
    assert r.model == f"{BUNDLE_NAME}@1.0.0"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 7
    assert r.usage.prompt_tokens > 5  # the chat template wrapped the message
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streaming_chat_matches_the_non_streaming_answer(api: Running) -> None:
    client = api.client()
    whole = client.chat.completions.create(model=BUNDLE_NAME, messages=HELLO, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=BUNDLE_NAME,
            messages=HELLO,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completions_plain_and_streaming(api: Running) -> None:
    client = api.client()
    r = client.completions.create(model=BUNDLE_NAME, prompt="Once upon a time", max_tokens=6, temperature=0)
    assert r.object == "text_completion" and r.usage.completion_tokens == 6
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=BUNDLE_NAME, prompt="Once upon a time", max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == r.choices[0].text
    echoed = client.completions.create(
        model=BUNDLE_NAME, prompt="Once", max_tokens=2, temperature=0, echo=True
    )
    assert echoed.choices[0].text.startswith("Once")


def test_adapter_is_picked_per_request(api: Running) -> None:
    client = api.client()

    def answer(model: str) -> str:
        r = client.chat.completions.create(model=model, messages=HELLO, max_tokens=16, temperature=0)
        return r.choices[0].message.content

    base, alpha, beta = answer(BUNDLE_NAME), answer(f"{BUNDLE_NAME}:alpha"), answer(f"{BUNDLE_NAME}:beta")
    assert len({base, alpha, beta}) == 3, (base, alpha, beta)
    # per request, not sticky: the base model answers as before, the adapter answers as before
    assert answer(BUNDLE_NAME) == base
    assert answer(f"{BUNDLE_NAME}@1.0.0:alpha") == alpha
    r = client.chat.completions.create(model=f"{BUNDLE_NAME}:beta", messages=HELLO, max_tokens=2)
    assert r.model == f"{BUNDLE_NAME}@1.0.0:beta"


def test_sampled_generation_follows_the_seed(api: Running) -> None:
    client = api.client()

    def sample(seed: int) -> str:
        r = client.completions.create(
            model=BUNDLE_NAME, prompt="The", max_tokens=12, temperature=1.0, top_p=0.95, seed=seed
        )
        return r.choices[0].text

    assert sample(3) == sample(3)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_stop_sequence_ends_the_answer_before_it(api: Running) -> None:
    client = api.client()
    full = client.completions.create(model=BUNDLE_NAME, prompt="Hello", max_tokens=12, temperature=0)
    text = full.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), f"need a visible stop string in {text!r}"
    cut = client.completions.create(
        model=BUNDLE_NAME, prompt="Hello", max_tokens=12, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [("no-such-model", 404, "model_not_found"), (f"{BUNDLE_NAME}@9.9.9", 404, "model_not_found")],
)
def test_unknown_model_is_a_404(api: Running, model: str, status: int, code: str) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        api.client().chat.completions.create(model=model, messages=HELLO)
    assert err.value.status_code == status
    assert err.value.body["code"] == code and err.value.body["param"] == "model"


def test_unknown_adapter_is_a_404(api: Running) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        api.client().completions.create(model=f"{BUNDLE_NAME}:gamma", prompt="x")
    assert err.value.body["code"] == "adapter_not_found"


def test_requests_the_model_cannot_serve_are_400s(api: Running) -> None:
    client = api.client()
    too_long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=BUNDLE_NAME, messages=too_long, max_tokens=5)
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=BUNDLE_NAME, prompt="x", max_tokens=100_000)
    assert err.value.body["code"] == "context_length_exceeded"
    for bad in (
        {"temperature": 7},
        {"n": 3},
        {"top_p": 0},
        {"max_tokens": 0},
        {"stop": ["a", "b", "c", "d", "e"]},
    ):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=BUNDLE_NAME, messages=HELLO, **bad)
        assert err.value.body["type"] == "invalid_request_error", bad
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=BUNDLE_NAME, messages=HELLO, tools=[{"type": "function", "function": {"name": "f"}}]
        )
    assert err.value.body["param"] == "tools"
    r = httpx.post(
        f"{api.url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_health_status_and_metrics(api: Running) -> None:
    assert httpx.get(f"{api.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{api.url}/readyz").json() == {"ready": True, "model": f"{BUNDLE_NAME}@1.0.0"}
    api.client().chat.completions.create(model=BUNDLE_NAME, messages=HELLO, max_tokens=4)
    status = httpx.get(f"{api.url}/status").json()
    assert status["active"]["provider"] == "CPUExecutionProvider"
    assert status["active"]["variant"] == "cpu-fp32"
    assert status["active"]["adapters"] == ["alpha", "beta"]
    assert status["api"]["max_concurrent"] == 2
    metrics = httpx.get(f"{api.url}/metrics").text
    assert 'edge_agent_requests_total{endpoint="/v1/chat/completions",status="200"}' in metrics
    assert "edge_agent_ttft_seconds_count" in metrics
    assert "edge_agent_decode_tokens_per_second_bucket" in metrics
    assert "edge_agent_queue_depth 0.0" in metrics
    assert (
        'edge_agent_active_model{model="tiny-chat",provider="CPUExecutionProvider",variant="cpu-fp32",version="1.0.0"} 1.0'
        in metrics
    )


def test_api_key_when_configured(module_bundle: Path) -> None:
    with serving(module_bundle, api_key="s3cret") as running:
        with pytest.raises(openai.AuthenticationError) as err:
            running.client(api_key="wrong").models.list()
        assert err.value.body["code"] == "invalid_api_key"
        assert BUNDLE_NAME in {m.id for m in running.client(api_key="s3cret").models.list()}
        assert httpx.get(f"{running.url}/status").status_code == 401
        assert httpx.get(f"{running.url}/healthz").status_code == 200


def _metric(api: Running, name: str) -> float:
    metrics = httpx.get(f"{api.url}/metrics").text
    return float(re.search(rf"^{name} (\S+)$", metrics, re.M)[1])


def _generated(api: Running) -> float:
    return _metric(api, "edge_agent_completion_tokens_total")


def test_client_disconnect_cancels_the_generation(api: Running) -> None:
    before = _generated(api)
    body = {"model": BUNDLE_NAME, "prompt": "a", "max_tokens": 500, "min_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{api.url}/v1/completions", json=body) as r:
        next(r.iter_lines())
    # the worker notices within a token or so; then the slot is free and the lease released
    for _ in range(200):
        status = httpx.get(f"{api.url}/status").json()
        if status["api"]["running"] == 0 and status["active"]["in_flight"] == 0:
            break
        httpx.get(f"{api.url}/healthz")
    assert status["api"]["running"] == 0 and status["active"]["in_flight"] == 0
    delta = _generated(api) - before
    assert delta < 500  # it stopped early, not after all 500 tokens


def test_client_hanging_up_on_a_plain_request_cancels_it(api: Running) -> None:
    before, cancelled = _generated(api), _metric(api, "edge_agent_cancelled_generations_total")
    body = json.dumps({"model": BUNDLE_NAME, "prompt": "a", "max_tokens": 500, "min_tokens": 500}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((api.server.host, api.server.port)) as sock:
        sock.sendall(head.encode() + body)
        for _ in range(400):  # hang up once the generation runs
            if httpx.get(f"{api.url}/status").json()["api"]["running"] == 1:
                break
        else:
            pytest.fail("the generation never showed as running")
    for _ in range(200):
        status = httpx.get(f"{api.url}/status").json()
        if status["api"]["running"] == 0 and status["active"]["in_flight"] == 0:
            break
        time.sleep(0.05)
    assert status["api"]["running"] == 0
    assert _metric(api, "edge_agent_cancelled_generations_total") == cancelled + 1
    assert _generated(api) - before < 500
