"""Fixtures for the distillation tests: prompt files, and a real OpenAI-compatible HTTP test peer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request

CANNED = {
    "loop": ("la la la la la la la la la la la la la la", "length"),
    "long": ("word " * 50, "length"),
    "empty": ("", "stop"),
}


def canned_answer(prompt: str) -> tuple[str, str]:
    """The peer's answer: a canned failure when the prompt names one, else a fresh echo."""
    for key, answer in CANNED.items():
        if key in prompt:
            return answer
    return f"Answer to: {prompt}", "stop"


def openai_peer_app():
    """A tiny OpenAI-compatible server: /v1/chat/completions and /v1/completions with canned answers."""
    app = FastAPI()
    app.state.requests = []

    def body(text: str, finish: str, kind: str, model: str) -> dict:
        choice = {"index": 0, "finish_reason": finish}
        choice.update(
            {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"text": text}
        )
        return {
            "id": "cmpl-test",
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": 0,
            "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(text.split()), "total_tokens": 5},
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        req = await request.json()
        app.state.requests.append(req)
        content = req["messages"][-1]["content"]
        tries = app.state.tries = getattr(app.state, "tries", {})
        tries[content] = tries.get(content, 0) + 1
        if "malformed" in content:  # an HTTP 200 that is not an answer
            return {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": req["model"],
                "choices": [],
            }
        if "slow" in content and tries[content] < 3:  # too slow twice, then in time
            import asyncio

            await asyncio.sleep(1.5)
        text, finish = canned_answer(content)
        return body(text, finish, "chat", req["model"])

    @app.post("/v1/completions")
    async def completions(request: Request) -> dict:
        req = await request.json()
        app.state.requests.append(req)
        text, finish = canned_answer(req["prompt"])
        return body(text, finish, "text", req["model"])

    return app


@pytest.fixture
def openai_peer() -> Iterator[tuple[str, object]]:
    from edge_agent.http_server import BackgroundServer

    app = openai_peer_app()
    with BackgroundServer(app) as server:
        yield server.url, app


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    lines = [
        {"id": "a", "prompt": "What is 2 + 2?"},
        {"id": "b", "prompt": "Name a colour."},
        {"id": "c", "prompt": "Please loop forever."},
        {"id": "d", "prompt": "Say something long."},
        {"id": "e", "prompt": "Say nothing, empty."},
        {"id": "f", "prompt": "What is 2 + 2?", "note": "same question, same answer: a duplicate"},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
