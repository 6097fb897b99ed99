"""Build and sign a desired state: the pointer document a device (or group, or channel) is given.

The signature covers the canonical JSON of the whole document minus `signature`, in exactly the form
published (`model_dump(mode="json", by_alias=True)`, nulls included), so a device can check it on the
raw message or on the parsed model and get the same bytes either way.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from edge_agent.contracts import BundleRef, DeploymentPolicy, DesiredState, VariantPolicy
from edge_agent.contracts.common import utcnow
from edge_agent.signing import SigningKey, TrustedKeys, sign_document, verify_document


def new_deployment_id(prefix: str = "dep") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def build_desired(
    *,
    revision: int,
    bundle: BundleRef,
    key: SigningKey,
    deployment_id: str | None = None,
    variant_policy: VariantPolicy | None = None,
    policy: DeploymentPolicy | None = None,
    expires_in: timedelta | None = None,
) -> DesiredState:
    """A signed desired state; the signature is checked once here so a bad one never leaves."""
    issued = utcnow()
    unsigned = DesiredState(
        revision=revision,
        deployment_id=deployment_id or new_deployment_id(),
        bundle=bundle,
        variant_policy=variant_policy or VariantPolicy(),
        policy=policy or DeploymentPolicy(),
        issued=issued,
        expires=issued + expires_in if expires_in else None,
    )
    signed = DesiredState.model_validate(sign_document(unsigned.signed_payload(), key))
    verify_document(desired_document(signed), TrustedKeys([key.public]))
    return signed


def desired_document(state: DesiredState) -> dict:
    return state.model_dump(mode="json", by_alias=True)


def desired_payload(state: DesiredState) -> bytes:
    """The bytes published on MQTT and written to channels/<channel>.json."""
    return json.dumps(desired_document(state), indent=None, separators=(",", ":")).encode()


__all__ = ["build_desired", "desired_document", "desired_payload", "new_deployment_id"]
