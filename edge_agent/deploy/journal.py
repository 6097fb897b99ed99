"""The journal of the deployment in progress, and the ledger of what the device has applied.

Both are small JSON files replaced atomically. The journal is written before each step runs (and
before each event, so an event's seq is never reused), and deleted once the deployment is final; a
journal found at start-up means the agent stopped mid-deployment and must resume it.

The ledger keeps two memories apart: documents that ran through the machine (`applied`, with each
deployment's next event seq) and documents only rejected (`handled`, `seqs`). Only the second is
capped at `LEDGER_KEEP`, so a flood of junk can evict junk but never what the device applied (a
retained, applied document redelivered after a restart stays quietly ignored). Real deployments
are signed by the operator; `APPLIED_KEEP` of them are remembered.
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
from edge_agent.deploy.reserve import Reserve
from edge_agent.errors import DiskFullError

log = logging.getLogger(__name__)

LEDGER_KEEP = 64  # rejected documents and their event seqs remembered (junk can evict only junk)
APPLIED_KEEP = 1024  # deployments remembered (documents that ran, and their next event seq)


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
    attempts: int = Field(1, description="attempts of the step, counting transient failures")
    retry_later: bool = Field(
        False, description="failed for a transient reason: the document is not marked handled"
    )
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
    def __init__(self, state_dir: Path, reserve: Reserve | None = None) -> None:
        self.path = Path(state_dir) / "journal.json"
        self.reserve = reserve

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
        """Raises DiskFullError when even the reserve could not make room."""
        record.updated = utcnow()
        atomic.write_bytes(self.path, record.model_dump_json(indent=2).encode(), self.reserve)

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
    handled: list[str] = Field(default_factory=list, description="sha256 of documents rejected")
    seqs: dict[str, int] = Field(default_factory=dict, description="next event seq per rejected-only id")
    applied: list[str] = Field(default_factory=list, description="sha256 of documents that were deployed")
    deployments: dict[str, int] = Field(
        default_factory=dict, description="next event seq per deployment id that ran"
    )
    blocked: dict[str, str] = Field(
        default_factory=dict, description="manifest sha256 -> why: versions that failed their health gate"
    )


class Ledger:
    """What the device has applied; survives restarts so stale and replayed documents stay rejected."""

    def __init__(self, state_dir: Path, reserve: Reserve | None = None) -> None:
        self.path = Path(state_dir) / "agent-state.json"
        self.reserve = reserve
        self.data = LedgerData()
        if self.path.exists():
            try:
                self.data = LedgerData.model_validate_json(self.path.read_bytes())
            except (OSError, ValidationError) as exc:
                aside = self.path.with_suffix(".corrupt")
                os.replace(self.path, aside)
                log.error("agent state unreadable (%s); moved to %s", exc, aside)

    def save(self) -> bool:
        """Write the ledger; on a full disk it stays in memory (logged) and the next save writes it."""
        d = self.data
        d.handled = d.handled[-LEDGER_KEEP:]
        d.applied = d.applied[-APPLIED_KEEP:]
        if len(d.seqs) > LEDGER_KEEP:
            d.seqs = dict(list(d.seqs.items())[-LEDGER_KEEP:])
        if len(d.deployments) > APPLIED_KEEP:
            d.deployments = dict(list(d.deployments.items())[-APPLIED_KEEP:])
        try:
            atomic.write_bytes(self.path, d.model_dump_json(indent=2).encode(), self.reserve)
        except DiskFullError as exc:
            log.error("agent state not saved, kept in memory until there is room: %s", exc)
            return False
        return True

    def was_handled(self, digest: str) -> bool:
        return digest in self.data.applied or digest in self.data.handled

    def mark_handled(self, digest: str) -> None:
        """A document rejected without running (the capped memory)."""
        if digest not in self.data.handled:
            self.data.handled.append(digest)

    def mark_applied(self, digest: str) -> None:
        """A document that ran through the machine to a final state."""
        if digest in self.data.handled:
            self.data.handled.remove(digest)
        if digest not in self.data.applied:
            self.data.applied.append(digest)

    def next_seq(self, deployment_id: str) -> int:
        """The next event seq of a deployment, without taking it."""
        d = self.data
        return d.deployments.get(deployment_id, d.seqs.get(deployment_id, 0))

    def set_seq(self, deployment_id: str, seq: int) -> None:
        """A deployment that ran: its next seq is kept with the applied memory."""
        self.data.seqs.pop(deployment_id, None)
        self.data.deployments.pop(deployment_id, None)
        self.data.deployments[deployment_id] = seq  # re-inserted last: the newest are kept

    def take_seq(self, deployment_id: str) -> int:
        d = self.data
        if deployment_id in d.deployments:
            seq = d.deployments[deployment_id]
            d.deployments[deployment_id] = seq + 1
            return seq
        seq = d.seqs.pop(deployment_id, 0)
        d.seqs[deployment_id] = seq + 1  # re-inserted last: the newest are kept
        return seq


def read_json(path: Path) -> dict[str, Any] | None:
    """For `edge-agent status`: a state file as plain JSON, or None when absent."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["Journal", "JournalRecord", "Ledger", "LedgerData", "read_json"]
