"""A scripted device speaking the real protocol over the real broker, for the operator's own tests.

It is not the edge agent (tests/fleet/test_multi_agent.py runs real agents): it answers each desired
state it receives, after checking the signature and the revision like a device must, with the events
and reported state of a successful install, or of a failed health gate for the bundles it is told to
fail. That keeps the operator's tests of waves, resume and dedupe fast and exact.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.contracts import (
    ActiveModel,
    BenchMeta,
    BenchRecord,
    DeploymentState,
    DesiredState,
    ErrorCode,
    Event,
    EventError,
    ReportedState,
    Summary,
)
from edge_agent.signing import TrustedKeys, verify_document

S = DeploymentState


class ScriptedDevice:
    def __init__(
        self,
        host: str,
        port: int,
        fleet: str,
        device: str,
        trusted: TrustedKeys,
        groups: tuple[str, ...] = (),
        active: str | None = None,
        fail: set[str] | None = None,
        delay_s: float = 0.05,
        bench: bool = False,
    ) -> None:
        self.fleet, self.device, self.groups = fleet, device, list(groups)
        self.trusted = trusted
        self.active = active
        self.fail = fail or set()
        self.delay_s = delay_s
        self.bench = bench
        self.applied = 0
        self.received: list[DesiredState] = []
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-{device}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.will_set(self.topic("state"), "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self._last: tuple[str, S, EventError | None] | None = None

    def topic(self, kind: str) -> str:
        return f"slmops/v1/{self.fleet}/{self.device}/{kind}"

    def start(self) -> ScriptedDevice:
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise RuntimeError("scripted device could not connect")
            time.sleep(0.01)
        self.client.publish(self.topic("state"), "online", qos=1, retain=True).wait_for_publish(5)
        self.report()
        return self

    def stop(self, clear: bool = True) -> None:
        """Disconnect; `clear` removes its retained topics, otherwise it says `offline` like its will."""
        if not self.client.is_connected():
            return
        if clear:
            for kind in ("state", "reported", "desired"):
                self.client.publish(self.topic(kind), b"", qos=1, retain=True).wait_for_publish(5)
        else:
            self.client.publish(self.topic("state"), "offline", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, rc, props) -> None:  # type: ignore[no-untyped-def]
        client.subscribe(self.topic("desired"), qos=1)
        for g in self.groups:
            client.subscribe(f"slmops/v1/{self.fleet}/group/{g}/desired", qos=1)

    def report(self) -> None:
        last = self._last
        rep = ReportedState(
            device=self.device,
            fleet=self.fleet,
            groups=self.groups,
            agent_version="scripted",
            applied_revision=self.applied or None,
            active=ActiveModel(bundle=self.active, variant="cpu-int4", provider="CPUExecutionProvider")
            if self.active
            else None,
            last_deployment=last[0] if last else None,
            last_state=last[1] if last else None,
            last_error=last[2] if last else None,
        )
        self.client.publish(self.topic("reported"), rep.model_dump_json(by_alias=True), qos=1, retain=True)

    def _on_message(self, client, userdata, msg) -> None:  # type: ignore[no-untyped-def]
        if not msg.payload:
            return
        threading.Thread(target=self._handle, args=(bytes(msg.payload),), daemon=True).start()

    def _handle(self, payload: bytes) -> None:
        with self._lock:
            doc = json.loads(payload)
            verify_document(doc, self.trusted)
            state = DesiredState.model_validate(doc)
            self.received.append(state)
            if state.revision <= self.applied:
                self.rejected.append(state.deployment_id)
                return
            self.applied = state.revision
            ref = state.bundle.ref
            seq = 0

            def emit(s: S, error: EventError | None = None) -> None:
                nonlocal seq
                e = Event(
                    device=self.device,
                    deployment_id=state.deployment_id,
                    seq=seq,
                    state=s,
                    revision=state.revision,
                    bundle=ref,
                    error=error,
                )
                body = e.model_dump_json(by_alias=True)
                self.client.publish(self.topic("events"), body, qos=1)
                if seq == 1:  # a duplicate delivery, as QoS 1 allows
                    self.client.publish(self.topic("events"), body, qos=1)
                seq += 1
                time.sleep(self.delay_s)

            if ref == self.active:
                emit(S.ACCEPTED)
                emit(S.SUCCEEDED)
                self._last = (state.deployment_id, S.SUCCEEDED, None)
                self.report()
                return
            for s in (S.ACCEPTED, S.DOWNLOADING, S.VERIFYING, S.INSTALLING, S.HEALTH_CHECK):
                emit(s)
            if ref in self.fail:
                err = EventError(code=ErrorCode.HEALTH_CHECK_FAILED, detail="probe did not answer")
                emit(S.ROLLED_BACK, err)
                self._last = (state.deployment_id, S.ROLLED_BACK, err)
            else:
                self.active = ref
                if self.bench or state.policy.bench_after_install:
                    self.publish_bench(ref)
                emit(S.SUCCEEDED)
                self._last = (state.deployment_id, S.SUCCEEDED, None)
            self.report()

    def publish_bench(self, ref: str) -> None:
        rec = BenchRecord(
            model=ref,
            variant="cpu-int4",
            engine="onnxruntime-genai",
            provider="CPUExecutionProvider",
            scenario="pp64-tg32",
            meta=BenchMeta(device=self.device),
            peak_rss_mb=231.0,
            rss_mb=187.4,
            metrics={
                "decode_tok_s": Summary(unit="tok/s", median=42.0, p90=40.0, stddev=1.0),
                "ttft_ms": Summary(unit="ms", median=35.0, p90=40.0, stddev=2.0),
            },
        )
        self.client.publish(self.topic("bench"), rec.model_dump_json(by_alias=True), qos=1)
