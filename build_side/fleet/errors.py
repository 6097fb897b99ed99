"""The fleet operator's errors, under the one tree of edge_agent.errors (the CLIs print them plainly).

SlmopsError
└── FleetError            (registry problems raise edge_agent.errors.RegistryError)
    ├── BrokerError           the MQTT broker cannot be reached, refuses us, or does not acknowledge
    ├── BundleNotFoundError   the registry does not hold the bundle asked for
    ├── HistoryError          the history database cannot be opened, reached or upgraded
    └── RolloutError          a rollout cannot start or go on (no devices, bad plan, unknown id)
"""

from __future__ import annotations

from edge_agent.errors import SlmopsError


class FleetError(SlmopsError):
    pass


class BrokerError(FleetError):
    pass


class BundleNotFoundError(FleetError):
    pass


class HistoryError(FleetError):
    pass


class RolloutError(FleetError):
    pass


__all__ = ["BrokerError", "BundleNotFoundError", "FleetError", "HistoryError", "RolloutError"]
