"""The rollout state machine: its table, how percentages become waves, and the exact steps a rollout
visits when it converges, when failures stay within the threshold, and when a wave crosses it
(scripted devices over the real broker, the runner in this process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_side.fleet.broker import BrokerSession
from build_side.fleet.history import History
from build_side.fleet.rollout import RolloutReport, RolloutRunner
from build_side.fleet.rollout_machine import (
    STATUS,
    TERMINAL,
    TRANSITIONS,
    Outcome,
    Step,
    TransitionError,
    next_step,
)
from build_side.fleet.rollout_plan import plan_percent_waves
from build_side.fleet.rollout_store import RolloutParams
from build_side.fleet.watch import FleetWatch
from edge_agent.signing import SigningKey


def test_the_table_reaches_every_step_and_every_live_step_has_a_way_out() -> None:
    reached, frontier = {Step.PLANNED}, [Step.PLANNED]
    while frontier:
        step = frontier.pop()
        for (src, _), dst in TRANSITIONS.items():
            if src == step and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(Step)
    assert not [key for key in TRANSITIONS if key[0] in TERMINAL]  # final steps are final
    assert set(STATUS) == set(Step)
    assert all(next_step(s, Outcome.ABANDON) == Step.ABANDONED for s in Step if s not in TERMINAL)
    with pytest.raises(TransitionError):
        next_step(Step.WAITING, Outcome.ABORT)  # only EVALUATING decides to stop


def test_percentages_become_waves() -> None:
    devs = [f"d{i}" for i in range(1000)]
    assert [len(w) for w in plan_percent_waves(devs, [1, 10, 50, 100])] == [10, 90, 400, 500]
    assert [len(w) for w in plan_percent_waves(devs[:10], [1, 10, 50, 100])] == [1, 1, 3, 5]
    assert [len(w) for w in plan_percent_waves(devs[:2], [1, 10, 50, 100])] == [1, 1]
    assert [d for w in plan_percent_waves(devs[:37], [5, 30, 100]) for d in w] == devs[:37]
    assert plan_percent_waves([], [100]) == []
    for bad in ([], [10, 50], [50, 10, 100], [0, 100], [10, 150]):
        with pytest.raises(ValueError, match="waves"):
            RolloutParams(waves=bad)


def run_rollout(
    fleet: str, registry: Path, key: SigningKey, db: Path, params: RolloutParams
) -> tuple[RolloutReport, list[tuple[str, int]]]:
    steps: list[tuple[str, int]] = []
    with History(db) as history, BrokerSession("mqtt://127.0.0.1:1883", fleet) as session:
        runner = RolloutRunner(
            watch=FleetWatch(session, history),
            history=history,
            registry=str(registry),
            key=key,
            on_step=lambda step, wave: steps.append((str(step), wave)),
        )
        report = runner.run(runner.start("lab", "tiny-chat@2.0.0", params))
    return report, steps


def wave_steps(*waves: int) -> list[tuple[str, int]]:
    return [(s, w) for w in waves for s in ("DEPLOYING", "WAITING", "EVALUATING")]


@pytest.mark.parametrize(
    ("failing", "max_failed", "status", "steps"),
    [
        ((), 0.0, "succeeded", [*wave_steps(0, 1, 2), ("SUCCEEDED", 2)]),
        (("dev-1",), 0.5, "succeeded", [*wave_steps(0, 1, 2), ("SUCCEEDED", 2)]),
        (("dev-1",), 0.0, "rolled-back", [*wave_steps(0, 1), ("ROLLING_BACK", 1), ("ROLLED_BACK", 1)]),
    ],
    ids=["converges", "within-threshold", "crosses-threshold"],
)
def test_the_steps_a_rollout_visits(
    fleet_id: str,
    registry: Path,
    signing_key: SigningKey,
    scripted,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    failing: tuple[str, ...],
    max_failed: float,
    status: str,
    steps: list[tuple[str, int]],
) -> None:
    devs = {
        f"dev-{i}": scripted(
            f"dev-{i}",
            groups=("lab",),
            active="tiny-chat@1.0.0",
            fail={"tiny-chat@2.0.0"} if f"dev-{i}" in failing else None,
        )
        for i in range(4)
    }
    params = RolloutParams(waves=[25, 50, 100], max_failed=max_failed, wave_timeout_s=20)
    report, visited = run_rollout(fleet_id, registry, signing_key, tmp_path / "f.db", params)
    assert visited == [("PLANNED", 0), *steps]
    assert report.rollout.status == status and report.rollout.step == Step(steps[-1][0])
    assert [[d.device for d in ds] for _, _, ds in report.waves] == [["dev-0"], ["dev-1"], ["dev-2", "dev-3"]]
    if status == "rolled-back":
        assert [s for _, s, _ in report.waves] == ["succeeded", "rolled-back", "pending"]
        assert report.rollout.note == "stopped at wave 1; wave rolled back"
        assert (
            devs["dev-1"].active == "tiny-chat@1.0.0" and devs["dev-1"].received[-1].bundle.version == "1.0.0"
        )
        assert devs["dev-2"].received == [] and devs["dev-3"].received == []  # later waves never touched
    elif failing:
        assert [s for _, s, _ in report.waves] == ["succeeded", "failed", "succeeded"]
        assert report.rollout.note == "every wave done; 1 of 4 devices failed, within the threshold"
        assert sorted(d for d, dev in devs.items() if dev.active == "tiny-chat@2.0.0") == [
            "dev-0",
            "dev-2",
            "dev-3",
        ]
    else:
        assert report.rollout.note == "every wave succeeded"
        assert all(dev.active == "tiny-chat@2.0.0" for dev in devs.values())
