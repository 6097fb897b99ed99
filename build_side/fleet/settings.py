"""The fleet operator's defaults, read from the environment in one place (flags override them).

SLMOPS_BROKER    MQTT broker URL           (default mqtt://127.0.0.1:1883)
SLMOPS_FLEET     fleet id                  (default `default`)
SLMOPS_REGISTRY  registry directory or URL (default $SLMOPS_HOME/registry)
SLMOPS_DB        history database: a SQLite file, or postgresql://user:password@host:port/database
                 (default $SLMOPS_HOME/fleet.db)
"""

from __future__ import annotations

import os

from build_side.settings import home_dir

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_FLEET = "default"


def broker_url() -> str:
    return os.environ.get("SLMOPS_BROKER") or DEFAULT_BROKER


def fleet_id() -> str:
    return os.environ.get("SLMOPS_FLEET") or DEFAULT_FLEET


def registry_location() -> str:
    return os.environ.get("SLMOPS_REGISTRY") or str(home_dir() / "registry")


def history_location() -> str:
    return os.environ.get("SLMOPS_DB") or str(home_dir() / "fleet.db")
