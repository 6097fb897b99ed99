"""MQTT topic names (DESIGN.md section 5): one place, shared by the agent and the fleet tools."""

from __future__ import annotations

from dataclasses import dataclass, field

ROOT = "slmops/v1"


def device_topic(fleet: str, device: str, kind: str) -> str:
    """kind: desired, reported, state, events or bench."""
    return f"{ROOT}/{fleet}/{device}/{kind}"


def group_desired_topic(fleet: str, group: str) -> str:
    return f"{ROOT}/{fleet}/group/{group}/desired"


def roll_call_topic(fleet: str) -> str:
    """Not retained, operator -> every device of the fleet: publish your reported state and `online` again.

    For brokers that deliver retained messages only to subscriptions without wildcards (RabbitMQ's
    MQTT plugin): the operator's wildcard snapshot cannot see the devices' retained reports there.
    """
    return f"{ROOT}/{fleet}/_rollcall"


@dataclass(frozen=True)
class DeviceTopics:
    fleet: str
    device: str
    groups: tuple[str, ...] = field(default_factory=tuple)

    def of(self, kind: str) -> str:
        return device_topic(self.fleet, self.device, kind)

    @property
    def desired(self) -> str:
        return self.of("desired")

    @property
    def reported(self) -> str:
        return self.of("reported")

    @property
    def state(self) -> str:
        return self.of("state")

    @property
    def events(self) -> str:
        return self.of("events")

    def desired_subscriptions(self) -> list[str]:
        """The device's own desired topic, then one per group it follows."""
        return [self.desired] + [group_desired_topic(self.fleet, g) for g in self.groups]

    @property
    def roll_call(self) -> str:
        return roll_call_topic(self.fleet)


__all__ = ["ROOT", "DeviceTopics", "device_topic", "group_desired_topic", "roll_call_topic"]
