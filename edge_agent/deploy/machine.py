"""The deployment state machine: steps, outcomes, and every allowed transition in one table.

The reconciler runs one step at a time; each step's handler returns an `Outcome`, and `next_step`
looks the pair up here. The journal records the step before it runs, so a restart re-enters the
step it was in (every step is written to be safe to run again). A step interrupted by crashes more
than `limits.max_step_entries` times fails instead of looping.

Health failure never touches `current`: the candidate is loaded and probed beside the active version
and only an approved one is switched in (ACTIVATING). ROLLING_BACK puts `current` and the served
model back on the version that was active when the deployment started.
"""

from __future__ import annotations

from enum import StrEnum

from edge_agent.contracts import DeploymentState, ErrorCode


class Step(StrEnum):
    ACCEPTED = "ACCEPTED"  # fetch and verify the manifest, choose the variant, check memory
    DOWNLOADING = "DOWNLOADING"  # free-space check, then every file with Range resume
    VERIFYING = "VERIFYING"  # size and sha256 of every file against the signed manifest
    INSTALLING = "INSTALLING"  # rename the verified staging folder into the store
    HEALTH_CHECK = "HEALTH_CHECK"  # load the candidate beside the active version and probe it
    ACTIVATING = "ACTIVATING"  # previous := current, current := new, promote, collect old versions
    ROLLING_BACK = "ROLLING_BACK"  # current and the served model back to the version before
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ROLLED_BACK = "ROLLED_BACK"


class Outcome(StrEnum):
    OK = "OK"
    INSTALLED = "INSTALLED"  # the version is already complete in the store: skip the download
    ACTIVE = "ACTIVE"  # the version is already the active one: nothing to do
    RETRY = "RETRY"  # transient failure: DEFERRED, wait with backoff, run the step again
    FAIL = "FAIL"  # fatal failure
    GIVE_UP = "GIVE_UP"  # fatal failure with the policy's rollback_on_failure off


TERMINAL = frozenset({Step.SUCCEEDED, Step.FAILED, Step.ROLLED_BACK})

TRANSITIONS: dict[tuple[Step, Outcome], Step] = {
    (Step.ACCEPTED, Outcome.OK): Step.DOWNLOADING,
    (Step.ACCEPTED, Outcome.INSTALLED): Step.HEALTH_CHECK,
    (Step.ACCEPTED, Outcome.ACTIVE): Step.SUCCEEDED,
    (Step.ACCEPTED, Outcome.RETRY): Step.ACCEPTED,
    (Step.ACCEPTED, Outcome.FAIL): Step.FAILED,
    (Step.DOWNLOADING, Outcome.OK): Step.VERIFYING,
    (Step.DOWNLOADING, Outcome.RETRY): Step.DOWNLOADING,
    (Step.DOWNLOADING, Outcome.FAIL): Step.FAILED,
    (Step.VERIFYING, Outcome.OK): Step.INSTALLING,
    (Step.VERIFYING, Outcome.FAIL): Step.FAILED,
    (Step.INSTALLING, Outcome.OK): Step.HEALTH_CHECK,
    (Step.INSTALLING, Outcome.FAIL): Step.FAILED,
    (Step.HEALTH_CHECK, Outcome.OK): Step.ACTIVATING,
    (Step.HEALTH_CHECK, Outcome.FAIL): Step.ROLLING_BACK,
    (Step.HEALTH_CHECK, Outcome.GIVE_UP): Step.FAILED,
    (Step.ACTIVATING, Outcome.OK): Step.SUCCEEDED,
    (Step.ACTIVATING, Outcome.FAIL): Step.ROLLING_BACK,
    (Step.ACTIVATING, Outcome.GIVE_UP): Step.FAILED,
    (Step.ROLLING_BACK, Outcome.OK): Step.ROLLED_BACK,
    (Step.ROLLING_BACK, Outcome.FAIL): Step.FAILED,
}

# The event each step announces when it starts (steps absent here announce nothing themselves).
ANNOUNCE: dict[Step, DeploymentState] = {
    Step.ACCEPTED: DeploymentState.ACCEPTED,
    Step.DOWNLOADING: DeploymentState.DOWNLOADING,
    Step.VERIFYING: DeploymentState.VERIFYING,
    Step.INSTALLING: DeploymentState.INSTALLING,
    Step.HEALTH_CHECK: DeploymentState.HEALTH_CHECK,
}

# The error a step is charged with when crashes keep interrupting it.
CRASH_CODE: dict[Step, ErrorCode] = {
    Step.ACCEPTED: ErrorCode.DOWNLOAD_FAILED,
    Step.DOWNLOADING: ErrorCode.DOWNLOAD_FAILED,
    Step.VERIFYING: ErrorCode.DOWNLOAD_FAILED,
    Step.INSTALLING: ErrorCode.DOWNLOAD_FAILED,
    Step.HEALTH_CHECK: ErrorCode.HEALTH_CHECK_FAILED,
    Step.ACTIVATING: ErrorCode.HEALTH_CHECK_FAILED,
    Step.ROLLING_BACK: ErrorCode.ROLLBACK_FAILED,
}


class Interrupted(Exception):
    """The agent is stopping (SIGTERM): the step stops at a safe point and resumes on the next start."""


class TransitionError(RuntimeError):
    """A handler returned an outcome the table does not allow: a bug, never a device condition."""


def next_step(step: Step, outcome: Outcome) -> Step:
    try:
        return TRANSITIONS[(step, outcome)]
    except KeyError:
        raise TransitionError(f"no transition from {step} on {outcome}") from None


def final_state(step: Step) -> DeploymentState:
    return DeploymentState(step.value)


__all__ = [
    "ANNOUNCE",
    "CRASH_CODE",
    "TERMINAL",
    "TRANSITIONS",
    "Interrupted",
    "Outcome",
    "Step",
    "TransitionError",
    "final_state",
    "next_step",
]
