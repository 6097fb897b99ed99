"""Report a fleet bench: one rich table per run, and bench records for the results file."""

from __future__ import annotations

import os

from rich.table import Table

from bench.fleet.run import FleetBenchResult
from edge_agent.contracts import BenchMeta, BenchRecord, Summary


def fleet_table(result: FleetBenchResult) -> Table:
    table = Table(title=f"bench fleet: {result.devices} devices on {result.broker} (MQTT {result.protocol})")
    for column in (
        "run",
        "status",
        "waves (devices: time s)",
        "converge s",
        "events/s",
        "broker msgs",
        "op RSS MB",
        "op CPU s",
        "ok",
    ):
        table.add_column(column)
    for run in result.runs:
        waves = ", ".join(
            f"{w['devices']}:{w['time_s']}" + ("" if w["status"] == "succeeded" else f" {w['status']}")
            for w in run.waves
        )
        table.add_row(
            run.name,
            run.status,
            waves,
            str(run.converge_s),
            f"{run.events_per_s:.0f}",
            str(run.broker_messages),
            f"{run.operator_peak_rss_mb:.0f}",
            f"{run.operator_cpu_s:.1f}",
            "yes" if run.ok else "NO: " + "; ".join(run.problems),
        )
    status = ", ".join(f"{n} devices {s} s" for n, s in sorted(result.status_s.items()))
    counted = ", ".join(f"{r.name} {r.unreadable_counted}" for r in result.runs)
    table.caption = (
        f"fleet status: {status}; garbage messages sent {result.garbage_sent}, "
        f"counted and ignored by the operator: {counted}"
    )
    return table


def _figure(unit: str, value: float) -> Summary:
    return Summary(unit=unit, median=value, p90=value, stddev=0.0, samples=[value])


def fleet_records(result: FleetBenchResult) -> list[BenchRecord]:
    """One record per rollout run and one for the status timings (appended like `bench compare`'s)."""
    meta = BenchMeta(cores=os.cpu_count() or 0, host=os.uname().nodename)
    base = {
        "model": f"fleet:{result.devices}",
        "variant": f"mqtt{result.protocol}",
        "engine": "slmops-operator",
        "provider": result.broker,
        "meta": meta,
    }
    records = []
    for run in result.runs:
        metrics = {
            "rollout_s": _figure("s", run.wall_s),
            "events_per_s": _figure("events/s", run.events_per_s),
            "broker_messages": _figure("messages", run.broker_messages),
            "operator_cpu_s": _figure("s", run.operator_cpu_s),
        }
        if run.converge_s is not None:
            metrics["converge_s"] = _figure("s", run.converge_s)
        for w in run.waves:
            if w["time_s"] is not None:
                metrics[f"wave{w['wave']}_s"] = _figure("s", w["time_s"])
        records.append(
            BenchRecord(
                **base,
                scenario=f"rollout-{run.name}",
                metrics=metrics,
                peak_rss_mb=run.operator_peak_rss_mb,
                error="; ".join(run.problems) or None,
            )
        )
    status = {f"status_{n}_s": _figure("s", s) for n, s in result.status_s.items()}
    records.append(BenchRecord(**base, scenario="fleet-status", metrics=status))
    return records


__all__ = ["fleet_records", "fleet_table"]
