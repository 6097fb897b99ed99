"""An HTTP client made on first use, so the agent at rest does not hold httpx.

httpx imports httpcore and, where they are installed, its command line's click, rich and pygments:
about 7 MB of a process that needs HTTP only while a deployment downloads or a poller polls.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class OnDemandClient:
    """The part of `httpx.Client` the agent uses (`get`, `stream`, `close`), made on the first request."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _made(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(**self._options)
            return self._client

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._made().get(url, **kwargs)

    def stream(self, method: str, url: str, **kwargs: Any) -> AbstractContextManager[httpx.Response]:
        return self._made().stream(method, url, **kwargs)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


__all__ = ["OnDemandClient"]
