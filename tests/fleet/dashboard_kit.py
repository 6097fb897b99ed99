"""What the dashboard's tests share: the app served on a real socket, a fleet publisher, a headless browser.

The publisher speaks as the devices would (retained reported and state, live events and bench records)
on the real broker; the browser is Debian's chromium driven by Selenium, its console log kept so a
test can assert that the pages raised no error.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from build_side.fleet.dashboard import DashboardSettings, create_app
from edge_agent.contracts import (
    ActiveModel,
    BenchRecord,
    DeploymentState,
    Event,
    EventError,
    Progress,
    ReportedState,
    Summary,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(settings: DashboardSettings, keys: Path | None = None) -> Iterator[str]:
    """The dashboard on a real socket in this process (uvicorn on a thread); yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind((settings.host, settings.port))  # port 0: the system picks, nobody can take it meanwhile
    sock.listen(128)
    app = create_app(settings, keys=keys)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        app.state.broadcast.close()  # as the command does on Ctrl-C: open pages' streams end first
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


class FleetPublisher:
    """Publishes what devices publish, at QoS 1; `flush()` waits until the broker has acknowledged all."""

    def __init__(self, fleet: str, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.fleet = fleet
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()
        self._infos: list[mqtt.MQTTMessageInfo] = []

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()

    def topic(self, device: str, kind: str) -> str:
        return f"slmops/v1/{self.fleet}/{device}/{kind}"

    def send(self, device: str, kind: str, payload: str | bytes, retain: bool = False) -> None:
        self._infos.append(self.client.publish(self.topic(device, kind), payload, qos=1, retain=retain))

    def flush(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        for info in self._infos:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.1))
        self._infos.clear()

    def device(
        self,
        device: str,
        groups: tuple[str, ...] = (),
        active: str | None = "tiny-chat@1.0.0",
        online: bool = True,
        **reported: object,
    ) -> None:
        """A device's retained reported state and online state."""
        rep = ReportedState(
            device=device,
            fleet=self.fleet,
            groups=list(groups),
            agent_version="0.1.0",
            time=T0,
            active=ActiveModel(bundle=active, variant="cpu-int4", provider="CPUExecutionProvider")
            if active
            else None,
            **reported,  # type: ignore[arg-type]
        )
        self.send(device, "reported", rep.model_dump_json(by_alias=True), retain=True)
        self.send(device, "state", "online" if online else "offline", retain=True)

    def event(
        self,
        device: str,
        deployment_id: str,
        seq: int,
        state: DeploymentState,
        bundle: str = "tiny-chat@2.0.0",
        **extra: object,
    ) -> Event:
        event = Event(
            device=device,
            deployment_id=deployment_id,
            seq=seq,
            state=state,
            time=T0 + timedelta(seconds=seq),
            bundle=bundle,
            variant="cpu-int4",
            provider="CPUExecutionProvider",
            **extra,  # type: ignore[arg-type]
        )
        self.send(device, "events", event.model_dump_json(by_alias=True))
        return event

    def bench(self, device: str, release: str, decode: float, ttft: float, rss: float, minute: int) -> None:
        def s(v: float, unit: str) -> Summary:
            return Summary(unit=unit, median=v, p90=v, stddev=0.0)

        rec = BenchRecord(
            time=T0 + timedelta(minutes=minute),
            model=release,
            variant="cpu-int4",
            engine="onnxruntime-genai",
            provider="CPUExecutionProvider",
            scenario="pp128-tg32",
            peak_rss_mb=rss,
            metrics={"decode_tok_s": s(decode, "tok/s"), "ttft_ms": s(ttft, "ms")},
        )
        self.send(device, "bench", rec.model_dump_json(by_alias=True))


def install_story(pub: FleetPublisher, device: str, deployment_id: str) -> list[Event]:
    """The events of a successful install, as an agent sends them."""
    S = DeploymentState
    return [
        pub.event(device, deployment_id, 0, S.ACCEPTED, revision=7),
        pub.event(device, deployment_id, 1, S.DOWNLOADING, progress=Progress(done=512, total=1024)),
        pub.event(device, deployment_id, 2, S.VERIFYING),
        pub.event(device, deployment_id, 3, S.INSTALLING),
        pub.event(device, deployment_id, 4, S.HEALTH_CHECK),
        pub.event(device, deployment_id, 5, S.SUCCEEDED, message="answered the probe"),
    ]


def failed_event(pub: FleetPublisher, device: str, deployment_id: str, seq: int) -> Event:
    err = EventError(code="HEALTH_CHECK_FAILED", detail="no answer within 120 s")
    return pub.event(device, deployment_id, seq, DeploymentState.FAILED, error=err)


def chromium_paths() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    assert paths, "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(paths[1]), options=opts)


def console_errors(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """The SEVERE entries the pages wrote to the browser console since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@contextmanager
def dashboard_process(fleet: str, db: Path, registry: Path, *extra: str) -> Iterator[str]:
    """`slmops fleet dashboard` as a user runs it, in its own process; yields its base URL."""
    import subprocess

    import httpx

    from tests.conftest import cli

    for _ in range(3):  # a free port can be taken by someone else before the server binds it
        port = free_port()
        argv = cli("slmops", "fleet", "dashboard", "--fleet", fleet, "--db", str(db),
                   "--registry", str(registry), "--port", str(port), *extra)  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/static/dashboard.css", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        if proc.poll() is None:
            break
        output = proc.stdout.read() if proc.stdout else ""
        if "address already in use" not in output:
            raise RuntimeError(f"the dashboard did not start: {output}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
