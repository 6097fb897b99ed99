"""Fetch bundle files over HTTP: Range resume from a `.part` file, bounded retries, bounded bytes.

Rules (DESIGN.md section 6): retry transient failures (connection errors, 5xx, 408/429, a body cut
short) with exponential backoff and jitter, a bounded number of times; stop at once on any other
4xx; never write more bytes than the manifest says a file has. Checksums are the VERIFYING step's
job: this module only guarantees the size.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urljoin

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from edge_agent.deploy.machine import Interrupted
from edge_agent.errors import DiskFullError, DownloadError, SizeMismatchError
from edge_agent.http_client import OnDemandClient

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
TRANSIENT_4XX = {408, 425, 429}


@dataclass
class FileJob:
    url: str
    dest: Path
    size: int
    path: str  # as named in the manifest, for messages


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def bytes_on_disk(job: FileJob) -> int:
    """What a resumed download will not fetch again: a finished file, or a `.part` within its size."""
    if job.dest.is_file() and job.dest.stat().st_size == job.size:
        return job.size
    part = part_path(job.dest)
    return min(part.stat().st_size, job.size) if part.is_file() else 0


def file_url(manifest_url: str, rel_path: str) -> str:
    return urljoin(manifest_url, quote(rel_path))


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DownloadError) and exc.transient


def _check_status(resp: httpx.Response, url: str) -> None:
    code = resp.status_code
    if code >= 500 or code in TRANSIENT_4XX:
        raise DownloadError(f"{url}: HTTP {code} from the registry", transient=True)
    if code >= 400:
        raise DownloadError(f"{url}: HTTP {code} from the registry")


def _no_space(exc: OSError, where: Path) -> DiskFullError | None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{where}: no space left while writing ({exc.strerror})")
    return None


class Downloader:
    def __init__(
        self,
        client: httpx.Client | OnDemandClient,
        retries: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.retries = retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.stop = stop or threading.Event()

    def _retrying(self) -> Retrying:
        def sleep(seconds: float) -> None:
            if self.stop.wait(seconds):
                raise Interrupted("stopping during a download retry wait")

        def note(state) -> None:  # tenacity's RetryCallState
            log.warning("download retry %d: %s", state.attempt_number, state.outcome.exception())

        return Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(multiplier=self.backoff_initial_s, max=self.backoff_max_s),
            retry=retry_if_exception(_is_transient),
            before_sleep=note,
            sleep=sleep,
            reraise=True,
        )

    def fetch_bytes(self, url: str, limit: int) -> bytes:
        """A small document (manifest, signature), whole, at most `limit` bytes."""
        return self._retrying()(self._fetch_bytes_once, url, limit)

    def _fetch_bytes_once(self, url: str, limit: int) -> bytes:
        import httpx  # with the first download: the agent at rest holds no HTTP client

        try:
            with self.client.stream("GET", url) as resp:
                _check_status(resp, url)
                data = bytearray()
                for chunk in resp.iter_bytes(CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise DownloadError(f"{url}: larger than {limit} bytes; refusing it")
                return bytes(data)
        except httpx.TransportError as exc:
            raise DownloadError(f"{url}: {type(exc).__name__}: {exc}", transient=True) from exc

    def fetch_file(self, job: FileJob, on_bytes: Callable[[int], None] | None = None) -> None:
        """Download one file to `job.dest`, resuming a `.part` left by an earlier attempt or run."""
        if job.dest.is_file() and job.dest.stat().st_size == job.size:
            return
        job.dest.parent.mkdir(parents=True, exist_ok=True)
        self._retrying()(self._fetch_file_once, job, on_bytes or (lambda n: None))

    def _fetch_file_once(self, job: FileJob, on_bytes: Callable[[int], None]) -> None:
        part = part_path(job.dest)
        have = part.stat().st_size if part.is_file() else 0
        if have > job.size:
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        import httpx

        try:
            with self.client.stream("GET", job.url, headers=headers) as resp:
                if resp.status_code == 416:
                    # The server has no byte past ours: our part is complete or bogus. Start over if bogus.
                    if have != job.size:
                        part.unlink(missing_ok=True)
                        raise DownloadError(f"{job.url}: range {have}- not satisfiable", transient=True)
                else:
                    _check_status(resp, job.url)
                    if resp.status_code != 206:
                        have = 0  # the server ignored the range: take the whole body
                    elif have:
                        log.info("resuming %s at byte %d of %d", job.path, have, job.size)
                    have = self._write_body(resp, part, have, job, on_bytes)
        except httpx.TransportError as exc:
            raise DownloadError(f"{job.url}: {type(exc).__name__}: {exc}", transient=True) from exc
        if have < job.size:
            raise DownloadError(f"{job.url}: connection ended at byte {have} of {job.size}", transient=True)
        os.replace(part, job.dest)

    def _write_body(
        self, resp: httpx.Response, part: Path, have: int, job: FileJob, on_bytes: Callable[[int], None]
    ) -> int:
        try:
            with open(part, "r+b" if part.exists() else "wb") as fh:
                fh.seek(have)
                fh.truncate()
                for chunk in resp.iter_bytes(CHUNK):
                    if self.stop.is_set():
                        fh.flush()
                        os.fsync(fh.fileno())
                        raise Interrupted(f"stopping during the download of {job.path}")
                    if have + len(chunk) > job.size:
                        raise SizeMismatchError(
                            job.path, f"the registry sent more than the {job.size} bytes the manifest says"
                        )
                    fh.write(chunk)
                    have += len(chunk)
                    on_bytes(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            if full := _no_space(exc, part):
                raise full from exc
            raise
        return have


__all__ = ["CHUNK", "Downloader", "FileJob", "bytes_on_disk", "file_url", "part_path"]
