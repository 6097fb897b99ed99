"""Serve a registry directory over HTTP for local use and tests (Range, HEAD, ETag via Starlette).

Production registries are any static server, object store or CDN; this adds nothing they lack.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles


def registry_app(root: Path) -> Starlette:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Starlette(
        routes=[Mount("/", app=StaticFiles(directory=root, follow_symlink=False), name="registry")]
    )
