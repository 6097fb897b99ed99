"""`slmops fleet dashboard` over HTTP (no browser): the key, the registry page, and the pure view rules.

The browser tests (test_dashboard_browser.py) cover what the pages do live; these cover what the
server answers and decides.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from build_side.fleet.dashboard import DashboardSettings
from build_side.fleet.dashboard.charts import line_chart, nice_max
from build_side.fleet.dashboard.views import Series, bench_series, device_category
from build_side.fleet.rollout_store import DeviceRow
from build_side.registry import write_index
from edge_agent.contracts import (
    BenchRecord,
    BundleManifest,
    DeploymentState,
    FileEntry,
    SourceInfo,
    Summary,
    Variant,
    VariantEval,
)
from edge_agent.signing import SigningKey
from tests.conftest import cli
from tests.fleet.dashboard_kit import T0, FleetPublisher, served

S = DeploymentState


def settings(fleet: str, tmp_path: Path, **kw: object) -> DashboardSettings:
    base = {
        "broker": "mqtt://127.0.0.1:1883",
        "fleet": fleet,
        "db": tmp_path / "fleet.db",
        "registry": str(tmp_path / "releases"),
        "port": 0,
        "tick_s": 0.1,
    }
    return DashboardSettings(**(base | kw))  # type: ignore[arg-type]


# the key --------------------------------------------------------------------------------------------


def test_a_dashboard_reachable_from_other_machines_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give a key"):
        settings("f", tmp_path, host="0.0.0.0")
    assert settings("f", tmp_path, host="0.0.0.0", key="k").key == "k"
    proc = subprocess.run(
        cli("slmops", "fleet", "dashboard", "--host", "0.0.0.0", "--db", str(tmp_path / "f.db")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "reachable from other machines: give a key (--key)" in proc.stdout + proc.stderr


def test_with_a_key_every_page_and_the_stream_ask_for_it(fleet_id: str, tmp_path: Path, mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    with served(settings(fleet_id, tmp_path, key="s3cret")) as url:
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/stream").status_code == 401
        assert httpx.get(f"{url}/?key=wrong").status_code == 401
        bearer = httpx.get(f"{url}/registry", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        with httpx.Client() as browser_like:
            first = browser_like.get(f"{url}/?key=s3cret")
            assert first.status_code == 200 and "slmops_dashboard_key" in first.headers["set-cookie"]
            assert browser_like.get(f"{url}/rollouts").status_code == 200  # the cookie carries the key
        assert httpx.get(f"{url}/static/dashboard.js").status_code == 200  # our own script is no secret


def test_unknown_devices_and_rollouts_are_404(fleet_id: str, tmp_path: Path, mqtt_broker) -> None:  # type: ignore[no-untyped-def]
    with served(settings(fleet_id, tmp_path)) as url:
        assert httpx.get(f"{url}/devices/nobody").status_code == 404
        r = httpx.get(f"{url}/rollouts/ro-nothing")
        assert r.status_code == 404 and "no rollout 'ro-nothing'" in r.text


# the registry page ----------------------------------------------------------------------------------


def release(root: Path, version: str, key: SigningKey, ppl: float, top1: float) -> Path:
    from build_side.manifest_io import write_signed_manifest

    bundle = root / "bundles" / "tiny-chat" / version
    bundle.mkdir(parents=True)
    variants = [
        Variant(
            id=vid,
            precision=prec,  # type: ignore[arg-type]
            execution_providers=["CPUExecutionProvider"],
            min_memory_mb=64,
            files=[FileEntry(path=f"{vid}/model.onnx", size=size, sha256="0" * 64)],
            eval=VariantEval(
                reference="cpu-fp32",
                text="held-out",
                tokens=512,
                perplexity=p,
                perplexity_ratio=p / ppl,
                top1_agreement=t,
                size_bytes=size,
            ),
        )
        for vid, prec, size, p, t in (
            ("cpu-fp32", "fp32", 540_000_000, ppl, 1.0),
            ("cpu-int4", "int4", 98_500_000, ppl * 1.07, top1),
        )
    ]
    manifest = BundleManifest(
        name="tiny-chat", version=version, created=T0, source=SourceInfo(kind="hf-folder", ref="tiny"),
        variants=variants,
    )  # fmt: skip
    write_signed_manifest(bundle, manifest, key)
    return bundle / "manifest.json"


@pytest.fixture
def releases(tmp_path: Path, signing_key: SigningKey) -> Iterator[Path]:
    root = tmp_path / "releases"
    release(root, "1.0.0", signing_key, ppl=12.5, top1=0.912)
    release(root, "2.0.0", signing_key, ppl=11.75, top1=0.934)
    write_index(root, signing_key)
    yield root


def test_the_registry_page_lists_variants_with_size_and_build_quality(
    fleet_id: str,
    tmp_path: Path,
    releases: Path,
    keys_dir: Path,
    mqtt_broker,  # type: ignore[no-untyped-def]
) -> None:
    (releases / "bundles" / "tiny-chat" / "1.0.0" / "manifest.json").write_text("{ not json")
    with served(settings(fleet_id, tmp_path), keys=keys_dir) as url:
        page = httpx.get(f"{url}/registry").text
    assert "(trusted)" in page
    row = page[page.index('data-ref="tiny-chat@2.0.0" data-variant="cpu-int4"') :].split("</tr>")[0]
    assert "98.5" in row and "12.57" in row and "93.4%" in row  # size MB, ppl, top-1
    broken = page[page.index('data-ref="tiny-chat@1.0.0"') :].split("</tr>")[0]
    assert "not valid JSON" in broken  # one bad manifest is shown, the others still are


def test_the_fleet_page_shows_bench_figures_from_the_history(
    fleet_id: str, tmp_path: Path, mqtt_broker
) -> None:  # type: ignore[no-untyped-def]
    pub = FleetPublisher(fleet_id)
    pub.device("dev-b", groups=("lab",))
    pub.flush()
    try:
        with served(settings(fleet_id, tmp_path)) as url:
            pub.bench("dev-b", "tiny-chat@1.0.0", decode=38.25, ttft=40, rss=398.4, minute=0)
            pub.flush()
            for _ in range(50):
                row = httpx.get(f"{url}/").text.split('id="dev-dev-b"')[1].split("</tr>")[0]
                if "38.2" in row:
                    break
                time.sleep(0.1)
            assert ">38.2</td>" in row and 'class="num rss">398<' in row
    finally:
        pub.close()


# pure rules -----------------------------------------------------------------------------------------


def row(status: str, deployment_id: str | None = "d1") -> DeviceRow:
    return DeviceRow("dev", 0, None, deployment_id, status, "", None, None)


@pytest.mark.parametrize(
    ("status", "live", "category"),
    [
        ("pending", None, "pending"),
        ("published", None, "published"),
        ("published", S.DOWNLOADING, "in progress"),
        ("published", S.SUCCEEDED, "succeeded"),
        ("published", S.ROLLED_BACK, "failed"),
        ("published", S.REJECTED, "failed"),
        ("failed", S.SUCCEEDED, "failed"),  # the runner's word (a timeout, say) stands
        ("succeeded", None, "succeeded"),
    ],
)
def test_a_rollout_device_counts_where_its_latest_word_puts_it(
    status: str, live: DeploymentState | None, category: str
) -> None:
    assert device_category(row(status), live)[0] == category


def test_bench_series_follow_releases_in_the_order_measured() -> None:
    def rec(model: str, variant: str, decode: float, minute: int) -> BenchRecord:
        return BenchRecord(
            time=T0 + timedelta(minutes=minute), model=model, variant=variant, engine="e",
            provider="CPUExecutionProvider", scenario="s",
            metrics={"decode_tok_s": Summary(unit="tok/s", median=decode, p90=decode, stddev=0)},
        )  # fmt: skip

    records = [rec("m@2.0.0", "int4", 40, 5), rec("m@1.0.0", "int4", 30, 1), rec("m@1.0.0", "fp32", 10, 2),
               rec("m@2.0.0", "int4", 42, 6)]  # fmt: skip
    releases, series = bench_series(records, "decode_tok_s")
    assert releases == ["m@1.0.0", "m@2.0.0"]
    assert [(s.label, s.points) for s in series] == [("fp32 CPU", [10, None]), ("int4 CPU", [30, 42])]
    svg = line_chart("decode tok/s", releases, series)
    assert svg.count("<circle") == 3 and svg.count("<polyline") == 1  # fp32 has one point: no line
    assert "no records" in line_chart("TTFT", [], [Series("x", [])])
    assert [nice_max(v) for v in (0.3, 7.2, 41.2, 99, 120, 1001)] == [0.5, 10, 50, 100, 200, 2000]


def test_a_stream_starts_with_what_changed_since_the_page_was_rendered(
    fleet_id: str,
    tmp_path: Path,
    mqtt_broker,  # type: ignore[no-untyped-def]
) -> None:
    """A page is rendered at a version; what changes before its stream connects comes first on it."""
    import re

    pub = FleetPublisher(fleet_id)
    pub.device("dev-c", groups=("lab",))
    pub.flush()
    try:
        with served(settings(fleet_id, tmp_path)) as url:
            rendered = int(re.search(r'data-version="(\d+)"', httpx.get(f"{url}/").text)[1])
            pub.device(
                "dev-d", groups=("lab",), active="tiny-chat@2.0.0"
            )  # after the page, before its stream
            pub.event("dev-d", "dep-9", 0, S.ACCEPTED)
            pub.flush()
            for _ in range(100):
                now = int(re.search(r'data-version="(\d+)"', httpx.get(f"{url}/").text)[1])
                if now > rendered:
                    break
                time.sleep(0.05)
            assert now > rendered

            def first_frame(wait_s: float = 5, **kw: object) -> str:
                with httpx.stream("GET", f"{url}/stream", timeout=wait_s, **kw) as r:  # type: ignore[arg-type]
                    frames = r.iter_text()
                    assert next(frames).startswith("retry:")
                    try:
                        return next(frames)
                    except httpx.ReadTimeout:
                        return ""

            caught_up = first_frame(params={"since": rendered})
            assert caught_up.startswith(f"id: {now}\nevent: change\n")
            assert '"device": "dev-d"' in caught_up and "dep-9 #0" in caught_up
            assert "dev-c" not in caught_up  # unchanged since the page: not sent again
            # a browser that reconnects says where it was (Last-Event-ID) and gets nothing twice
            assert first_frame(1, params={"since": rendered}, headers={"Last-Event-ID": str(now)}) == ""
    finally:
        pub.close()
