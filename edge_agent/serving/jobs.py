"""One generation on a worker thread, its text handed to the event loop as it comes.

The token loop runs off the event loop, so the server keeps answering (health, metrics, 429s) while
models compute. The worker coalesces wake-ups: when the loop is behind, it finds several pieces at
once and sends them as one chunk. The lease (and, through `on_done`, the queue slot) is released
only when the worker has really stopped, so a cancelled request never overlaps the next one.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor

from edge_agent.runtime import Generation
from edge_agent.serving.model_host import Lease


class Job:
    def __init__(self, gen: Generation, lease: Lease, on_done: Callable[[Job], None]) -> None:
        self.gen = gen
        self.lease = lease
        self.error: BaseException | None = None
        self.finished = False
        self.duration_s = 0.0
        self._on_done = on_done
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._items: deque[str] = deque()
        self._wake_pending = False

    def start(self, executor: Executor) -> Job:
        executor.submit(self._work)
        return self

    def cancel(self) -> None:
        self.gen.cancel()

    # --- worker thread ----------------------------------------------------------------------

    def _work(self) -> None:
        started = time.perf_counter()
        try:
            for piece in self.gen:
                self._items.append(piece)
                if not self._wake_pending:
                    self._wake_pending = True
                    self._loop.call_soon_threadsafe(self._wake)
        except BaseException as exc:  # handed to the consumer on the loop, which maps it to a response
            self.error = exc
        finally:
            self.duration_s = time.perf_counter() - started
            self.lease.release()
            self._loop.call_soon_threadsafe(self._finish)

    # --- event loop -------------------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = False
        self._ready.set()

    def _finish(self) -> None:
        self.finished = True
        self._ready.set()
        self._on_done(self)

    async def pieces(self) -> AsyncIterator[str]:
        """Text as it is generated, several tokens joined when they arrived together."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            finished = self.finished  # read before draining: items always land before the finish
            if self._items:
                batch = []
                while self._items:
                    batch.append(self._items.popleft())
                yield "".join(batch)
            if finished and not self._items:
                break
        if self.error is not None:
            raise self.error

    async def text(self) -> str:
        return "".join([piece async for piece in self.pieces()])
