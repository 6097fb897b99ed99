"""`slmops fleet dashboard` in a real browser (Debian's chromium, headless, through Selenium) on the real broker.

Each test has its own fleet id; what devices would publish is published by the test, the dashboard
serves it and the browser must show it, live, with nothing written to its console as an error.
"""

from __future__ import annotations

import importlib.util
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from build_side.fleet.dashboard import DashboardSettings
from build_side.fleet.history import History
from build_side.fleet.rollout_store import RolloutParams, RolloutStore
from edge_agent.contracts import BundleRef, DeploymentState
from tests.conftest import cli
from tests.fleet.dashboard_kit import (
    FleetPublisher,
    chromium_paths,
    console_errors,
    dashboard_process,
    failed_event,
    install_story,
    served,
    start_browser,
)

pytestmark = pytest.mark.skipif(
    chromium_paths() is None or importlib.util.find_spec("selenium") is None,
    reason="needs chromium, chromium-driver and selenium (.ci/run installs them)",
)
S = DeploymentState


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    driver = start_browser()
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


class Dash:
    """Devices publish first (`pub`), then `start()` serves the dashboard over what is retained."""

    def __init__(self, fleet: str, tmp_path: Path) -> None:
        self.fleet = fleet
        self.pub = FleetPublisher(fleet)
        self.db = tmp_path / "fleet.db"
        self.registry = tmp_path / "no-registry"
        History(self.db).close()
        self._server: AbstractContextManager[str] | None = None

    def start(self) -> str:
        self.pub.flush()
        settings = DashboardSettings(
            broker="mqtt://127.0.0.1:1883",
            fleet=self.fleet,
            db=self.db,
            registry=str(self.registry),
            port=0,
            tick_s=0.1,
        )
        self._server = served(settings)
        return self._server.__enter__()

    def stop(self) -> None:
        if self._server is not None:
            self._server.__exit__(None, None, None)
        self.pub.close()


@pytest.fixture
def dash(fleet_id: str, tmp_path: Path, browser, mqtt_broker) -> Iterator[Dash]:  # type: ignore[no-untyped-def]
    d = Dash(fleet_id, tmp_path)
    yield d
    browser.get("about:blank")  # the page's event stream closes before the server goes
    d.stop()


def wait_for(browser, condition, timeout: float = 10, what: str = "", poll_s: float = 0.05):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=poll_s).until(lambda d: condition(d), what)


def js(browser, script: str):  # type: ignore[no-untyped-def]
    return browser.execute_script(script)


def live(browser) -> None:  # type: ignore[no-untyped-def]
    wait_for(browser, lambda d: js(d, "return document.getElementById('live-status').textContent") == "live")


def test_a_deployments_events_appear_on_the_device_page_live(dash: Dash, browser) -> None:  # type: ignore[no-untyped-def]
    dash.pub.device("dev-a", groups=("lab",), active="tiny-chat@1.0.0")
    url = dash.start()
    browser.get(f"{url}/devices/dev-a")
    live(browser)
    assert "tiny-chat@1.0.0" in browser.find_element("css selector", "#device-row td.active").text
    assert js(browser, "return document.querySelectorAll('#timeline li').length") == 0

    sent = install_story(dash.pub, "dev-a", "dep-1")
    dash.pub.event("dev-a", "dep-1", 3, S.INSTALLING)  # a duplicate (same deployment and seq) is shown once
    dash.pub.device("dev-a", groups=("lab",), active="tiny-chat@2.0.0")
    dash.pub.flush()
    wait_for(browser, lambda d: js(d, "return document.querySelectorAll('#timeline li').length") == len(sent))
    states = js(
        browser, "return [...document.querySelectorAll('#timeline li .pill')].map(e => e.textContent)"
    )
    assert states == [str(e.state) for e in reversed(sent)]  # newest first
    first = browser.find_element("css selector", "#timeline li").text
    assert "answered the probe" in first and "dep-1 #5" in first
    assert "50% (512/1024)" in browser.find_element("css selector", "#timeline li:nth-child(5)").text
    wait_for(
        browser, lambda d: "tiny-chat@2.0.0" in d.find_element("css selector", "#device-row td.active").text
    )

    # a bench record draws a point on each chart, without reloading
    dash.pub.bench("dev-a", "tiny-chat@2.0.0", decode=41.5, ttft=35, rss=412, minute=1)
    dash.pub.flush()
    wait_for(browser, lambda d: js(d, "return document.querySelectorAll('#charts svg circle').length") == 3)
    tips = js(
        browser, "return [...document.querySelectorAll('#charts circle title')].map(t => t.textContent)"
    )
    assert any("41.5" in t for t in tips) and any("412" in t for t in tips)

    # what the page showed live is what a reload shows from the history
    browser.refresh()
    assert js(browser, "return document.querySelectorAll('#timeline li').length") == len(sent)
    assert console_errors(browser) == []


def test_a_rollouts_wave_counts_change_as_devices_report(dash: Dash, browser) -> None:  # type: ignore[no-untyped-def]
    devices = ["r0", "r1", "r2", "r3"]
    for d in devices:
        dash.pub.device(d, groups=("lab",))
    bundle = BundleRef(
        name="tiny-chat", version="2.0.0", manifest_url="x/manifest.json", manifest_sha256="0" * 64
    )
    with History(dash.db) as history:
        store = RolloutStore(history)
        rid = store.create(
            fleet=dash.fleet,
            group="lab",
            bundle=bundle,
            params=RolloutParams(canary=1, growth=3, max_failed=0.25),
            waves=[["r0"], ["r1", "r2", "r3"]],
            skipped={},
        )
        store.set_wave(rid, 0, "deploying")
        store.update_device(rid, "r0", deployment_id=f"{rid}-w0-r0", status="published")
    url = dash.start()
    browser.get(f"{url}/rollouts/{rid}")
    live(browser)

    def count(wave: int, category: str) -> int:
        cell = f"#wave-{wave} td[data-count='{category}']"
        return int(js(browser, f'return document.querySelector("{cell}").textContent'))

    assert (count(0, "published"), count(0, "succeeded"), count(1, "pending")) == (1, 0, 3)
    assert "wave 1 of 2 deploying" in js(browser, "return document.getElementById('ro-stands').textContent")

    dash.pub.event("r0", f"{rid}-w0-r0", 0, S.DOWNLOADING)
    dash.pub.flush()
    wait_for(browser, lambda _: count(0, "in progress") == 1, what="r0 downloading")
    dash.pub.event("r0", f"{rid}-w0-r0", 1, S.SUCCEEDED)
    dash.pub.flush()
    wait_for(browser, lambda _: count(0, "succeeded") == 1 and count(0, "in progress") == 0, what="r0 done")

    # the runner (another process) moves on to wave 2; the page follows the devices' reports
    with History(dash.db) as history:
        store = RolloutStore(history)
        store.update_device(rid, "r0", status="succeeded", detail="SUCCEEDED")
        store.set_wave(rid, 0, "succeeded")
        store.set_wave(rid, 1, "deploying")
        for d in ("r1", "r2", "r3"):
            store.update_device(rid, d, deployment_id=f"{rid}-w1-{d}", status="published")
    # r1 finished while nobody listened: only its retained reported state says so
    dash.pub.device("r1", groups=("lab",), active="tiny-chat@2.0.0", last_deployment=f"{rid}-w1-r1",
                    last_state=S.SUCCEEDED)  # fmt: skip
    dash.pub.flush()
    wait_for(browser, lambda _: count(1, "succeeded") == 1 and count(1, "published") == 2, what="r1 reported")
    failed_event(dash.pub, "r2", f"{rid}-w1-r2", 4)
    dash.pub.flush()
    wait_for(browser, lambda _: count(1, "failed") == 1, what="r2 failed")
    threshold = js(browser, "return document.getElementById('ro-threshold').textContent")
    assert "1 of 3 attempted (33.3%)" in threshold and "above 25.0%" in threshold
    assert "stops after this wave" in js(browser, "return document.getElementById('ro-stands').textContent")
    assert console_errors(browser) == []


def test_the_fleet_page_filters_by_group_and_state(dash: Dash, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import Select

    dash.pub.device("lab-1", groups=("lab",))
    dash.pub.device("lab-2", groups=("lab", "eu"), online=False)
    dash.pub.device("field-1", groups=("field",))
    dash.pub.device("field-2", groups=("field", "eu"), active=None)
    url = dash.start()
    browser.get(url)
    live(browser)

    def shown() -> list[str]:
        return js(
            browser,
            "return [...document.querySelectorAll('#fleet tbody tr:not([hidden])')].map(r => r.dataset.device)",
        )

    assert shown() == ["field-1", "field-2", "lab-1", "lab-2"]
    Select(browser.find_element("id", "filter-group")).select_by_value("eu")
    assert shown() == ["field-2", "lab-2"]
    Select(browser.find_element("id", "filter-state")).select_by_value("online")
    assert shown() == ["field-2"]
    assert browser.find_element("id", "counts").text == "1 of 4 devices"
    assert browser.current_url.endswith("?group=eu&state=online")
    browser.refresh()  # the filter is in the address, and the server applies it too
    assert shown() == ["field-2"]

    Select(browser.find_element("id", "filter-state")).select_by_value("")
    Select(browser.find_element("id", "filter-group")).select_by_value("lab")
    dash.pub.device("lab-3", groups=("lab", "new-site"))  # a device that appears is filtered like the rest
    dash.pub.device("field-3", groups=("field",))
    dash.pub.flush()
    wait_for(browser, lambda _: "lab-3" in shown(), what="lab-3 appears")
    assert js(
        browser,
        "return document.getElementById('dev-field-3') !== null && document.getElementById('dev-field-3').hidden",
    )
    groups = js(browser, "return [...document.querySelectorAll('#filter-group option')].map(o => o.value)")
    assert "new-site" in groups
    assert console_errors(browser) == []


@pytest.mark.slow
def test_a_thousand_devices_load_fast_and_a_rollout_across_them_does_not_fall_behind(
    dash: Dash,
    browser,  # type: ignore[no-untyped-def]
) -> None:
    """The real command in its own process (the test's publishing must not share its interpreter)."""
    n = 1000
    names = [f"edge-{i:04d}" for i in range(n)]
    groups = {d: ("fleet", f"site-{i % 10}") for i, d in enumerate(names)}
    for i, d in enumerate(names):
        dash.pub.device(d, groups=groups[d], online=i % 17 != 0)
    dash.pub.flush()
    with dashboard_process(dash.fleet, dash.db, dash.registry) as url:
        t0 = time.perf_counter()
        browser.get(url)
        wall_ms = (time.perf_counter() - t0) * 1000
        timing = js(browser, "const n = performance.getEntriesByType('navigation')[0]; "
                             "return [n.responseEnd, n.domContentLoadedEventEnd, n.loadEventEnd, n.transferSize]")  # fmt: skip
        rows = js(browser, "return document.querySelectorAll('#fleet tbody tr').length")
        print(f"\nfleet page, {n} devices: response {timing[0]:.0f} ms, DOMContentLoaded {timing[1]:.0f} ms, "
              f"load {timing[2]:.0f} ms, {timing[3] / 1e3:.0f} kB; browser.get {wall_ms:.0f} ms")  # fmt: skip
        assert rows == n
        assert timing[2] < 2000, f"the fleet page took {timing[2]:.0f} ms to load with {n} devices"
        live(browser)

        # a rollout reaches every device: 100 devices every 0.3 s (1,000 messages/s), each device
        # sending its events and its new reported state
        t1 = time.perf_counter()
        for w in range(0, n, 100):
            for i, d in enumerate(names[w : w + 100], start=w):
                dash.pub.event(d, f"ro-big-{d}", 0, S.ACCEPTED)
                dash.pub.event(d, f"ro-big-{d}", 1, S.SUCCEEDED)
                dash.pub.device(d, groups=groups[d], active="tiny-chat@2.0.0", online=i % 17 != 0)
            dash.pub.flush()
            time.sleep(max(0.0, t1 + (w // 100 + 1) * 0.3 - time.perf_counter()))
        sent_s = time.perf_counter() - t1
        updated = (
            "return [...document.querySelectorAll('#fleet tbody tr')].filter(r => "
            "r.querySelector('td.active').textContent.startsWith('tiny-chat@2.0.0') && "
            "r.querySelector('td.last-event').textContent.includes('SUCCEEDED')).length"
        )
        try:
            wait_for(browser, lambda _: js(browser, updated) == n, timeout=30, poll_s=0.2)
        except Exception:
            pytest.fail(f"after 30 s, {js(browser, updated)} of {n} rows show the new version")
        behind_s = time.perf_counter() - t1 - sent_s
        print(f"rollout burst: {3 * n} messages sent in {sent_s:.1f} s; "
              f"every row updated {behind_s:.1f} s after the last")  # fmt: skip
        assert behind_s < 5, f"the page was {behind_s:.1f} s behind the broker"
        assert js(browser, "return document.querySelectorAll('#fleet tbody tr').length") == n
        assert console_errors(browser) == []
        browser.get("about:blank")


def test_a_real_rollout_is_followed_wave_by_wave_until_it_stops(
    dash: Dash,
    browser,  # type: ignore[no-untyped-def]
    registry: Path,
    key_file: Path,
    scripted,  # type: ignore[no-untyped-def]
) -> None:
    """`slmops rollout` in its own process over scripted devices; dev-2 fails its health gate."""
    for name in ("dev-0", "dev-1", "dev-2", "dev-3"):
        fail = {"tiny-chat@2.0.0"} if name == "dev-2" else None
        scripted(name, groups=("lab",), active="tiny-chat@1.0.0", fail=fail, delay_s=0.3)
    url = dash.start()
    argv = cli(
        "slmops", "rollout", "tiny-chat@2.0.0", "--group", "lab", "--canary", "1", "--growth", "2",
        "--wave-timeout", "30", "--registry", str(registry), "--fleet", dash.fleet, "--key", str(key_file),
        "--db", str(dash.db), "--json",
    )  # fmt: skip
    runner = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        rollouts: list = []
        while not rollouts and time.monotonic() < deadline:
            with History(dash.db) as history:
                rollouts = RolloutStore(history).list(dash.fleet)
            time.sleep(0.05)
        assert rollouts, "the rollout did not start"
        browser.get(f"{url}/rollouts/{rollouts[0].id}")
        live(browser)
        # the status and every wave's counts, read at once: [status, [[wave status, devices, counts...]...]]
        read = (
            "return [document.getElementById('ro-status').textContent, "
            "[...document.querySelectorAll('#waves tbody tr')].map(r => "
            "[...r.querySelectorAll('td')].slice(1, 9).map(td => td.textContent.trim()))]"
        )
        seen: list = []
        while time.monotonic() < deadline + 30:
            seen.append(js(browser, read))
            if seen[-1][0] == "rolled-back":
                break
            time.sleep(0.1)
    finally:
        runner.wait(timeout=60)
    assert runner.returncode == 2, runner.stderr.read() if runner.stderr else ""
    status, final = seen[-1]
    assert status == "rolled-back"
    # columns: status, devices, pending, published, in progress, succeeded, failed, rolled back
    assert final[0] == ["succeeded", "1", "0", "0", "0", "1", "0", "0"]
    assert final[1] == ["rolled-back", "2", "0", "0", "0", "1", "1", "2"]
    assert final[2] == ["pending", "1", "1", "0", "0", "0", "0", "0"]
    assert any(row[4] != "0" for _, waves in seen for row in waves), "never showed a device under way"
    # read in one script: a live update may replace the element between a lookup and its text
    stands = "return document.getElementById('ro-stands').textContent"
    wait_for(browser, lambda d: "stopped at wave 1" in js(d, stands), what="where the rollout stands")
    assert console_errors(browser) == []
