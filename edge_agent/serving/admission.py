"""A bounded queue in front of the model: `max_concurrent` generations run, `max_queue` wait, more get 429.

Used from the event loop only (release is scheduled onto it by the worker threads), so plain counters
suffice. Retry-After is an estimate from recent request durations, never less than a second.
"""

from __future__ import annotations

import asyncio
import math

from edge_agent.errors import OverloadedError


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.running = 0
        self.waiting = 0
        self.rejected = 0
        self._slots = asyncio.Semaphore(max_concurrent)
        self._mean_s = 1.0  # moving average of a request's duration

    def check_room(self) -> None:
        """429 now when there is no place: before the prompt is tokenized, not after."""
        if self.running + self.waiting >= self.max_concurrent + self.max_queue:
            self.rejected += 1
            raise OverloadedError(
                f"server busy: {self.running} running, {self.waiting} queued (limit {self.max_queue})",
                retry_after_s=self.retry_after_s(),
            )

    async def acquire(self) -> None:
        """Wait for a slot. Cancelling the wait (the client hung up) gives the place up."""
        self.check_room()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1

    def release(self, duration_s: float | None = None) -> None:
        self.running -= 1
        self._slots.release()
        if duration_s is not None:
            self._mean_s = 0.8 * self._mean_s + 0.2 * duration_s

    def retry_after_s(self) -> int:
        ahead = self.running + self.waiting
        return max(1, math.ceil(self._mean_s * ahead / self.max_concurrent))
