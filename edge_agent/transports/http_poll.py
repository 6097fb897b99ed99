"""HTTP polling of `channels/<channel>.json` for devices without a broker.

Conditional GET with the last ETag, so an unchanged channel costs a 304 and no body. Failures are
logged and retried at the next poll; polls are spread with 10% jitter so a fleet does not arrive at
once. The same document, delivered again, is ignored by the reconciler.
"""

from __future__ import annotations

import logging
import random
import threading
from urllib.parse import urljoin

from edge_agent.config import HttpPollSettings
from edge_agent.transports.base import Deliver

log = logging.getLogger(__name__)

MAX_DOCUMENT = 256 * 1024


class HttpPoller:
    def __init__(self, registry_url: str, settings: HttpPollSettings, timeout_s: float = 30.0) -> None:
        self.url = urljoin(registry_url, f"channels/{settings.channel}.json")
        self.interval_s = settings.interval_s
        import httpx  # here, not at module level: an agent on MQTT alone never imports httpx

        self.client = httpx.Client(timeout=timeout_s, follow_redirects=True)
        self.etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, deliver: Deliver) -> None:
        self._thread = threading.Thread(target=self._loop, args=(deliver,), name="http-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.client.close()

    def poll_once(self) -> bytes | None:
        """One conditional GET: the document when it changed, None when not (or on error)."""
        import httpx

        headers = {"If-None-Match": self.etag} if self.etag else {}
        try:
            resp = self.client.get(self.url, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("polling %s failed: %s", self.url, exc)
            return None
        if resp.status_code == 304:
            return None
        if resp.status_code == 404:
            log.debug("no desired state at %s yet", self.url)
            return None
        if resp.status_code != 200:
            log.warning("polling %s: HTTP %d", self.url, resp.status_code)
            return None
        if len(resp.content) > MAX_DOCUMENT:
            log.warning("polling %s: document larger than %d bytes, ignored", self.url, MAX_DOCUMENT)
            return None
        self.etag = resp.headers.get("etag")
        return resp.content

    def _loop(self, deliver: Deliver) -> None:
        while not self._stop.is_set():
            body = self.poll_once()
            if body:
                deliver(body, self.url)
            self._stop.wait(self.interval_s * random.uniform(0.9, 1.1))


__all__ = ["HttpPoller"]
