"""Fixtures of the agent's tests: a registry tap (throttle, faults, request log) over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Served:
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


@dataclass
class RegistryTap:
    """ASGI wrapper over the static registry app: logs every request, can throttle and inject faults.

    `rate` caps body bytes per second (so a test can kill an agent mid-download); `cut_after[path]`
    drops the connection once that many body bytes of the path went out (once); `status[path]`
    answers that HTTP status instead of the file; `append[path]` sends extra bytes after the file.
    """

    app: object
    rate: float | None = None
    requests: list[Served] = field(default_factory=list)
    cut_after: dict[str, int] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    append: dict[str, bytes] = field(default_factory=dict)

    def served(self, suffix: str) -> list[Served]:
        return [r for r in self.requests if r.path.endswith(suffix)]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        entry = Served(scope["path"], headers.get(b"range", b"").decode() or None)
        self.requests.append(entry)
        path = scope["path"]
        if path in self.status:
            entry.status = self.status[path]
            await send({"type": "http.response.start", "status": entry.status, "headers": []})
            await send({"type": "http.response.body", "body": b"gone"})
            return

        async def tapped(message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                if path in self.append:
                    message = {
                        **message,
                        "headers": [(k, v) for k, v in message["headers"] if k != b"content-length"],
                    }
                await send(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body, more = message.get("body", b""), message.get("more_body", False)
            if not more and path in self.append:
                body += self.append[path]
            step = 16 * 1024
            for i in range(0, len(body), step):
                piece = body[i : i + step]
                limit = self.cut_after.get(path)
                if limit is not None and entry.sent + len(piece) > limit:
                    del self.cut_after[path]
                    raise ConnectionAbortedError(f"test registry: cutting {path} at {entry.sent}")
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                entry.sent += len(piece)
                if self.rate:
                    await asyncio.sleep(len(piece) / self.rate)
            if not more:
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app(scope, receive, tapped)


@pytest.fixture
def registry_tap(registry_dir: Path) -> Iterator[tuple[str, RegistryTap]]:
    """A real HTTP registry over `registry_dir` with a tap in front: yields (url, tap)."""
    from build_side.registry_server import registry_app
    from edge_agent.http_server import BackgroundServer

    tap = RegistryTap(registry_app(registry_dir))
    with BackgroundServer(tap) as server:
        yield server.url, tap
