"""Rollout state in the history database: the plan, the step it is in, each wave, each device.

The step and its wave are written before the step runs (rollout_machine.py); each device's step is
written before it is taken ("publishing") and after it is confirmed ("published"), and its outcome
as soon as it is known, so a rollout resumed after its process was killed knows exactly which
messages may or may not have left and which devices are done.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from build_side.fleet.db import tables
from build_side.fleet.desired import desired_document
from build_side.fleet.errors import RolloutError
from build_side.fleet.history import History, deployment_values, now_iso
from build_side.fleet.rollout_machine import STATUS, TERMINAL, Step
from build_side.fleet.rollout_plan import check_percents
from edge_agent.contracts import BundleRef, DeploymentPolicy, DesiredState, VariantPolicy

FINISHED = tuple(STATUS[s] for s in TERMINAL)


class RolloutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary: float = Field(0.1, gt=0, description="first wave: a share of the group (<1) or a count (>=1)")
    growth: float = Field(2.0, ge=1, description="each later wave is this many times the one before")
    waves: list[float] | None = Field(
        None, description="cumulative percentages of the group per wave, e.g. [1, 10, 50, 100]; "
        "replaces canary and growth"
    )  # fmt: skip
    wave_timeout_s: float = Field(600.0, gt=0, description="how long a wave waits for its devices")
    max_failed: float = Field(
        0.0, ge=0, le=1, description="stop once failed / attempted devices is above this share"
    )
    include_offline: bool = False
    variant_policy: VariantPolicy = Field(default_factory=VariantPolicy)
    policy: DeploymentPolicy = Field(default_factory=DeploymentPolicy)

    @field_validator("waves")
    @classmethod
    def _percents(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else check_percents(v)


@dataclass
class RolloutRow:
    id: str
    fleet: str
    group: str
    bundle: BundleRef
    params: RolloutParams
    status: str
    created: str
    updated: str
    note: str
    step: Step
    wave: int


@dataclass
class WaveRow:
    idx: int
    status: str
    started: str | None
    finished: str | None


@dataclass
class DeviceRow:
    device: str
    wave: int  # -1: not in any wave (skipped)
    previous: BundleRef | None
    deployment_id: str | None
    status: str
    detail: str
    rollback_deployment_id: str | None
    rollback_status: str | None


@dataclass(frozen=True)
class Send:
    """A signed desired state for one device of a rollout, and what the device ran before it."""

    device: str
    state: DesiredState
    previous: BundleRef | None = None


DEVICE_FIELDS = frozenset(
    {"previous", "deployment_id", "status", "detail", "rollback_deployment_id", "rollback_status"}
)


class RolloutStore:
    def __init__(self, history: History) -> None:
        self.history = history

    def create(
        self,
        *,
        fleet: str,
        group: str,
        bundle: BundleRef,
        params: RolloutParams,
        waves: list[list[str]],
        skipped: dict[str, str],
    ) -> str:
        rollout_id = f"ro-{uuid.uuid4().hex[:8]}"
        now = now_iso()
        members = [
            {"rollout_id": rollout_id, "device": d, "wave": idx, "status": "pending", "detail": ""}
            for idx, devices in enumerate(waves)
            for d in devices
        ] + [
            {"rollout_id": rollout_id, "device": d, "wave": -1, "status": "skipped", "detail": why}
            for d, why in skipped.items()
        ]
        with self.history.write() as conn:
            conn.execute(
                tables.rollouts.insert().values(
                    id=rollout_id,
                    fleet=fleet,
                    grp=group,
                    bundle=bundle.model_dump_json(),
                    params=params.model_dump_json(),
                    status=STATUS[Step.PLANNED],
                    created=now,
                    updated=now,
                    note="",
                    step=Step.PLANNED.value,
                    wave=0,
                )
            )
            if waves:
                conn.execute(
                    tables.waves.insert(),
                    [{"rollout_id": rollout_id, "idx": i, "status": "pending"} for i in range(len(waves))],
                )
            if members:
                conn.execute(tables.rollout_devices.insert(), members)
        return rollout_id

    def get(self, rollout_id: str) -> RolloutRow:
        with self.history.read() as conn:
            row = conn.execute(sa.select(tables.rollouts).where(tables.rollouts.c.id == rollout_id)).first()
        if row is None:
            raise RolloutError(f"no rollout {rollout_id!r} in {self.history.where}")
        return _rollout(row)

    def list(self, fleet: str, limit: int = 20) -> list[RolloutRow]:
        with self.history.read() as conn:
            rows = conn.execute(
                sa.select(tables.rollouts)
                .where(tables.rollouts.c.fleet == fleet)
                .order_by(tables.rollouts.c.created.desc(), tables.rollouts.c.id.desc())
                .limit(limit)
            ).all()
        return [_rollout(r) for r in rows]

    def unfinished(self, fleet: str, group: str, bundle: BundleRef) -> RolloutRow | None:
        with self.history.read() as conn:
            rows = conn.execute(
                sa.select(tables.rollouts)
                .where(
                    tables.rollouts.c.fleet == fleet,
                    tables.rollouts.c.grp == group,
                    tables.rollouts.c.step.not_in([s.value for s in TERMINAL]),
                )
                .order_by(tables.rollouts.c.created.desc(), tables.rollouts.c.id.desc())
            ).all()
        return next((r for r in map(_rollout, rows) if r.bundle.ref == bundle.ref), None)

    def enter(self, rollout_id: str, step: Step, wave: int, note: str | None = None) -> None:
        """Write the step the rollout is about to run (and its listed status) before it runs."""
        values: dict[str, object] = {
            "step": step.value,
            "wave": wave,
            "status": STATUS[step],
            "updated": now_iso(),
        }
        if note is not None:
            values["note"] = note
        with self.history.write() as conn:
            conn.execute(tables.rollouts.update().where(tables.rollouts.c.id == rollout_id).values(**values))

    def waves(self, rollout_id: str) -> list[WaveRow]:
        with self.history.read() as conn:
            rows = conn.execute(
                sa.select(tables.waves)
                .where(tables.waves.c.rollout_id == rollout_id)
                .order_by(tables.waves.c.idx)
            ).all()
        return [WaveRow(r.idx, r.status, r.started, r.finished) for r in rows]

    def set_wave(self, rollout_id: str, idx: int, status: str) -> None:
        column = tables.waves.c.started if status == "deploying" else tables.waves.c.finished
        with self.history.write() as conn:
            conn.execute(
                tables.waves.update()
                .where(tables.waves.c.rollout_id == rollout_id, tables.waves.c.idx == idx)
                .values({tables.waves.c.status: status, column: sa.func.coalesce(column, now_iso())})
            )

    def devices(self, rollout_id: str, wave: int | None = None) -> list[DeviceRow]:
        query = sa.select(tables.rollout_devices).where(tables.rollout_devices.c.rollout_id == rollout_id)
        if wave is not None:
            query = query.where(tables.rollout_devices.c.wave == wave)
        with self.history.read() as conn:
            rows = conn.execute(
                query.order_by(tables.rollout_devices.c.wave, tables.rollout_devices.c.device)
            ).all()
        return [
            DeviceRow(
                device=r.device,
                wave=r.wave,
                previous=BundleRef.model_validate_json(r.previous) if r.previous else None,
                deployment_id=r.deployment_id,
                status=r.status,
                detail=r.detail,
                rollback_deployment_id=r.rollback_deployment_id,
                rollback_status=r.rollback_status,
            )
            for r in rows
        ]

    def tally(self, rollout_id: str, upto_wave: int) -> tuple[int, int]:
        """(failed, tried): devices of waves 0..upto_wave that failed, and all that finished."""
        finished = tables.rollout_devices.c.status.in_(["succeeded", "failed"])
        failed = sa.func.sum(sa.case((tables.rollout_devices.c.status == "failed", 1), else_=0))
        with self.history.read() as conn:
            row = conn.execute(
                sa.select(sa.func.coalesce(failed, 0), sa.func.count()).where(
                    tables.rollout_devices.c.rollout_id == rollout_id,
                    tables.rollout_devices.c.wave.between(0, upto_wave),
                    finished,
                )
            ).one()
        return int(row[0]), int(row[1])

    def record_sending(self, rollout_id: str, fleet: str, sends: list[Send], rollback: bool = False) -> None:
        """Before a batch of desired states leaves: each recorded in `deployments`, and its device
        marked `publishing` with it (and, for a deployment, the bundle the device ran before), in
        one transaction, so a restart finds either nothing sent or every one of them accounted for."""
        id_col, status_col = (
            ("rollback_deployment_id", "rollback_status") if rollback else ("deployment_id", "status")
        )
        devices = tables.rollout_devices
        with self.history.write() as conn:
            conn.execute(
                tables.deployments.insert(),
                [
                    deployment_values(fleet, "device", s.device, desired_document(s.state), rollout_id)
                    for s in sends
                ],
            )
            for s in sends:
                values: dict[str, object] = {id_col: s.state.deployment_id, status_col: "publishing"}
                if not rollback:
                    values["previous"] = s.previous.model_dump_json() if s.previous else None
                conn.execute(
                    devices.update()
                    .where(devices.c.rollout_id == rollout_id, devices.c.device == s.device)
                    .values(values)
                )

    def mark(self, rollout_id: str, devices: list[str], **fields: object) -> None:
        """Set the same fields on several devices of a rollout in one statement."""
        if not fields or set(fields) - DEVICE_FIELDS:
            raise ValueError(f"cannot update {sorted(set(fields) - DEVICE_FIELDS)}")
        table = tables.rollout_devices
        with self.history.write() as conn:
            conn.execute(
                table.update()
                .where(table.c.rollout_id == rollout_id, table.c.device.in_(devices))
                .values(**fields)
            )

    def update_device(self, rollout_id: str, device: str, **fields: object) -> None:
        if not fields or set(fields) - DEVICE_FIELDS:
            raise ValueError(f"cannot update {sorted(set(fields) - DEVICE_FIELDS)}")
        values = {k: v.model_dump_json() if isinstance(v, BundleRef) else v for k, v in fields.items()}
        with self.history.write() as conn:
            conn.execute(
                tables.rollout_devices.update()
                .where(
                    tables.rollout_devices.c.rollout_id == rollout_id,
                    tables.rollout_devices.c.device == device,
                )
                .values(**values)
            )


def _rollout(r: sa.Row) -> RolloutRow:
    return RolloutRow(
        id=r.id,
        fleet=r.fleet,
        group=r.grp,
        bundle=BundleRef.model_validate_json(r.bundle),
        params=RolloutParams.model_validate(json.loads(r.params)),
        status=r.status,
        created=r.created,
        updated=r.updated,
        note=r.note,
        step=Step(r.step),
        wave=r.wave,
    )


__all__ = ["FINISHED", "DeviceRow", "RolloutParams", "RolloutRow", "RolloutStore", "Send", "WaveRow"]
