"""What each page shows, as plain data built from the library's own readers (no HTML here).

Fleet rows are `DeviceView.to_json()` (what `slmops fleet status --json` prints) plus the state the
filters use; a rollout is `load_report()` with each device's state taken live from its events when
the runner's own record has not caught up; the registry is the signed index and each manifest in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from build_side.fleet.history import History
from build_side.fleet.rollout import load_report
from build_side.fleet.rollout_store import DeviceRow, RolloutRow, RolloutStore
from build_side.fleet.status import DeviceView, FleetSnapshot
from edge_agent.contracts import TERMINAL_STATES, BenchRecord, DeploymentState, Event

# fleet ----------------------------------------------------------------------------------------------


def online_state(view: DeviceView) -> str:
    return {True: "online", False: "offline"}.get(view.online, "unknown")  # type: ignore[arg-type]


def fleet_row(view: DeviceView) -> dict[str, Any]:
    row = view.to_json()
    row["state"] = online_state(view)
    return row


def fleet_rows(snap: FleetSnapshot, group: str | None = None, state: str | None = None) -> list[dict]:
    views = [snap.devices[d] for d in sorted(snap.devices)]
    return [
        fleet_row(v)
        for v in views
        if (not group or group in v.groups) and (not state or online_state(v) == state)
    ]


def fleet_groups(snap: FleetSnapshot) -> list[str]:
    return sorted({g for v in snap.devices.values() for g in v.groups})


# rollouts -------------------------------------------------------------------------------------------

CATEGORIES = ("pending", "published", "in progress", "succeeded", "failed")
FAILED_STATES = frozenset(TERMINAL_STATES - {DeploymentState.SUCCEEDED})


@dataclass
class RolloutDevice:
    device: str
    category: str
    state: str  # the device's own last state for this deployment, or the runner's status
    detail: str
    rollback: str | None


@dataclass
class WaveView:
    idx: int
    status: str
    devices: list[RolloutDevice]

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES, 0)
        for d in self.devices:
            out[d.category] += 1
        return out

    @property
    def rolled_back(self) -> int:
        return sum(d.rollback == "succeeded" for d in self.devices)


@dataclass
class RolloutView:
    rollout: RolloutRow
    waves: list[WaveView]
    skipped: list[DeviceRow] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return sum(c["succeeded"] + c["failed"] for c in (w.counts for w in self.waves))

    @property
    def failed(self) -> int:
        return sum(w.counts["failed"] for w in self.waves)

    @property
    def failed_share(self) -> float:
        return self.failed / self.attempted if self.attempted else 0.0

    @property
    def over_threshold(self) -> bool:
        """The runner's rule: it stops once failed / attempted is above max_failed."""
        return self.failed_share > self.rollout.params.max_failed

    @property
    def stands(self) -> str:
        """Where the rollout is, in one sentence."""
        ro, n = self.rollout, len(self.waves)
        if ro.status not in ("running", "rolling-back"):
            return f"{ro.status}: {ro.note}" if ro.note else ro.status
        current = next((w for w in self.waves if w.status == "deploying"), None)
        current = current or next((w for w in self.waves if w.status == "pending"), None)
        if current is None:
            return ro.status
        c = current.counts
        where = (
            f"wave {current.idx + 1} of {n} {current.status}: {c['succeeded']} succeeded, "
            f"{c['failed']} failed, {c['in progress'] + c['published']} under way, {c['pending']} pending"
        )
        if ro.status == "rolling-back":
            return f"rolling back; {where}"
        if self.over_threshold:
            return f"{where}; failures are above the threshold, the rollout stops after this wave"
        return where


def device_category(d: DeviceRow, live: DeploymentState | None) -> tuple[str, str]:
    """(category, state): the runner's final word when it has one, else the device's latest event."""
    if d.status in ("succeeded", "failed"):
        return d.status, d.status
    if d.status == "pending" or d.deployment_id is None:
        return "pending", d.status
    if live is None:
        return "published", d.status
    if live == DeploymentState.SUCCEEDED:
        return "succeeded", str(live)
    if live in FAILED_STATES:
        return "failed", str(live)
    return "in progress", str(live)


def live_state(
    d: DeviceRow, snap: FleetSnapshot, states: dict[tuple[str, str], DeploymentState]
) -> DeploymentState | None:
    if d.deployment_id is None:
        return None
    found = states.get((d.device, d.deployment_id))
    if found is not None:
        return found
    view = snap.devices.get(d.device)
    rep = view.reported if view else None
    if rep and rep.last_deployment == d.deployment_id and rep.last_state:
        return rep.last_state
    return None


def rollout_view(
    store: RolloutStore,
    rollout_id: str,
    snap: FleetSnapshot,
    states: dict[tuple[str, str], DeploymentState],
) -> RolloutView:
    report = load_report(store, rollout_id)
    waves = []
    for idx, status, devices in report.waves:
        rows = []
        for d in devices:
            category, state = device_category(d, live_state(d, snap, states))
            rows.append(RolloutDevice(d.device, category, state, d.detail, d.rollback_status))
        waves.append(WaveView(idx, status, rows))
    return RolloutView(report.rollout, waves, report.skipped)


# device ---------------------------------------------------------------------------------------------

CHART_METRICS = (
    ("decode_tok_s", "decode tok/s"),
    ("ttft_ms", "TTFT ms"),
    ("peak_rss_mb", "peak RSS MB"),
)


def bench_value(record: BenchRecord, metric: str) -> float | None:
    if metric == "peak_rss_mb":
        return record.peak_rss_mb
    summary = record.metrics.get(metric)
    return summary.median if summary else None


@dataclass
class Series:
    label: str
    points: list[float | None]  # one per release, None where this series has no record


def bench_series(records: list[BenchRecord], metric: str) -> tuple[list[str], list[Series]]:
    """Releases in the order first measured, and one series per (variant, provider): its latest value."""
    releases: list[str] = []
    latest: dict[tuple[str, str], dict[str, float]] = {}
    for r in sorted(records, key=lambda r: r.time):
        if r.model not in releases:
            releases.append(r.model)
        value = bench_value(r, metric)
        if value is not None and not r.error:
            latest.setdefault((r.variant, r.provider), {})[r.model] = value
    series = [
        Series(f"{variant} {provider.removesuffix('ExecutionProvider')}", [v.get(m) for m in releases])
        for (variant, provider), v in sorted(latest.items())
    ]
    return releases, series


def device_events(history: History, fleet: str, device: str, limit: int = 200) -> list[Event]:
    """Newest first, as the timeline shows them."""
    return list(reversed(history.events(fleet, device=device, limit=limit)))


def merge_events(newest_first: list[Event], seen: list[Event]) -> list[Event]:
    """The recorded events plus those seen (oldest first) but not recorded yet, newest first."""
    have = {(e.deployment_id, e.seq) for e in newest_first}
    extra = [e for e in seen if (e.deployment_id, e.seq) not in have]
    return list(reversed(extra)) + newest_first


__all__ = [
    "CATEGORIES",
    "CHART_METRICS",
    "RolloutDevice",
    "RolloutView",
    "Series",
    "WaveView",
    "bench_series",
    "bench_value",
    "device_category",
    "device_events",
    "fleet_groups",
    "fleet_row",
    "fleet_rows",
    "live_state",
    "merge_events",
    "online_state",
    "rollout_view",
]
