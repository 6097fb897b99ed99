"""The deployment state machine: the table is complete, and a step that keeps crashing fails.

These run the reconciler in-process against a store on disk, with a recording activator in place of
a model (the seam's fake); the end-to-end tests run the real probe.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.activation import Candidate
from edge_agent.config import AgentConfig
from edge_agent.contracts import DeploymentState
from edge_agent.deploy.journal import Journal, JournalRecord, Ledger
from edge_agent.deploy.machine import TERMINAL, TRANSITIONS, Outcome, Step
from edge_agent.deploy.reconciler import Reconciler
from edge_agent.deploy.store import Store
from edge_agent.reporting import Reporter
from edge_agent.signing import TrustedKeys, sign_document
from tests.agent.helpers import read_events

SHA = "ab" * 32


def test_every_step_can_succeed_and_fail_and_every_path_ends() -> None:
    for step in Step:
        if step in TERMINAL:
            assert not any(s == step for s, _ in TRANSITIONS), f"{step} is final"
            continue
        assert (step, Outcome.OK) in TRANSITIONS and (step, Outcome.FAIL) in TRANSITIONS, step
    # From ACCEPTED, following only OK leads to SUCCEEDED; only FAIL never loops.
    step, seen = Step.ACCEPTED, []
    while step not in TERMINAL:
        seen.append(step)
        step = TRANSITIONS[(step, Outcome.OK)]
    assert step is Step.SUCCEEDED and len(seen) == 6
    for start in Step:
        step, hops = start, 0
        while step not in TERMINAL:
            step, hops = TRANSITIONS[(step, Outcome.FAIL)], hops + 1
            assert hops < 5


class RecordingActivator:
    serves = False

    def __init__(self) -> None:
        self.calls: list[str] = []

    def load_candidate(self, install_dir, manifest, variant_id, providers, timeout_s) -> Candidate:
        self.calls.append(f"load {install_dir.name}")
        return Candidate(install_dir, manifest, variant_id, providers[0])

    def promote(self, candidate: Candidate) -> None:
        self.calls.append(f"promote {candidate.install_dir.name}")

    def discard(self, candidate: Candidate) -> None:
        self.calls.append("discard")


def make_reconciler(tmp_path: Path, signing_key) -> tuple[Reconciler, RecordingActivator]:
    config = AgentConfig(
        device_id="d",
        fleet="f",
        registry_url="http://127.0.0.1:9/",
        http_poll={"channel": "stable"},
        trusted_keys=[tmp_path],
        state_dir=tmp_path / "state",
    )
    store, ledger = Store(config.state_dir), Ledger(config.state_dir)
    activator = RecordingActivator()
    reconciler = Reconciler(
        config,
        store,
        Journal(config.state_dir),
        ledger,
        Reporter(config, store, ledger),
        activator,
        TrustedKeys([signing_key.public]),
    )
    return reconciler, activator


def installed(store: Store, ref: str) -> None:
    d = store.staging_dir(ref, SHA)
    (d / "cpu-int4").mkdir(parents=True)
    store.install(d, ref, "cpu-int4", SHA)


def test_a_step_interrupted_too_often_fails_and_rolls_back(tmp_path: Path, signing_key) -> None:
    reconciler, activator = make_reconciler(tmp_path, signing_key)
    store = reconciler.store
    installed(store, "m@1.0.0")
    store.activate("m@1.0.0")
    installed(store, "m@2.0.0")
    doc = sign_document(
        {
            "revision": 2,
            "deployment_id": "crashy",
            "bundle": {"name": "m", "version": "2.0.0", "manifest_url": "x", "manifest_sha256": SHA},
        },
        signing_key,
    )
    rec = JournalRecord(
        deployment_id="crashy",
        revision=2,
        desired=doc,
        desired_sha256="cd" * 32,
        bundle="m@2.0.0",
        manifest_sha256=SHA,
        step=Step.HEALTH_CHECK,
        crashes={"HEALTH_CHECK": 2},  # two earlier starts died in the health check (a model that crashes us)
        variant="cpu-int4",
        providers=["CPUExecutionProvider"],
        previous_active="m@1.0.0",
    )
    reconciler.journal.save(rec)
    reconciler.resume()  # the third time: no more tries

    events = read_events(reconciler.config.state_dir)
    assert [e["state"] for e in events] == [DeploymentState.ROLLED_BACK]
    assert (
        events[0]["error"]["code"] == "HEALTH_CHECK_FAILED"
        and "interrupted 3 times" in events[0]["error"]["detail"]
    )
    assert activator.calls == [], "the crashing candidate is not loaded again"
    assert store.current().ref == "m@1.0.0" and store.get("m@2.0.0") is None  # type: ignore[union-attr]
    assert SHA in reconciler.ledger.data.blocked and reconciler.journal.load() is None
