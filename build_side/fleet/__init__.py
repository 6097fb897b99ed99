"""Operate a fleet of edge devices: deploy, staged rollouts, status, events and bench records.

Devices are reached over MQTT (retained desired states, DESIGN.md section 5) or through
`channels/<channel>.json` in the registry for devices that poll over HTTP. The operator's memory
(revisions, deployments, rollouts, the events and bench records seen) is one SQLite file by default,
or a PostgreSQL database several operator machines share (`--db`, SLMOPS_DB).
"""

from build_side.fleet.broker import BrokerAddress, BrokerSession
from build_side.fleet.catalog import parse_ref, resolve_bundle
from build_side.fleet.channels import read_channel, write_channel
from build_side.fleet.deploy import DeployRequest, Published, deploy, publish_desired
from build_side.fleet.desired import build_desired, desired_payload
from build_side.fleet.errors import (
    BrokerError,
    BundleNotFoundError,
    FleetError,
    HistoryError,
    RolloutError,
)
from build_side.fleet.history import History
from build_side.fleet.rollout import RolloutReport, RolloutRunner
from build_side.fleet.rollout_machine import Step as RolloutStep
from build_side.fleet.rollout_plan import plan_percent_waves, plan_waves
from build_side.fleet.rollout_store import RolloutParams, RolloutStore
from build_side.fleet.status import DeviceView, FleetSnapshot, bench_line, collect_snapshot
from build_side.fleet.watch import FleetWatch, Outcome

__all__ = [
    "BrokerAddress",
    "BrokerError",
    "BrokerSession",
    "BundleNotFoundError",
    "DeployRequest",
    "DeviceView",
    "FleetError",
    "FleetSnapshot",
    "FleetWatch",
    "History",
    "HistoryError",
    "Outcome",
    "Published",
    "RolloutError",
    "RolloutParams",
    "RolloutReport",
    "RolloutRunner",
    "RolloutStep",
    "RolloutStore",
    "bench_line",
    "build_desired",
    "collect_snapshot",
    "deploy",
    "desired_payload",
    "parse_ref",
    "plan_percent_waves",
    "plan_waves",
    "publish_desired",
    "read_channel",
    "resolve_bundle",
    "write_channel",
]
