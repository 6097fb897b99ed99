"""Downloads resume with Range, retry only what is transient, and never exceed the manifest's size."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from edge_agent.deploy.download import Downloader, FileJob, part_path
from edge_agent.errors import DownloadError, SizeMismatchError

BLOB = os.urandom(300_000)


@pytest.fixture
def blob(registry_dir: Path) -> int:
    (registry_dir / "blob.bin").write_bytes(BLOB)
    return len(BLOB)


def downloader(retries: int = 3) -> Downloader:
    return Downloader(httpx.Client(timeout=10), retries=retries, backoff_initial_s=0.01, backoff_max_s=0.05)


def job(url: str, tmp_path: Path, name: str = "blob.bin", size: int = len(BLOB)) -> FileJob:
    return FileJob(url=f"{url}/{name}", dest=tmp_path / "out" / name, size=size, path=name)


def test_resumes_a_part_file_with_range(blob: int, registry_tap, tmp_path: Path) -> None:
    url, tap = registry_tap
    j = job(url, tmp_path)
    j.dest.parent.mkdir()
    part_path(j.dest).write_bytes(BLOB[:100_000])
    fetched: list[int] = []
    downloader().fetch_file(j, fetched.append)
    assert j.dest.read_bytes() == BLOB and not part_path(j.dest).exists()
    assert [r.range for r in tap.served("blob.bin")] == ["bytes=100000-"]
    assert sum(fetched) == blob - 100_000


def test_a_cut_connection_is_retried_from_where_it_stopped(blob: int, registry_tap, tmp_path: Path) -> None:
    url, tap = registry_tap
    tap.cut_after["/blob.bin"] = 64 * 1024
    j = job(url, tmp_path)
    downloader().fetch_file(j)
    assert j.dest.read_bytes() == BLOB
    ranges = [r.range for r in tap.served("blob.bin")]
    assert ranges[0] is None and ranges[1] == "bytes=65536-", ranges


def test_4xx_stops_at_once(blob: int, registry_tap, tmp_path: Path) -> None:
    url, tap = registry_tap
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        downloader().fetch_file(job(url, tmp_path, name="missing.bin"))
    assert not err.value.transient and len(tap.served("missing.bin")) == 1


def test_5xx_is_retried_a_bounded_number_of_times(blob: int, registry_tap, tmp_path: Path) -> None:
    url, tap = registry_tap
    tap.status["/blob.bin"] = 503
    with pytest.raises(DownloadError, match="HTTP 503") as err:
        downloader(retries=2).fetch_file(job(url, tmp_path))
    assert err.value.transient and len(tap.served("blob.bin")) == 3


def test_never_more_bytes_than_the_manifest_says(blob: int, registry_tap, tmp_path: Path) -> None:
    url, tap = registry_tap
    tap.append["/blob.bin"] = b"x" * 50_000
    j = job(url, tmp_path)
    with pytest.raises(SizeMismatchError, match="more than"):
        downloader().fetch_file(j)
    assert part_path(j.dest).stat().st_size <= blob and not j.dest.exists()


def test_small_documents_have_a_size_limit(blob: int, registry_tap) -> None:
    url, _ = registry_tap
    with pytest.raises(DownloadError, match="larger than"):
        downloader().fetch_bytes(f"{url}/blob.bin", limit=1000)
