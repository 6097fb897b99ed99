"""The registry fixture serves real HTTP with Range, HEAD and ETag."""

from __future__ import annotations

from pathlib import Path

import httpx


def test_range_head_etag(registry_dir: Path, registry_server: str) -> None:
    (registry_dir / "blob.bin").write_bytes(bytes(range(256)) * 4)
    with httpx.Client(base_url=registry_server) as client:
        head = client.head("/blob.bin")
        assert head.status_code == 200 and head.headers["content-length"] == "1024"
        part = client.get("/blob.bin", headers={"Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == (bytes(range(256)) * 4)[1000:]
        etag = head.headers["etag"]
        assert client.get("/blob.bin", headers={"If-None-Match": etag}).status_code == 304
        assert client.get("/missing.bin").status_code == 404
