"""The rollout state machine: steps, outcomes, and every allowed transition in one table.

A rollout is planned once (its waves and the devices in each are written with it), then run one
step at a time: each step's handler returns an `Outcome`, and `next_step` looks the pair up here.
The step and the wave it is about are written to the history before the step runs, so an operator
killed at any moment resumes in the step it was in; every step is written to be safe to run again
(a device already sent its desired state is not sent another, a device already finished is not
waited for, an outcome is decided from what the history holds).

    PLANNED --OK--> DEPLOYING(wave 0) --OK--> WAITING --OK--> EVALUATING
    EVALUATING --NEXT_WAVE--> DEPLOYING(wave + 1)
    EVALUATING --DONE--> SUCCEEDED
    EVALUATING --ABORT--> ROLLING_BACK --OK--> ROLLED_BACK
    any step that is not final --ABANDON--> ABANDONED   (`slmops rollout --new`)
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    PLANNED = "PLANNED"  # waves written, nothing sent yet
    DEPLOYING = "DEPLOYING"  # sign, record and publish the wave's desired states
    WAITING = "WAITING"  # wait for each device of the wave to reach a terminal state
    EVALUATING = "EVALUATING"  # failed share of every device tried so far against the threshold
    ROLLING_BACK = "ROLLING_BACK"  # the wave's devices back on the version each ran before
    SUCCEEDED = "SUCCEEDED"
    ROLLED_BACK = "ROLLED_BACK"
    ABANDONED = "ABANDONED"


class Outcome(StrEnum):
    OK = "OK"
    NEXT_WAVE = "NEXT_WAVE"  # the wave is within the threshold and another wave follows
    DONE = "DONE"  # within the threshold and no wave follows (or there was none)
    ABORT = "ABORT"  # above the threshold: stop and roll this wave back
    ABANDON = "ABANDON"  # the operator gave the rollout up


TERMINAL = frozenset({Step.SUCCEEDED, Step.ROLLED_BACK, Step.ABANDONED})

TRANSITIONS: dict[tuple[Step, Outcome], Step] = {
    (Step.PLANNED, Outcome.OK): Step.DEPLOYING,
    (Step.PLANNED, Outcome.DONE): Step.SUCCEEDED,  # nothing to deploy: every device was skipped
    (Step.DEPLOYING, Outcome.OK): Step.WAITING,
    (Step.WAITING, Outcome.OK): Step.EVALUATING,
    (Step.EVALUATING, Outcome.NEXT_WAVE): Step.DEPLOYING,
    (Step.EVALUATING, Outcome.DONE): Step.SUCCEEDED,
    (Step.EVALUATING, Outcome.ABORT): Step.ROLLING_BACK,
    (Step.ROLLING_BACK, Outcome.OK): Step.ROLLED_BACK,
    **{(step, Outcome.ABANDON): Step.ABANDONED for step in Step if step not in TERMINAL},
}

# Outcomes that move the rollout on to the next wave (the wave index is kept beside the step).
ADVANCES = frozenset({Outcome.NEXT_WAVE})

# The rollout's status as listed (`slmops fleet rollouts`, --json), one per step.
STATUS: dict[Step, str] = {
    Step.PLANNED: "running",
    Step.DEPLOYING: "running",
    Step.WAITING: "running",
    Step.EVALUATING: "running",
    Step.ROLLING_BACK: "rolling-back",
    Step.SUCCEEDED: "succeeded",
    Step.ROLLED_BACK: "rolled-back",
    Step.ABANDONED: "abandoned",
}


class TransitionError(RuntimeError):
    """A handler returned an outcome the table does not allow: a bug, never a fleet condition."""


def next_step(step: Step, outcome: Outcome) -> Step:
    try:
        return TRANSITIONS[(step, outcome)]
    except KeyError:
        raise TransitionError(f"no rollout transition from {step} on {outcome}") from None


__all__ = ["ADVANCES", "STATUS", "TERMINAL", "TRANSITIONS", "Outcome", "Step", "TransitionError", "next_step"]
