"""Server-sent events: the live thread offers each update; every open page has its own bounded queue.

A page that cannot keep up (its queue is full) is told to reload rather than being fed a backlog: a
reload shows the current state in one request, which is what an operator wants from a stale tab.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

RESYNC = "event: resync\ndata: {}\n\n"
PING = ": ping\n\n"
CLOSE = ""  # not a frame: tells a page's stream to end


def sse(event: str, data: str, event_id: str | None = None) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n{lines}\n"


class Broadcast:
    def __init__(self, per_client: int = 64) -> None:
        self.per_client = per_client
        self._clients: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._clients)

    def publish(self, message: str) -> None:
        """From any thread: queue `message` (an encoded SSE frame) for every open page."""
        with self._lock:
            clients = list(self._clients)
        for loop, queue in clients:
            with suppress(RuntimeError):  # the page's loop is gone (server shutting down)
                loop.call_soon_threadsafe(_offer, queue, message)

    def close(self) -> None:
        """End every open stream (the server is stopping and should not wait for browsers to leave)."""
        self.publish(CLOSE)

    async def frames(
        self, catch_up: Callable[[], str | None] | None = None, ping_s: float = 15.0
    ) -> AsyncIterator[str]:
        """What one page receives until it goes away: `catch_up()` (taken once the page is listening,
        so nothing falls between the two), then every frame published."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str] = asyncio.Queue(self.per_client)
        client = (loop, queue)
        with self._lock:
            self._clients.add(client)
        try:
            yield "retry: 2000\n\n"
            first = await asyncio.to_thread(catch_up) if catch_up else None
            if first:
                yield first
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), ping_s)
                except TimeoutError:
                    frame = PING
                if frame == CLOSE:
                    return
                yield frame
        finally:
            with self._lock:
                self._clients.discard(client)


def _offer(queue: asyncio.Queue[str], message: str) -> None:
    if queue.full() or message == CLOSE:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(message if message == CLOSE else RESYNC)
    else:
        queue.put_nowait(message)


__all__ = ["Broadcast", "sse"]
