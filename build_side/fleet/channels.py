"""Desired state for devices that poll over HTTP: `channels/<channel>.json` in the registry directory.

Written atomically (temporary name in the same directory, fsync, rename), so a device polling at any
moment reads either the old document or the new one, never half of one.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from build_side.fleet.catalog import is_url
from build_side.fleet.desired import desired_payload
from edge_agent.contracts import DesiredState
from edge_agent.contracts.common import ID_RE
from edge_agent.errors import RegistryError


def channel_path(registry: str, channel: str) -> Path:
    if is_url(registry):
        raise RegistryError(
            f"channels are files in the registry directory; {registry} is a URL "
            "(give --registry the directory the registry is served from)"
        )
    if not re.match(ID_RE, channel):
        raise RegistryError(f"{channel!r} is not a channel name (lowercase letters, digits, - and _)")
    return Path(registry) / "channels" / f"{channel}.json"


def write_channel(registry: str, channel: str, state: DesiredState) -> Path:
    path = channel_path(registry, channel)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{channel}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(desired_payload(state) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_channel(registry: str, channel: str) -> DesiredState | None:
    path = channel_path(registry, channel)
    if not path.exists():
        return None
    return DesiredState.model_validate_json(path.read_bytes())


__all__ = ["channel_path", "read_channel", "write_channel"]
