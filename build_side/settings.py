"""Where the build side keeps things: one place that reads the environment.

SLMOPS_HOME       keys, fleet database, local registry (default: the user's data dir)
SLMOPS_CACHE_DIR  prepared sources and build caches (default: the user's cache dir)
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def home_dir() -> Path:
    return Path(os.environ.get("SLMOPS_HOME") or platformdirs.user_data_dir("slmops"))


def cache_dir() -> Path:
    return Path(os.environ.get("SLMOPS_CACHE_DIR") or platformdirs.user_cache_dir("slmops"))


def keys_dir() -> Path:
    return home_dir() / "keys"
