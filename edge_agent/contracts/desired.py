"""Desired state (`slmops.desired/1`): what the fleet wants a device to run, signed by the operator.

MQTT and HTTP channels carry only this pointer document; the bytes travel over HTTP from the registry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from edge_agent.contracts.common import Contract, Name, SemVer, Sha256, utcnow
from edge_agent.contracts.manifest import DeviceKind, Precision

DESIRED_SCHEMA = "slmops.desired/1"


class BundleRef(Contract):
    name: Name
    version: SemVer
    manifest_url: str = Field(description="absolute URL, or a path relative to the agent's registry URL")
    manifest_sha256: Sha256

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class VariantPolicy(Contract):
    preferred_devices: list[DeviceKind] = Field(default_factory=list, description="empty: npu > gpu > cpu")
    preferred_providers: list[str] = Field(default_factory=list)
    allowed_precisions: list[Precision] = Field(default_factory=list, description="empty: any")
    variant: Name | None = Field(None, description="pin one variant id")


class DeploymentPolicy(Contract):
    health_timeout_s: float = Field(120.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    rollback_on_failure: bool = True
    bench_after_install: bool = False


class DesiredState(Contract):
    schema_: Literal["slmops.desired/1"] = Field(DESIRED_SCHEMA, alias="schema")
    revision: int = Field(
        ge=1, description="monotonic per device; not newer than the last applied is ignored"
    )
    deployment_id: str = Field(min_length=1, max_length=128)
    bundle: BundleRef
    variant_policy: VariantPolicy = Field(default_factory=VariantPolicy)
    policy: DeploymentPolicy = Field(default_factory=DeploymentPolicy)
    issued: datetime = Field(default_factory=utcnow)
    expires: datetime | None = None
    key_id: str | None = Field(None, description="id of the key that signed it")
    signature: str | None = Field(
        None, description="base64 Ed25519 signature over the canonical JSON of the rest"
    )

    def signed_payload(self) -> dict:
        """The document without its signature: what the signature covers."""
        return self.model_dump(mode="json", by_alias=True, exclude={"signature"})


__all__ = ["DESIRED_SCHEMA", "BundleRef", "DeploymentPolicy", "DesiredState", "VariantPolicy"]
