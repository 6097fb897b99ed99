"""Rollout state in the history database: the plan, each wave, each device's step (for resuming).

Every step is written before it is taken ("publishing") and after it is confirmed ("published"), so
a rollout resumed after its process was stopped knows exactly which messages may or may not have left.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from build_side.fleet.errors import RolloutError
from build_side.fleet.history import History, now_iso
from edge_agent.contracts import BundleRef, DeploymentPolicy, VariantPolicy

FINISHED = ("succeeded", "rolled-back", "stopped", "abandoned")


class RolloutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    canary: float = Field(0.1, gt=0, description="first wave: a share of the group (<1) or a count (>=1)")
    growth: float = Field(2.0, ge=1, description="each later wave is this many times the one before")
    wave_timeout_s: float = Field(600.0, gt=0, description="how long a wave waits for its devices")
    max_failed: float = Field(
        0.0, ge=0, le=1, description="stop once failed / attempted devices is above this share"
    )
    include_offline: bool = False
    variant_policy: VariantPolicy = Field(default_factory=VariantPolicy)
    policy: DeploymentPolicy = Field(default_factory=DeploymentPolicy)


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
        with self.history.transaction() as db:
            db.execute(
                "INSERT INTO rollouts (id, fleet, grp, bundle, params, status, created, updated) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (rollout_id, fleet, group, bundle.model_dump_json(), params.model_dump_json(), now, now),
            )
            for idx, devices in enumerate(waves):
                db.execute(
                    "INSERT INTO waves (rollout_id, idx, status) VALUES (?, ?, 'pending')",
                    (rollout_id, idx),
                )
                for device in devices:
                    db.execute(
                        "INSERT INTO rollout_devices (rollout_id, device, wave, status) "
                        "VALUES (?, ?, ?, 'pending')",
                        (rollout_id, device, idx),
                    )
            for device, why in skipped.items():
                db.execute(
                    "INSERT INTO rollout_devices (rollout_id, device, wave, status, detail) "
                    "VALUES (?, ?, -1, 'skipped', ?)",
                    (rollout_id, device, why),
                )
        return rollout_id

    def get(self, rollout_id: str) -> RolloutRow:
        rows = self.history.query("SELECT * FROM rollouts WHERE id = ?", (rollout_id,))
        if not rows:
            raise RolloutError(f"no rollout {rollout_id!r} in {self.history.path}")
        return _rollout(rows[0])

    def list(self, fleet: str, limit: int = 20) -> list[RolloutRow]:
        rows = self.history.query(
            "SELECT * FROM rollouts WHERE fleet = ? ORDER BY created DESC, rowid DESC LIMIT ?", (fleet, limit)
        )
        return [_rollout(r) for r in rows]

    def unfinished(self, fleet: str, group: str, bundle: BundleRef) -> RolloutRow | None:
        for r in self.history.query(
            "SELECT * FROM rollouts WHERE fleet = ? AND grp = ? ORDER BY rowid DESC", (fleet, group)
        ):
            row = _rollout(r)
            if row.status not in FINISHED and row.bundle.ref == bundle.ref:
                return row
        return None

    def set_status(self, rollout_id: str, status: str, note: str | None = None) -> None:
        with self.history.transaction() as db:
            db.execute(
                "UPDATE rollouts SET status = ?, updated = ?, note = COALESCE(?, note) WHERE id = ?",
                (status, now_iso(), note, rollout_id),
            )

    def waves(self, rollout_id: str) -> list[WaveRow]:
        rows = self.history.query("SELECT * FROM waves WHERE rollout_id = ? ORDER BY idx", (rollout_id,))
        return [WaveRow(r["idx"], r["status"], r["started"], r["finished"]) for r in rows]

    def set_wave(self, rollout_id: str, idx: int, status: str) -> None:
        column = "started" if status == "deploying" else "finished"
        with self.history.transaction() as db:
            db.execute(
                f"UPDATE waves SET status = ?, {column} = COALESCE({column}, ?) "
                "WHERE rollout_id = ? AND idx = ?",
                (status, now_iso(), rollout_id, idx),
            )

    def devices(self, rollout_id: str, wave: int | None = None) -> list[DeviceRow]:
        sql, args = "SELECT * FROM rollout_devices WHERE rollout_id = ?", [rollout_id]
        if wave is not None:
            sql, args = sql + " AND wave = ?", [*args, wave]
        rows = self.history.query(sql + " ORDER BY wave, device", tuple(args))
        return [
            DeviceRow(
                device=r["device"],
                wave=r["wave"],
                previous=BundleRef.model_validate_json(r["previous"]) if r["previous"] else None,
                deployment_id=r["deployment_id"],
                status=r["status"],
                detail=r["detail"],
                rollback_deployment_id=r["rollback_deployment_id"],
                rollback_status=r["rollback_status"],
            )
            for r in rows
        ]

    def update_device(self, rollout_id: str, device: str, **fields: object) -> None:
        allowed = {
            "previous",
            "deployment_id",
            "status",
            "detail",
            "rollback_deployment_id",
            "rollback_status",
        }
        if not fields or set(fields) - allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        values = [v.model_dump_json() if isinstance(v, BundleRef) else v for v in fields.values()]
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self.history.transaction() as db:
            db.execute(
                f"UPDATE rollout_devices SET {assignments} WHERE rollout_id = ? AND device = ?",
                (*values, rollout_id, device),
            )


def _rollout(r) -> RolloutRow:  # type: ignore[no-untyped-def]
    return RolloutRow(
        id=r["id"],
        fleet=r["fleet"],
        group=r["grp"],
        bundle=BundleRef.model_validate_json(r["bundle"]),
        params=RolloutParams.model_validate(json.loads(r["params"])),
        status=r["status"],
        created=r["created"],
        updated=r["updated"],
        note=r["note"],
    )


__all__ = ["FINISHED", "DeviceRow", "RolloutParams", "RolloutRow", "RolloutStore", "WaveRow"]
