"""Staged rollouts: a canary share of a group first, then growing waves, stopping when failures pile up.

A wave publishes one signed desired state per device and waits for each device's terminal state.
When the failed share of the devices tried so far passes the threshold, the rollout stops, puts the
failed wave's devices back on the bundle each ran before (a new desired state pointing at it), and
reports; earlier successful waves keep the new version, later waves are never touched.

Everything is kept in SQLite (rollout_store), so `run()` on an unfinished rollout resumes where the
stopped process left off: published messages are not sent twice, outcomes that arrived meanwhile are
read from the devices' retained reported state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from build_side.fleet.broker import BrokerSession
from build_side.fleet.catalog import resolve_bundle
from build_side.fleet.deploy import publish_desired, sign_for
from build_side.fleet.desired import desired_payload
from build_side.fleet.errors import FleetError, RolloutError
from build_side.fleet.history import History
from build_side.fleet.rollout_store import DeviceRow, RolloutParams, RolloutRow, RolloutStore
from build_side.fleet.topics import device_topic
from build_side.fleet.watch import FleetWatch, Outcome
from edge_agent.contracts import BundleRef, DesiredState
from edge_agent.signing import SigningKey

Progress = Callable[[str], None]


def plan_waves(devices: list[str], canary: float, growth: float) -> list[list[str]]:
    """Split devices (in order) into waves: the canary, then batches growing by `growth`."""
    if not devices:
        return []
    n = len(devices)
    size = int(canary) if canary >= 1 else math.ceil(n * canary)
    size = min(max(size, 1), n)
    waves, i = [], 0
    while i < n:
        waves.append(devices[i : i + size])
        i += size
        size = max(size + 1, math.ceil(size * growth))
    return waves


@dataclass
class RolloutReport:
    rollout: RolloutRow
    waves: list[tuple[int, str, list[DeviceRow]]]
    skipped: list[DeviceRow]

    @property
    def ok(self) -> bool:
        return self.rollout.status == "succeeded"

    def to_json(self) -> dict:
        def dev(d: DeviceRow) -> dict:
            return {
                "device": d.device,
                "status": d.status,
                "detail": d.detail,
                "previous": d.previous.ref if d.previous else None,
                "deployment_id": d.deployment_id,
                "rollback_status": d.rollback_status,
                "rollback_deployment_id": d.rollback_deployment_id,
            }

        return {
            "id": self.rollout.id,
            "fleet": self.rollout.fleet,
            "group": self.rollout.group,
            "bundle": self.rollout.bundle.ref,
            "status": self.rollout.status,
            "note": self.rollout.note,
            "waves": [
                {"wave": idx, "status": status, "devices": [dev(d) for d in devices]}
                for idx, status, devices in self.waves
            ],
            "skipped": [dev(d) for d in self.skipped],
        }


class RolloutRunner:
    def __init__(
        self,
        *,
        watch: FleetWatch,
        history: History,
        registry: str,
        key: SigningKey,
        progress: Progress | None = None,
    ) -> None:
        self.watch = watch
        self.session: BrokerSession = watch.session
        self.history = history
        self.store = RolloutStore(history)
        self.registry = registry
        self.key = key
        self.say = progress or (lambda _msg: None)

    # planning ----------------------------------------------------------------------------------------

    def start(self, group: str, bundle_ref: str, params: RolloutParams) -> str:
        """Plan a new rollout of `bundle_ref` over `group`, or return the unfinished one to resume."""
        bundle = resolve_bundle(self.registry, bundle_ref)
        fleet = self.session.fleet
        existing = self.store.unfinished(fleet, group, bundle)
        if existing:
            self.say(f"resuming rollout {existing.id} ({existing.status}) of {bundle.ref} over {group}")
            return existing.id
        snap = self.watch.refresh()
        members = snap.members(group)
        if not members:
            raise RolloutError(f"no device of fleet {fleet!r} reports group {group!r}")
        eligible, skipped = [], {}
        for device in members:
            view = snap.devices[device]
            if view.active_bundle == bundle.ref:
                skipped[device] = f"already runs {bundle.ref}"
            elif view.online is False and not params.include_offline:
                skipped[device] = "offline"
            else:
                eligible.append(device)
        waves = plan_waves(eligible, params.canary, params.growth)
        rollout_id = self.store.create(
            fleet=fleet, group=group, bundle=bundle, params=params, waves=waves, skipped=skipped
        )
        sizes = "+".join(str(len(w)) for w in waves) or "nothing"
        self.say(f"rollout {rollout_id}: {bundle.ref} over {group} ({len(members)} devices), waves {sizes}")
        for device, why in skipped.items():
            self.say(f"  skip {device}: {why}")
        return rollout_id

    # running -----------------------------------------------------------------------------------------

    def run(self, rollout_id: str) -> RolloutReport:
        ro = self.store.get(rollout_id)
        if ro.status in ("running", "rolling-back"):
            self._drive(ro)
        return self.report(rollout_id)

    def _drive(self, ro: RolloutRow) -> None:
        params = ro.params
        tried = failed = 0
        for wave in self.store.waves(ro.id):
            devices = self.store.devices(ro.id, wave.idx)
            if wave.status in ("pending", "deploying"):
                self.store.set_wave(ro.id, wave.idx, "deploying")
                self.say(f"wave {wave.idx}: {', '.join(d.device for d in devices)} -> {ro.bundle.ref}")
                self._deploy_wave(ro, wave.idx, devices)
                devices = self.store.devices(ro.id, wave.idx)
                wave_ok = all(d.status == "succeeded" for d in devices)
                self.store.set_wave(ro.id, wave.idx, "succeeded" if wave_ok else "failed")
                wave.status = "succeeded" if wave_ok else "failed"
            tried += len(devices)
            failed += sum(d.status == "failed" for d in devices)
            if wave.status == "succeeded":
                continue
            share = failed / tried if tried else 0.0
            if wave.status == "failed" and share <= params.max_failed:
                self.say(
                    f"wave {wave.idx}: {failed}/{tried} failed so far, within the threshold "
                    f"{params.max_failed:.0%}; going on"
                )
                continue
            if wave.status == "failed":
                self.say(
                    f"wave {wave.idx}: {failed}/{tried} devices failed, above the threshold "
                    f"{params.max_failed:.0%}; stopping and rolling this wave back"
                )
                self.store.set_status(ro.id, "rolling-back", f"stopped at wave {wave.idx}")
            self._roll_back_wave(ro, wave.idx)
            self.store.set_wave(ro.id, wave.idx, "rolled-back")
            self.store.set_status(ro.id, "rolled-back", f"stopped at wave {wave.idx}; wave rolled back")
            return
        self.store.set_status(ro.id, "succeeded", "every wave succeeded")
        self.say(f"rollout {ro.id}: every wave succeeded")

    def _deploy_wave(self, ro: RolloutRow, idx: int, devices: list[DeviceRow]) -> None:
        snap = self.watch.refresh()
        targets: dict[str, str] = {}
        for d in devices:
            if d.status == "pending":
                previous = self._previous_bundle(d.device)
                state = self._sign(ro, ro.bundle, f"{ro.id}-w{idx}-{d.device}", snap.highest_revision())
                self.store.update_device(
                    ro.id, d.device, previous=previous, deployment_id=state.deployment_id, status="publishing"
                )
                self._publish(ro, d.device, state)
                self.store.update_device(ro.id, d.device, status="published")
                targets[d.device] = state.deployment_id
            elif d.status == "publishing":
                assert d.deployment_id
                self._republish_if_lost(ro, d.device, d.deployment_id)
                self.store.update_device(ro.id, d.device, status="published")
                targets[d.device] = d.deployment_id
            elif d.status == "published":
                assert d.deployment_id
                targets[d.device] = d.deployment_id
        if not targets:
            return
        self.say(f"wave {idx}: waiting up to {ro.params.wave_timeout_s:.0f} s for {len(targets)} devices")
        outcomes = self.watch.wait_for_outcomes(targets, ro.params.wave_timeout_s)
        for device, out in outcomes.items():
            status = "succeeded" if out.succeeded else "failed"
            self.store.update_device(ro.id, device, status=status, detail=_describe(out))
            self.say(f"  {device}: {_describe(out)}")

    def _roll_back_wave(self, ro: RolloutRow, idx: int) -> None:
        snap = self.watch.refresh()
        targets: dict[str, tuple[str, BundleRef]] = {}
        for d in self.store.devices(ro.id, idx):
            if d.rollback_status in ("succeeded", "failed", "none"):
                continue
            if d.previous is None:
                self.store.update_device(ro.id, d.device, rollback_status="none")
                self.say(f"  {d.device}: ran no earlier version; left as it is")
                continue
            if d.rollback_status is None:
                state = self._sign(ro, d.previous, f"{ro.id}-rb{idx}-{d.device}", snap.highest_revision())
                self.store.update_device(
                    ro.id, d.device, rollback_deployment_id=state.deployment_id, rollback_status="publishing"
                )
                self._publish(ro, d.device, state)
                self.store.update_device(ro.id, d.device, rollback_status="published")
                targets[d.device] = (state.deployment_id, d.previous)
            else:
                assert d.rollback_deployment_id
                if d.rollback_status == "publishing":
                    self._republish_if_lost(ro, d.device, d.rollback_deployment_id)
                    self.store.update_device(ro.id, d.device, rollback_status="published")
                targets[d.device] = (d.rollback_deployment_id, d.previous)
            self.say(f"  {d.device}: back to {d.previous.ref}")
        if not targets:
            return
        outcomes = self.watch.wait_for_outcomes(
            {dev: dep for dev, (dep, _) in targets.items()}, ro.params.wave_timeout_s
        )
        for device, out in outcomes.items():
            back_on = self._runs(device, targets[device][1])
            ok = out.succeeded or back_on
            self.store.update_device(ro.id, device, rollback_status="succeeded" if ok else "failed")
            self.say(f"  {device}: rollback {'done' if ok else 'FAILED: ' + _describe(out)}")

    # helpers -----------------------------------------------------------------------------------------

    def _sign(self, ro: RolloutRow, bundle: BundleRef, deployment_id: str, floor: int) -> DesiredState:
        return sign_for(
            history=self.history,
            fleet=ro.fleet,
            bundle=bundle,
            key=self.key,
            floor=floor,
            variant_policy=ro.params.variant_policy,
            policy=ro.params.policy,
            deployment_id=deployment_id,
        )

    def _publish(self, ro: RolloutRow, device: str, state: DesiredState) -> None:
        publish_desired(
            session=self.session,
            history=self.history,
            target_kind="device",
            target=device,
            state=state,
            rollout_id=ro.id,
        )

    def _republish_if_lost(self, ro: RolloutRow, device: str, deployment_id: str) -> None:
        """After a stop between recording and PUBACK: publish again only if the broker lacks it."""
        view = self.watch.refresh().devices.get(device)
        if view and view.desired and view.desired.deployment_id == deployment_id:
            return
        row = self.history.deployment(deployment_id)
        if row is None:
            raise RolloutError(f"{deployment_id}: recorded in the rollout but not in the history")
        state = DesiredState.model_validate(row.document)
        self.session.publish(device_topic(ro.fleet, device, "desired"), desired_payload(state), retain=True)
        self.history.mark_published(deployment_id)

    def _previous_bundle(self, device: str) -> BundleRef | None:
        """The full reference of what the device runs now: its retained desired state, or the registry."""
        view = self.watch.snapshot.devices.get(device)
        active = view.active_bundle if view else None
        if not active:
            return None
        candidates = [view.desired] if view and view.desired else []
        candidates += [s for g, s in self.watch.snapshot.group_desired.items() if view and g in view.groups]
        for state in candidates:
            if state and state.bundle.ref == active:
                return state.bundle
        try:
            return resolve_bundle(self.registry, active)
        except FleetError as exc:
            self.say(f"  {device}: cannot find its current {active} in the registry ({exc})")
            return None

    def _runs(self, device: str, bundle: BundleRef) -> bool:
        view = self.watch.refresh().devices.get(device)
        return bool(view and view.active_bundle == bundle.ref)

    def report(self, rollout_id: str) -> RolloutReport:
        return load_report(self.store, rollout_id)


def load_report(store: RolloutStore, rollout_id: str) -> RolloutReport:
    """A rollout as recorded: its waves with their devices, and the devices it skipped."""
    ro = store.get(rollout_id)
    devices = store.devices(rollout_id)
    waves = [(w.idx, w.status, [d for d in devices if d.wave == w.idx]) for w in store.waves(rollout_id)]
    return RolloutReport(ro, waves, [d for d in devices if d.wave < 0])


def _describe(out: Outcome) -> str:
    state = str(out.state) if out.state else "TIMEOUT"
    return f"{state}: {out.detail}" if out.detail else state


__all__ = ["RolloutReport", "RolloutRunner", "load_report", "plan_waves"]
