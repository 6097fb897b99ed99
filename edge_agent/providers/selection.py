"""Choose the variant and the execution providers to try for it, on this device, and say why.

Order of authority: a local override (the device owner's `runtime.providers`) over the desired
state's `VariantPolicy` over the default ranking (NPU > GPU > CPU, then the manifest's own order).
A variant must fit the free memory (`min_memory_mb`) and have at least one provider available here.
The chosen variant's providers are all returned, in the order to try them: one listed but missing
here stays in the list so that the model host records the fallback past it (it is visible, not silent).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_agent.contracts import BundleManifest, Variant, VariantPolicy
from edge_agent.errors import IncompatibleError, MemoryInsufficientError, ProviderUnavailableError
from edge_agent.providers.probe import DeviceInfo, DeviceType, probe_device

DEFAULT_DEVICE_ORDER: tuple[DeviceType, ...] = ("npu", "gpu", "cpu")


@dataclass
class Choice:
    variant_id: str
    providers: list[str]  # candidates in order; the activator falls back along this list
    reasons: list[str] = field(default_factory=list)
    device: DeviceType = "cpu"  # the kind of device the first usable provider drives


def choose_variant(
    manifest: BundleManifest,
    policy: VariantPolicy | None = None,
    *,
    device: DeviceInfo | None = None,
    override: list[str] | None = None,
) -> Choice:
    """Rank every (variant, available provider) pair and pick the best; `reasons` explain each verdict.

    `override`: only these providers, in this order (RuntimeSettings.providers).
    """
    policy = policy or VariantPolicy()
    device = device or probe_device()
    order = _device_order(policy)
    preferred = list(override or policy.preferred_providers)
    reasons: list[str] = []
    if override:
        reasons.append(f"local override: providers {override} only, in that order")
    elif policy.preferred_providers:
        reasons.append(f"policy prefers providers {policy.preferred_providers}")
    reasons.append(f"device order {' > '.join(order)}; {device.memory.available_mb} MB memory free")

    ranked: list[tuple[tuple[int, int, int], Variant, list[str], DeviceType]] = []
    skipped_for: set[str] = set()
    for index, v in enumerate(manifest.variants):
        why_not = _excluded(v, policy, device, override)
        if why_not:
            kind, text = why_not
            skipped_for.add(kind)
            reasons.append(f"{v.id}: skipped, {text}")
            continue
        providers = _provider_order(v, preferred, device, order, override)
        usable = [p for p in providers if device.provider_available(p)]
        first = usable[0]
        kind = _device_of(v, first, device)
        key = (order.index(kind), _rank(first, preferred), index)
        ranked.append((key, v, providers, kind))
        missing = [p for p in providers if p not in usable]
        note = f"; not available here: {missing}" if missing else ""
        reasons.append(
            f"{v.id}: candidate, {first} on {kind} ({v.precision}, needs {v.min_memory_mb} MB){note}"
        )

    if not ranked:
        message = f"{manifest.ref}: no variant this device can run ({'; '.join(reasons)})"
        device_limits = skipped_for - {"policy"}  # what the device lacked, among variants the policy allows
        if device_limits == {"memory"}:
            raise MemoryInsufficientError(message)
        if device_limits == {"provider"}:
            raise ProviderUnavailableError(message)
        raise IncompatibleError(message)
    ranked.sort(key=lambda r: r[0])
    _, best, providers, kind = ranked[0]
    reasons.append(
        f"chose {best.id}: best device kind ({kind}), then preferred provider, then manifest order; "
        f"providers to try: {providers}"
    )
    return Choice(best.id, providers, reasons, kind)


def _device_order(policy: VariantPolicy) -> list[DeviceType]:
    """The policy's preferred devices first, then the rest in the default order."""
    first = list(dict.fromkeys(policy.preferred_devices))
    return first + [d for d in DEFAULT_DEVICE_ORDER if d not in first]


def _excluded(
    v: Variant, policy: VariantPolicy, device: DeviceInfo, override: list[str] | None
) -> tuple[str, str] | None:
    if policy.variant and v.id != policy.variant:
        return "policy", f"the policy pins variant {policy.variant!r}"
    if policy.allowed_precisions and v.precision not in policy.allowed_precisions:
        return "policy", f"precision {v.precision} is not in the allowed {policy.allowed_precisions}"
    if v.min_memory_mb > device.memory.available_mb:
        return "memory", f"needs {v.min_memory_mb} MB, {device.memory.available_mb} MB free"
    listed = [p for p in v.execution_providers if not override or p in override]
    if not listed:
        return "provider", f"lists none of the overridden providers ({v.execution_providers})"
    if not any(device.provider_available(p) for p in listed):
        return "provider", f"none of {listed} is available here (available: {device.available_providers})"
    return None


def _provider_order(
    v: Variant,
    preferred: list[str],
    device: DeviceInfo,
    order: list[DeviceType],
    override: list[str] | None,
) -> list[str]:
    if override:
        return [p for p in override if p in v.execution_providers]
    position = {p: i for i, p in enumerate(v.execution_providers)}
    return sorted(
        v.execution_providers,
        key=lambda p: (_rank(p, preferred), order.index(_device_of(v, p, device)), position[p]),
    )


def _device_of(v: Variant, provider: str, device: DeviceInfo) -> DeviceType:
    kinds = device.provider_devices(provider)
    return v.device if v.device in kinds else kinds[0]


def _rank(provider: str, preferred: list[str]) -> int:
    return preferred.index(provider) if provider in preferred else len(preferred)
