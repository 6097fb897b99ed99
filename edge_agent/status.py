"""What `edge-agent status` shows, read from the state folder alone (works with the agent stopped)."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from edge_agent.deploy.journal import read_json
from edge_agent.deploy.store import Store
from edge_agent.reporting import EVENTS_FILE


def last_events(state_dir: Path, n: int = 5) -> list[dict[str, Any]]:
    path = Path(state_dir) / EVENTS_FILE
    if not path.exists():
        return []
    with open(path) as fh:
        lines = deque(fh, maxlen=n)
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return events


def read_status(state_dir: Path) -> dict[str, Any]:
    state_dir = Path(state_dir)
    store = Store(state_dir, create=False)
    cur, prev = store.current(), store.previous()
    ledger = read_json(state_dir / "agent-state.json") or {}
    journal = read_json(state_dir / "journal.json")
    reported = read_json(state_dir / "reported.json") or {}
    used = store.usage()
    in_progress = None
    if journal:
        in_progress = {
            "deployment_id": journal["deployment_id"],
            "bundle": journal["bundle"],
            "step": journal["step"],
            "revision": journal["revision"],
            "updated": journal.get("updated"),
        }
    return {
        "state_dir": str(state_dir),
        "device": reported.get("device"),
        "fleet": reported.get("fleet"),
        "active": cur.as_dict() if cur else None,
        "previous": prev.ref if prev else None,
        "installed": [v.ref for v in store.versions()],
        "store": {"disk_bytes": used.disk_bytes, "logical_bytes": used.logical_bytes},
        "applied_revision": ledger.get("applied_revision"),
        "last_deployment": {
            "deployment_id": ledger.get("last_deployment"),
            "bundle": ledger.get("last_bundle"),
            "state": ledger.get("last_state"),
            "error": ledger.get("last_error"),
            "time": ledger.get("last_time"),
        }
        if ledger.get("last_deployment")
        else None,
        "in_progress": in_progress,
        "blocked": ledger.get("blocked", {}),
        "events": last_events(state_dir),
    }


__all__ = ["last_events", "read_status"]
