"""How fleet things look in a terminal: the status table, event lines, bench side by side, rollouts."""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.table import Table

from build_side.fleet.rollout import RolloutReport
from build_side.fleet.status import FleetSnapshot, bench_line
from edge_agent.contracts import BenchRecord, DeploymentState, Event

STATE_STYLE = {
    DeploymentState.SUCCEEDED: "green",
    DeploymentState.FAILED: "red",
    DeploymentState.ROLLED_BACK: "yellow",
    DeploymentState.REJECTED: "red",
}


def ago(when: datetime | None) -> str:
    if when is None:
        return ""
    secs = (datetime.now(UTC) - when).total_seconds()
    if secs < 60:
        return f"{max(secs, 0):.0f}s ago"
    if secs < 3600:
        return f"{secs / 60:.0f}m ago"
    if secs < 86400:
        return f"{secs / 3600:.1f}h ago"
    return when.strftime("%Y-%m-%d %H:%M")


def short_provider(name: str) -> str:
    """`CPUExecutionProvider` -> `CPU` (tables are narrow; JSON keeps the full name)."""
    return name.removesuffix("ExecutionProvider") or name


def event_line(event: Event) -> str:
    """`12:00:01  dev-1  DOWNLOADING  tiny-chat@1.0.0  1.2/3.4 MB (1.1 MB reused)`."""
    style = STATE_STYLE.get(event.state, "cyan")
    parts = [
        event.time.astimezone().strftime("%H:%M:%S"),
        f"{event.device:<12}",
        f"[{style}]{event.state:<12}[/]",
        event.bundle or "",
    ]
    if event.variant:
        parts.append(f"{event.variant}/{event.provider}" if event.provider else event.variant)
    if event.progress and event.progress.total:
        p = event.progress
        moved = f"{p.done / 1e6:.1f}/{p.total / 1e6:.1f} MB"
        if p.reused:
            moved += f" ({p.reused / 1e6:.1f} MB reused)"
        parts.append(moved)
    if event.error:
        parts.append(f"[red]{event.error.code}[/]: {event.error.detail}")
    elif event.message:
        parts.append(event.message)
    return "  ".join(x for x in parts if x)


def bench_cell(record: BenchRecord, active_variant: str | None) -> str:
    """Two short lines (decode speed, TTFT); the variant only when it is not the active one."""
    m = {k: v.median for k, v in record.metrics.items()}
    lines = []
    if record.variant != active_variant:
        lines.append(record.variant)
    if "decode_tok_s" in m:
        lines.append(f"{m['decode_tok_s']:.1f} tok/s")
    if "ttft_ms" in m:
        lines.append(f"TTFT {m['ttft_ms']:.0f} ms")
    if record.error:
        lines.append("error")
    return "\n".join(lines) or bench_line(record, short=True)


def status_table(snap: FleetSnapshot) -> Table:
    """One row per device. The fleet is in the title (every row belongs to it; --json has it per device)."""
    t = Table(title=f"fleet {snap.fleet}: {len(snap.devices)} devices", box=box.SIMPLE_HEAD)
    for col, min_width in (
        ("device", None),
        ("online", None),
        ("groups", 6),
        ("active", 16),
        ("variant", None),
        ("EP", None),
        ("last event", 11),
        ("last bench", 10),
        ("seen", None),
    ):
        t.add_column(col, overflow="fold", min_width=min_width, no_wrap=min_width is None)
    for device in sorted(snap.devices):
        v = snap.devices[device]
        r = v.reported
        a = r.active if r else None
        online = {True: "[green]online[/]", False: "[red]offline[/]", None: "?"}[v.online]
        if v.last_event:
            e = v.last_event
            last = f"{e.state}" + (f"\n{e.error.code}" if e.error else "")
            if e.bundle and (not a or e.bundle != a.bundle):
                last += f"\n{e.bundle}"
        elif r and r.last_state:
            last = f"{r.last_state}" + (f"\n{r.last_error.code}" if r.last_error else "")
        else:
            last = ""
        t.add_row(
            device,
            online,
            ", ".join(v.groups),
            a.bundle if a else "-",
            a.variant if a else "",
            short_provider(a.provider) if a else "",
            last,
            bench_cell(v.last_bench, a.variant if a else None) if v.last_bench else "",
            "now" if v.online else ago(v.last_seen),
        )
    return t


METRICS = [
    ("ttft_ms", "TTFT ms"),
    ("prefill_tok_s", "prefill tok/s"),
    ("decode_tok_s", "decode tok/s"),
    ("tpot_ms", "TPOT ms"),
]


def bench_table(rows: list[tuple[str, BenchRecord]]) -> Table:
    t = Table(title="bench records from devices (medians)", box=box.SIMPLE_HEAD)
    for col in ("device", "model", "variant", "EP", "scenario"):
        t.add_column(col, no_wrap=True)
    for _, label in METRICS:
        t.add_column(label, justify="right")
    t.add_column("peak RSS MB", justify="right")
    t.add_column("RSS MB", justify="right")  # what the device holds with the model loaded
    t.add_column("measured", no_wrap=True)
    for device, rec in rows:
        figures = [f"{rec.metrics[k].median:.1f}" if k in rec.metrics else "" for k, _ in METRICS]
        t.add_row(
            device,
            rec.model,
            rec.variant,
            short_provider(rec.provider),
            rec.scenario,
            *figures,
            f"{rec.peak_rss_mb:.0f}" if rec.peak_rss_mb else "",
            f"{rec.rss_mb:.0f}" if rec.rss_mb else "",
            rec.time.astimezone().strftime("%m-%d %H:%M"),
        )
    return t


def rollout_table(report: RolloutReport) -> Table:
    ro = report.rollout
    t = Table(title=f"rollout {ro.id}: {ro.bundle.ref} over group {ro.group} - {ro.status} ({ro.step})")
    for col in ("wave", "device", "result", "was on", "rollback"):
        t.add_column(col, overflow="fold")
    for idx, status, devices in report.waves:
        for d in devices:
            style = "green" if d.status == "succeeded" else "red" if d.status == "failed" else ""
            result = f"[{style}]{d.status}[/]" if style else d.status
            if d.detail and d.status != "succeeded":
                result += f" {d.detail}"
            t.add_row(
                f"{idx} ({status})",
                d.device,
                result,
                d.previous.ref if d.previous else "-",
                d.rollback_status or "",
            )
    for d in report.skipped:
        t.add_row("-", d.device, f"skipped: {d.detail}", "", "")
    return t
