"""Deployment events (`slmops.event/1`) and the device's reported state (`slmops.reported/1`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from edge_agent.contracts.common import Contract, utcnow

EVENT_SCHEMA = "slmops.event/1"
REPORTED_SCHEMA = "slmops.reported/1"


class DeploymentState(StrEnum):
    ACCEPTED = "ACCEPTED"
    DEFERRED = "DEFERRED"
    DOWNLOADING = "DOWNLOADING"
    VERIFYING = "VERIFYING"
    INSTALLING = "INSTALLING"
    HEALTH_CHECK = "HEALTH_CHECK"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"
    REJECTED = "REJECTED"


TERMINAL_STATES = frozenset(
    {DeploymentState.SUCCEEDED, DeploymentState.FAILED, DeploymentState.ROLLED_BACK, DeploymentState.REJECTED}
)


class ErrorCode(StrEnum):
    DISK_FULL = "DISK_FULL"
    DOWNLOAD_FAILED = "DOWNLOAD_FAILED"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    INCOMPATIBLE = "INCOMPATIBLE"
    MEMORY_INSUFFICIENT = "MEMORY_INSUFFICIENT"
    HEALTH_CHECK_FAILED = "HEALTH_CHECK_FAILED"
    EP_UNAVAILABLE = "EP_UNAVAILABLE"
    STALE_REVISION = "STALE_REVISION"
    INVALID_MESSAGE = "INVALID_MESSAGE"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"


class EventError(Contract):
    code: ErrorCode
    detail: str


class Progress(Contract):
    done: int = Field(ge=0, description="bytes of the variant's files in staging (reused ones included)")
    total: int = Field(ge=0, description="bytes of the variant's files")
    reused: int | None = Field(
        None, ge=0, description="bytes of total the device already held (linked or copied, not fetched)"
    )
    to_fetch: int | None = Field(None, ge=0, description="bytes this attempt fetches from the registry")


class Event(Contract):
    schema_: Literal["slmops.event/1"] = Field(EVENT_SCHEMA, alias="schema")
    device: str
    deployment_id: str
    seq: int = Field(ge=0, description="per deployment; receivers dedupe on (deployment_id, seq)")
    state: DeploymentState
    time: datetime = Field(default_factory=utcnow)
    revision: int | None = None
    bundle: str | None = Field(None, description="name@version")
    variant: str | None = None
    provider: str | None = None
    progress: Progress | None = None
    error: EventError | None = None
    message: str = ""


class ActiveModel(Contract):
    bundle: str = Field(description="name@version")
    variant: str
    provider: str
    installed: datetime | None = None


class StoreUsage(Contract):
    disk_bytes: int = Field(
        ge=0, description="disk the installed versions, shared blobs and staging use; shared files once"
    )
    logical_bytes: int = Field(ge=0, description="the same files counted once per version holding them")
    versions: int = Field(ge=0)


class ReportedState(Contract):
    schema_: Literal["slmops.reported/1"] = Field(REPORTED_SCHEMA, alias="schema")
    device: str
    fleet: str
    groups: list[str] = Field(default_factory=list)
    agent_version: str
    time: datetime = Field(default_factory=utcnow)
    applied_revision: int | None = None
    active: ActiveModel | None = None
    previous: list[str] = Field(default_factory=list, description="name@version kept for rollback")
    last_deployment: str | None = None
    last_state: DeploymentState | None = None
    last_error: EventError | None = None
    provider_fallbacks: list[str] = Field(default_factory=list)
    free_disk_mb: int | None = None
    store: StoreUsage | None = Field(None, description="disk the model store uses")
    free_memory_mb: int | None = None
    api_url: str | None = None


__all__ = [
    "EVENT_SCHEMA",
    "REPORTED_SCHEMA",
    "TERMINAL_STATES",
    "ActiveModel",
    "DeploymentState",
    "ErrorCode",
    "Event",
    "EventError",
    "Progress",
    "ReportedState",
    "StoreUsage",
]
