"""Staged rollouts: waves over a group, stopping and rolling back when failures pile up.

Waves are a canary share then batches growing by a factor, or cumulative percentages (1, 10, 50,
100). A wave publishes one signed desired state per device and waits for each device's terminal
state. When the failed share of the devices tried so far passes the threshold, the rollout stops,
puts the failed wave's devices back on the bundle each ran before (a new desired state pointing at
it), and reports; earlier waves keep the new version, later waves are never touched.

The rollout runs as a state machine (rollout_machine.py): one handler per step, the step written to
the history before it runs, so `run()` on an unfinished rollout resumes in the step the killed
process was in: published messages are not sent twice, devices that finished are not waited for
again, outcomes that arrived meanwhile are read from the devices' retained reported state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from build_side.fleet.broker import BrokerSession
from build_side.fleet.catalog import resolve_bundle
from build_side.fleet.desired import build_desired, desired_payload
from build_side.fleet.errors import FleetError, RolloutError
from build_side.fleet.history import History
from build_side.fleet.rollout_machine import ADVANCES, TERMINAL, Outcome, Step, next_step
from build_side.fleet.rollout_plan import plan_percent_waves, plan_waves
from build_side.fleet.rollout_store import DeviceRow, RolloutParams, RolloutRow, RolloutStore, Send
from build_side.fleet.topics import device_topic
from build_side.fleet.watch import FleetWatch
from build_side.fleet.watch import Outcome as DeviceOutcome
from edge_agent.contracts import BundleRef, DesiredState
from edge_agent.signing import SigningKey

Progress = Callable[[str], None]
StepHook = Callable[[Step, int], None]
Handler = Callable[[RolloutRow, int], Outcome]


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
            "step": str(self.rollout.step),
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
        on_step: StepHook | None = None,
    ) -> None:
        self.watch = watch
        self.session: BrokerSession = watch.session
        self.history = history
        self.store = RolloutStore(history)
        self.registry = registry
        self.key = key
        self.say = progress or (lambda _msg: None)
        self.on_step = on_step or (lambda _step, _wave: None)
        self._resolved: dict[str, BundleRef | None] = {}
        self.handlers: dict[Step, Handler] = {
            Step.PLANNED: self._planned,
            Step.DEPLOYING: self._deploying,
            Step.WAITING: self._waiting,
            Step.EVALUATING: self._evaluating,
            Step.ROLLING_BACK: self._rolling_back,
        }

    # planning ----------------------------------------------------------------------------------------

    def start(self, group: str, bundle_ref: str, params: RolloutParams) -> str:
        """Plan a new rollout of `bundle_ref` over `group`, or return the unfinished one to resume."""
        bundle = resolve_bundle(self.registry, bundle_ref)
        fleet = self.session.fleet
        existing = self.store.unfinished(fleet, group, bundle)
        if existing:
            self.say(
                f"resuming rollout {existing.id} of {bundle.ref} over {group} "
                f"at {existing.step} (wave {existing.wave})"
            )
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
        waves = (
            plan_percent_waves(eligible, params.waves)
            if params.waves
            else plan_waves(eligible, params.canary, params.growth)
        )
        rollout_id = self.store.create(
            fleet=fleet, group=group, bundle=bundle, params=params, waves=waves, skipped=skipped
        )
        sizes = "+".join(str(len(w)) for w in waves) or "nothing"
        self.say(f"rollout {rollout_id}: {bundle.ref} over {group} ({len(members)} devices), waves {sizes}")
        for device, why in list(skipped.items())[:20]:
            self.say(f"  skip {device}: {why}")
        if len(skipped) > 20:
            self.say(f"  ... and {len(skipped) - 20} more skipped")
        return rollout_id

    def abandon(self, ro: RolloutRow, why: str) -> None:
        self.store.enter(ro.id, next_step(ro.step, Outcome.ABANDON), ro.wave, note=why)

    # running -----------------------------------------------------------------------------------------

    def run(self, rollout_id: str) -> RolloutReport:
        """Run the rollout's steps from the one recorded until a final one."""
        ro = self.store.get(rollout_id)
        step, wave = ro.step, ro.wave
        while step not in TERMINAL:
            self.store.enter(ro.id, step, wave, note=self._note(ro, step, wave))  # before the step runs
            self.on_step(step, wave)
            outcome = self.handlers[step](ro, wave)
            step = next_step(step, outcome)
            if outcome in ADVANCES:
                wave += 1
            if step in TERMINAL:
                self.store.enter(ro.id, step, wave, note=self._note(ro, step, wave))
                self.on_step(step, wave)
        return self.report(rollout_id)

    def _note(self, ro: RolloutRow, step: Step, wave: int) -> str | None:
        if step is Step.ROLLING_BACK:
            return f"stopped at wave {wave}"
        if step is Step.ROLLED_BACK:
            return f"stopped at wave {wave}; wave rolled back"
        if step is Step.SUCCEEDED:
            failed, tried = self.store.tally(ro.id, wave)
            if not tried:
                return "nothing to deploy: every device of the group was skipped"
            if failed:
                return f"every wave done; {failed} of {tried} devices failed, within the threshold"
            return "every wave succeeded"
        return None

    # one handler per step ----------------------------------------------------------------------------

    def _planned(self, ro: RolloutRow, idx: int) -> Outcome:
        return Outcome.OK if self.store.waves(ro.id) else Outcome.DONE

    def _deploying(self, ro: RolloutRow, idx: int) -> Outcome:
        """Publish the wave's desired states: recorded before they leave, marked after each PUBACK."""
        self.store.set_wave(ro.id, idx, "deploying")
        devices = self.store.devices(ro.id, idx)
        self.say(f"wave {idx}: {_names(devices)} -> {ro.bundle.ref}")
        for d in devices:
            if d.status == "publishing":  # killed between recording and PUBACK
                assert d.deployment_id
                self._republish_if_lost(ro, d.device, d.deployment_id)
                self.store.update_device(ro.id, d.device, status="published")
        pending = [d.device for d in devices if d.status == "pending"]
        states = self._sign(ro, [(dev, ro.bundle, f"{ro.id}-w{idx}-{dev}") for dev in pending])
        sends = [
            Send(dev, state, self._previous_bundle(dev)) for dev, state in zip(pending, states, strict=True)
        ]
        self._send(ro, sends, rollback=False)
        return Outcome.OK

    def _waiting(self, ro: RolloutRow, idx: int) -> Outcome:
        """Wait for the wave's devices that have not finished; each outcome is written as it comes."""
        targets = {
            d.device: d.deployment_id
            for d in self.store.devices(ro.id, idx)
            if d.status == "published" and d.deployment_id
        }
        if not targets:
            return Outcome.OK

        def record(out: DeviceOutcome) -> None:
            status = "succeeded" if out.succeeded else "failed"
            self.store.update_device(ro.id, out.device, status=status, detail=_describe(out))
            self.say(f"  {out.device}: {_describe(out)}")

        self.say(f"wave {idx}: waiting up to {ro.params.wave_timeout_s:.0f} s for {len(targets)} devices")
        self.watch.wait_for_outcomes(targets, ro.params.wave_timeout_s, on_outcome=record)
        return Outcome.OK

    def _evaluating(self, ro: RolloutRow, idx: int) -> Outcome:
        """Decide from the recorded outcomes: the next wave, done, or stop and roll this wave back."""
        devices = self.store.devices(ro.id, idx)
        wave_ok = all(d.status == "succeeded" for d in devices)
        self.store.set_wave(ro.id, idx, "succeeded" if wave_ok else "failed")
        failed, tried = self.store.tally(ro.id, idx)
        limit = ro.params.max_failed
        if not wave_ok and failed / max(tried, 1) > limit:
            self.say(
                f"wave {idx}: {failed}/{tried} devices failed, above the threshold {limit:.0%}; "
                "stopping and rolling this wave back"
            )
            return Outcome.ABORT
        if not wave_ok:
            self.say(
                f"wave {idx}: {failed}/{tried} failed so far, within the threshold {limit:.0%}; going on"
            )
        last = len(self.store.waves(ro.id)) - 1
        if idx >= last:
            self.say(f"rollout {ro.id}: every wave done")
            return Outcome.DONE
        return Outcome.NEXT_WAVE

    def _rolling_back(self, ro: RolloutRow, idx: int) -> Outcome:
        """Point each device of the wave back at what it ran before; wait for it to get there."""
        targets: dict[str, tuple[str, BundleRef]] = {}
        to_send: list[tuple[str, BundleRef, str]] = []
        for d in self.store.devices(ro.id, idx):
            if d.rollback_status in ("succeeded", "failed", "none"):
                continue
            if d.previous is None:
                self.store.update_device(ro.id, d.device, rollback_status="none")
                self.say(f"  {d.device}: ran no earlier version; left as it is")
                continue
            self.say(f"  {d.device}: back to {d.previous.ref}")
            if d.rollback_status is None:
                to_send.append((d.device, d.previous, f"{ro.id}-rb{idx}-{d.device}"))
                continue
            assert d.rollback_deployment_id
            if d.rollback_status == "publishing":
                self._republish_if_lost(ro, d.device, d.rollback_deployment_id)
                self.store.update_device(ro.id, d.device, rollback_status="published")
            targets[d.device] = (d.rollback_deployment_id, d.previous)
        states = self._sign(ro, to_send)
        self._send(
            ro, [Send(dev, st) for (dev, _, _), st in zip(to_send, states, strict=True)], rollback=True
        )
        targets |= {
            dev: (st.deployment_id, st.bundle) for (dev, _, _), st in zip(to_send, states, strict=True)
        }
        if targets:
            outcomes = self.watch.wait_for_outcomes(
                {dev: dep for dev, (dep, _) in targets.items()}, ro.params.wave_timeout_s
            )
            for device, out in outcomes.items():
                ok = out.succeeded or self._runs(device, targets[device][1])
                self.store.update_device(ro.id, device, rollback_status="succeeded" if ok else "failed")
                self.say(f"  {device}: rollback {'done' if ok else 'FAILED: ' + _describe(out)}")
        self.store.set_wave(ro.id, idx, "rolled-back")
        return Outcome.OK

    # helpers -----------------------------------------------------------------------------------------

    def _sign(self, ro: RolloutRow, items: list[tuple[str, BundleRef, str]]) -> list[DesiredState]:
        """Signed desired states for (device, bundle, deployment_id), with one block of revisions
        above everything the broker already carries."""
        if not items:
            return []
        floor = self.watch.refresh().highest_revision()
        revisions = self.history.next_revisions(ro.fleet, len(items), floor)
        return [
            build_desired(
                revision=revision,
                bundle=bundle,
                key=self.key,
                deployment_id=deployment_id,
                variant_policy=ro.params.variant_policy,
                policy=ro.params.policy,
            )
            for revision, (_, bundle, deployment_id) in zip(revisions, items, strict=True)
        ]

    def _send(self, ro: RolloutRow, sends: list[Send], rollback: bool) -> None:
        """Record the batch, publish each state retained at QoS 1 (PUBACK awaited), mark them published."""
        if not sends:
            return
        self.store.record_sending(ro.id, ro.fleet, sends, rollback=rollback)
        for send in sends:
            topic = device_topic(ro.fleet, send.device, "desired")
            self.session.publish(topic, desired_payload(send.state), retain=True)
        self.history.mark_published(*(s.state.deployment_id for s in sends))
        status = "rollback_status" if rollback else "status"
        self.store.mark(ro.id, [s.device for s in sends], **{status: "published"})

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
        if active not in self._resolved:  # one registry read per version, not per device
            try:
                self._resolved[active] = resolve_bundle(self.registry, active)
            except FleetError as exc:
                self.say(f"  cannot find {active} in the registry ({exc})")
                self._resolved[active] = None
        return self._resolved[active]

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


def _names(devices: list[DeviceRow], most: int = 10) -> str:
    names = [d.device for d in devices[:most]]
    return ", ".join(names) + (f" and {len(devices) - most} more" if len(devices) > most else "")


def _describe(out: DeviceOutcome) -> str:
    state = str(out.state) if out.state else "TIMEOUT"
    return f"{state}: {out.detail}" if out.detail else state


__all__ = ["RolloutReport", "RolloutRunner", "load_report", "plan_percent_waves", "plan_waves"]
