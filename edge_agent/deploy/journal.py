"""The journal of the deployment in progress, and the ledger of what the device has applied.

Both are small JSON files replaced atomically. The journal is written before each step runs (and
before each event, so an event's seq is never reused), and deleted once the deployment is final; a
journal found at start-up means the agent stopped mid-deployment and must resume it.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from edge_agent.contracts import DeploymentState, EventError
from edge_agent.contracts.common import utcnow
from edge_agent.deploy import atomic
from edge_agent.deploy.machine import Step

log = logging.getLogger(__name__)

LEDGER_KEEP = 64  # handled documents and event seqs remembered (enough to outlast any retained set)


class JournalRecord(BaseModel):
    deployment_id: str
    revision: int
    desired: dict[str, Any] = Field(description="the signed desired-state document, as received")
    desired_sha256: str
    bundle: str
    manifest_sha256: str
    source: str = ""
    step: Step = Step.ACCEPTED
    seq: int = Field(0, description="seq of the next event")
    crashes: dict[str, int] = Field(default_factory=dict, description="restarts found in each step")
    clean_stop: bool = Field(False, description="the agent stopped on purpose (SIGTERM) mid-step")
    attempts: int = Field(1, description="download attempts, counting transient failures")
    variant: str | None = None
    providers: list[str] = Field(default_factory=list)
    provider: str | None = None
    previous_active: str | None = Field(None, description="version active when this started")
    downloaded_at_start: int = Field(0, description="bytes already on disk when the last download began")
    error: EventError | None = None
    started: datetime = Field(default_factory=utcnow)
    updated: datetime = Field(default_factory=utcnow)

    def next_seq(self) -> int:
        seq, self.seq = self.seq, self.seq + 1
        return seq


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "journal.json"

    def load(self) -> JournalRecord | None:
        if not self.path.exists():
            return None
        try:
            return JournalRecord.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError) as exc:
            # Atomic writes make this unreachable short of disk corruption; keep the file for a person.
            aside = self.path.with_suffix(".corrupt")
            os.replace(self.path, aside)
            log.error("journal unreadable (%s); moved to %s, starting clean", exc, aside)
            return None

    def save(self, record: JournalRecord) -> None:
        record.updated = utcnow()
        atomic.write_bytes(self.path, record.model_dump_json(indent=2).encode())

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()
            atomic.fsync_dir(self.path.parent)


class LedgerData(BaseModel):
    applied_revision: int | None = None
    last_deployment: str | None = None
    last_bundle: str | None = None
    last_state: DeploymentState | None = None
    last_error: EventError | None = None
    last_time: datetime | None = None
    handled: list[str] = Field(default_factory=list, description="sha256 of documents already handled")
    seqs: dict[str, int] = Field(default_factory=dict, description="next event seq per deployment id")
    blocked: dict[str, str] = Field(
        default_factory=dict, description="manifest sha256 -> why: versions that failed their health gate"
    )


class Ledger:
    """What the device has applied; survives restarts so stale and replayed documents stay rejected."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "agent-state.json"
        self.data = LedgerData()
        if self.path.exists():
            try:
                self.data = LedgerData.model_validate_json(self.path.read_bytes())
            except (OSError, ValidationError) as exc:
                aside = self.path.with_suffix(".corrupt")
                os.replace(self.path, aside)
                log.error("agent state unreadable (%s); moved to %s", exc, aside)

    def save(self) -> None:
        d = self.data
        d.handled = d.handled[-LEDGER_KEEP:]
        if len(d.seqs) > LEDGER_KEEP:
            d.seqs = dict(list(d.seqs.items())[-LEDGER_KEEP:])
        atomic.write_bytes(self.path, d.model_dump_json(indent=2).encode())

    def was_handled(self, digest: str) -> bool:
        return digest in self.data.handled

    def mark_handled(self, digest: str) -> None:
        if digest not in self.data.handled:
            self.data.handled.append(digest)

    def take_seq(self, deployment_id: str) -> int:
        seq = self.data.seqs.pop(deployment_id, 0)
        self.data.seqs[deployment_id] = seq + 1  # re-inserted last: the newest are kept
        return seq


def read_json(path: Path) -> dict[str, Any] | None:
    """For `edge-agent status`: a state file as plain JSON, or None when absent."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["Journal", "JournalRecord", "Ledger", "LedgerData", "read_json"]
