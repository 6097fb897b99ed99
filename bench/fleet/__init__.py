"""Fleet at scale: simulated devices on a real broker, and a staged rollout across them, measured.

`FleetSimulator` is the reusable part (N light devices in one process that check, fetch and report
like an edge agent); `run_fleet_bench` drives `slmops rollout` over them twice (converging and
aborting) and times `slmops fleet status`; `fleet_table` and `fleet_records` report it.
"""

from bench.fleet.report import fleet_records, fleet_table
from bench.fleet.run import FleetBenchOptions, FleetBenchResult, RolloutRun, run_fleet_bench
from bench.fleet.sim import Counters, FailureRates, FleetSimulator, SimConfig, SimDevice

__all__ = [
    "Counters",
    "FailureRates",
    "FleetBenchOptions",
    "FleetBenchResult",
    "FleetSimulator",
    "RolloutRun",
    "SimConfig",
    "SimDevice",
    "fleet_records",
    "fleet_table",
    "run_fleet_bench",
]
