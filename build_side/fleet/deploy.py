"""Deploy one bundle to devices, groups and HTTP channels: resolve, number, sign, record, publish.

The order keeps the history honest: the signed document is recorded before it is published, and
marked published only once the broker acknowledged it (or the channel file was renamed into place).
Revisions come from the history's per-fleet counter, raised above anything the broker or the channel
files already carry, so a fresh operator machine never issues a revision a device would ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from build_side.fleet.broker import BrokerSession
from build_side.fleet.catalog import resolve_bundle
from build_side.fleet.channels import channel_path, read_channel, write_channel
from build_side.fleet.desired import build_desired, desired_document, desired_payload, new_deployment_id
from build_side.fleet.errors import FleetError
from build_side.fleet.history import History
from build_side.fleet.status import FleetSnapshot
from build_side.fleet.topics import device_topic, group_desired_topic
from edge_agent.contracts import BundleRef, DeploymentPolicy, DesiredState, VariantPolicy
from edge_agent.signing import SigningKey


@dataclass
class DeployRequest:
    bundle: str  # name@version
    registry: str
    devices: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    variant_policy: VariantPolicy = field(default_factory=VariantPolicy)
    policy: DeploymentPolicy = field(default_factory=DeploymentPolicy)
    expires_in: timedelta | None = None


@dataclass(frozen=True)
class Published:
    target_kind: str  # device, group or channel
    target: str
    where: str  # MQTT topic or channel file
    state: DesiredState

    def to_json(self) -> dict:
        return {
            "target_kind": self.target_kind,
            "target": self.target,
            "where": self.where,
            "deployment_id": self.state.deployment_id,
            "revision": self.state.revision,
            "bundle": self.state.bundle.ref,
            "manifest_sha256": self.state.bundle.manifest_sha256,
        }


def publish_desired(
    *,
    session: BrokerSession,
    history: History,
    target_kind: str,
    target: str,
    state: DesiredState,
    rollout_id: str | None = None,
) -> Published:
    """Record, publish retained at QoS 1, wait for PUBACK, mark published."""
    topic = (
        device_topic(session.fleet, target, "desired")
        if target_kind == "device"
        else group_desired_topic(session.fleet, target)
    )
    history.add_deployment(
        fleet=session.fleet,
        target_kind=target_kind,
        target=target,
        document=desired_document(state),
        rollout_id=rollout_id,
    )
    session.publish(topic, desired_payload(state), retain=True)
    history.mark_published(state.deployment_id)
    return Published(target_kind, target, topic, state)


def sign_for(
    *,
    history: History,
    fleet: str,
    bundle: BundleRef,
    key: SigningKey,
    floor: int,
    variant_policy: VariantPolicy | None = None,
    policy: DeploymentPolicy | None = None,
    expires_in: timedelta | None = None,
    deployment_id: str | None = None,
) -> DesiredState:
    return build_desired(
        revision=history.next_revision(fleet, floor),
        bundle=bundle,
        key=key,
        deployment_id=deployment_id or new_deployment_id(),
        variant_policy=variant_policy,
        policy=policy,
        expires_in=expires_in,
    )


def deploy(
    req: DeployRequest,
    *,
    fleet: str,
    key: SigningKey,
    history: History,
    session: BrokerSession | None = None,
    snapshot: FleetSnapshot | None = None,
) -> list[Published]:
    """Publish `req.bundle` to every target of the request; refuses a bundle the registry lacks."""
    if not (req.devices or req.groups or req.channels):
        raise FleetError("nothing to deploy to: give --device, --group or --channel")
    if (req.devices or req.groups) and session is None:
        raise FleetError("deploying to devices or groups needs an MQTT broker session")
    bundle = resolve_bundle(req.registry, req.bundle)
    for channel in req.channels:
        channel_path(req.registry, channel)  # refuse a URL registry before anything is issued
    floor = snapshot.highest_revision() if snapshot else 0
    for channel in req.channels:
        current = read_channel(req.registry, channel)
        floor = max(floor, current.revision if current else 0)

    def signed() -> DesiredState:
        return sign_for(
            history=history,
            fleet=fleet,
            bundle=bundle,
            key=key,
            floor=floor,
            variant_policy=req.variant_policy,
            policy=req.policy,
            expires_in=req.expires_in,
        )

    done: list[Published] = []
    for kind, targets in (("device", req.devices), ("group", req.groups)):
        for target in targets:
            assert session is not None
            done.append(
                publish_desired(
                    session=session, history=history, target_kind=kind, target=target, state=signed()
                )
            )
    for channel in req.channels:
        state = signed()
        history.add_deployment(
            fleet=fleet, target_kind="channel", target=channel, document=desired_document(state)
        )
        path = write_channel(req.registry, channel, state)
        history.mark_published(state.deployment_id)
        done.append(Published("channel", channel, str(path), state))
    return done


__all__ = ["DeployRequest", "Published", "deploy", "publish_desired", "sign_for"]
