"""Choose the variant and execution providers for this device.

Placeholder policy until the device probe lands: the first CPU variant allowed by the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.contracts import BundleManifest, VariantPolicy
from edge_agent.errors import IncompatibleError


@dataclass
class Choice:
    variant_id: str
    providers: list[str]  # candidates in order; the activator falls back along this list
    reasons: list[str] = field(default_factory=list)


def choose_variant(manifest: BundleManifest, policy: VariantPolicy | None = None) -> Choice:
    policy = policy or VariantPolicy()
    for v in manifest.variants:
        if policy.variant and v.id != policy.variant:
            continue
        if policy.allowed_precisions and v.precision not in policy.allowed_precisions:
            continue
        if "CPUExecutionProvider" in v.execution_providers:
            return Choice(v.id, ["CPUExecutionProvider"], [f"{v.id}: first CPU variant the policy allows"])
    raise IncompatibleError(
        f"{manifest.ref}: no variant this device can run under the policy {policy.model_dump()}"
    )
