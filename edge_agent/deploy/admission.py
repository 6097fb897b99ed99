"""Admission of a desired-state document: every check before anything on the device may change.

In this order: a JSON object -> an Ed25519 signature by a trusted key (over the raw document, before
it is trusted enough to parse) -> the `slmops.desired/1` contract -> not expired -> a revision newer
than the last applied -> not a version that already failed its health gate on this device.
A failed check raises `Rejected` with the event code the fleet will see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from edge_agent.bundle_check import describe_validation_error
from edge_agent.contracts import DesiredState, ErrorCode
from edge_agent.errors import SignatureError
from edge_agent.hashing import sha256_bytes
from edge_agent.signing import TrustedKeys, verify_document


class Rejected(Exception):
    def __init__(self, code: ErrorCode, detail: str, deployment_id: str, revision: int | None = None):
        super().__init__(detail)
        self.code, self.detail, self.deployment_id, self.revision = code, detail, deployment_id, revision


@dataclass
class Admitted:
    desired: DesiredState
    document: dict
    digest: str
    source: str


def admit_document(
    payload: bytes, source: str, trusted: TrustedKeys, last_revision: int, blocked: dict[str, str]
) -> Admitted:
    digest = sha256_bytes(payload)
    fallback_id = f"invalid-{digest[:12]}"  # a document too broken to name its deployment
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(ErrorCode.INVALID_MESSAGE, f"{source}: not valid JSON ({exc})", fallback_id) from exc
    if not isinstance(doc, dict):
        raise Rejected(ErrorCode.INVALID_MESSAGE, f"{source}: not a JSON object", fallback_id)
    dep_id = doc.get("deployment_id")
    dep_id = dep_id if isinstance(dep_id, str) and 0 < len(dep_id) <= 128 else fallback_id
    revision = doc.get("revision") if isinstance(doc.get("revision"), int) else None
    try:
        verify_document(doc, trusted)
    except SignatureError as exc:
        raise Rejected(ErrorCode.SIGNATURE_INVALID, f"{source}: {exc}", dep_id, revision) from exc
    try:
        desired = DesiredState.model_validate(doc)
    except ValidationError as exc:
        detail = f"{source}: {describe_validation_error(exc)}"
        raise Rejected(ErrorCode.INVALID_MESSAGE, detail, dep_id, revision) from exc
    if desired.expires and desired.expires <= datetime.now(UTC):
        raise Rejected(
            ErrorCode.STALE_REVISION, f"expired at {desired.expires.isoformat()}", dep_id, revision
        )
    if desired.revision <= last_revision:
        detail = f"revision {desired.revision} is not newer than the last applied ({last_revision})"
        raise Rejected(ErrorCode.STALE_REVISION, detail, dep_id, revision)
    why = blocked.get(desired.bundle.manifest_sha256)
    if why:
        detail = f"{desired.bundle.ref} failed on this device before and is not retried: {why}"
        raise Rejected(ErrorCode.HEALTH_CHECK_FAILED, detail, dep_id, revision)
    return Admitted(desired, doc, digest, source)


__all__ = ["Admitted", "Rejected", "admit_document"]
