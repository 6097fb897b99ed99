"""`slmops fleet dashboard`: the fleet, its rollouts, each device and the registry as web pages.

Read-only and served from the operator's machine: the broker's retained state and live messages
(through the same FleetWatch the CLI uses), the history database and the registry. Pages are rendered
on the server; one small script of our own applies the live updates pushed as server-sent events.
"""

from build_side.fleet.dashboard.app import create_app
from build_side.fleet.dashboard.live import Change, LiveFleet
from build_side.fleet.dashboard.settings import DashboardSettings

__all__ = ["Change", "DashboardSettings", "LiveFleet", "create_app"]
