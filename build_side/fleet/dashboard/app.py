"""The dashboard's web app: the whole route table in `create_app`, pages rendered on the server.

Pages: `/` (fleet), `/rollouts` and `/rollouts/{id}`, `/devices/{id}`, `/registry`; `/stream` is
the server-sent event stream the pages' one small script listens to. Nothing here writes to the
broker: the dashboard only looks (the watch does record the events it sees, as `fleet events -f` does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from build_side.fleet.dashboard import views
from build_side.fleet.dashboard.charts import line_chart
from build_side.fleet.dashboard.gate import KeyGate
from build_side.fleet.dashboard.live import Change, LiveFleet
from build_side.fleet.dashboard.registry_view import registry_view
from build_side.fleet.dashboard.settings import DashboardSettings
from build_side.fleet.dashboard.stream import Broadcast, sse
from build_side.fleet.errors import FleetError
from build_side.fleet.history import History
from build_side.fleet.rollout_store import RolloutStore
from build_side.fleet.status import FleetSnapshot
from edge_agent.contracts import Event
from edge_agent.errors import RegistryError

log = logging.getLogger("slmops.dashboard")
STATIC = Path(__file__).parent / "static"


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("build_side.fleet.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["mb"] = lambda b: f"{b / 1e6:.1f}" if b is not None else "—"
    env.filters["num"] = _num
    env.globals["event_summary"] = event_summary
    env.filters["pct"] = lambda v: f"{v:.1%}" if v is not None else "—"
    return env


def _when(value: str | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def create_app(settings: DashboardSettings, keys: Path | None = None) -> FastAPI:
    """The dashboard over one fleet; `keys` is the directory of trusted public keys for the registry."""
    env = templates()
    macros = env.get_template("macros.html").module  # type: ignore[attr-defined]
    broadcast = Broadcast()
    held: dict[str, Any] = {}

    def frame(change: Change, snap: FleetSnapshot) -> str:
        """One `change` frame: each changed device's row (the page's own macro) and each new event."""
        rows = [
            {"device": d, "html": str(macros.fleet_row(views.fleet_row(snap.devices[d])))}
            for d in sorted(change.devices)
            if d in snap.devices
        ]
        events = [{"device": e.device, "html": str(macros.event_item(e))} for e in change.events]
        doc = {"devices": rows, "events": events, "bench": sorted(change.bench)}
        return sse("change", json.dumps(doc), event_id=str(change.version))

    def render_change(change: Change, snap: FleetSnapshot) -> None:
        """Runs on the live thread under the snapshot's lock: render once, offer to every page."""
        if len(broadcast):
            broadcast.publish(frame(change, snap))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        shown = settings.model_dump(exclude={"key"}) | {"key": "set" if settings.key else None}
        log.info("dashboard settings: %s", shown)
        history = History(settings.db)
        live = LiveFleet(settings.broker, settings.fleet, history, tick_s=settings.tick_s)
        live.listener = render_change
        try:
            live.start()
        except FleetError:
            history.close()
            raise
        held.update(history=history, live=live, store=RolloutStore(history))
        try:
            yield
        finally:
            live.stop()
            history.close()

    app = FastAPI(title="slmops fleet dashboard", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(KeyGate, key=settings.key)
    app.state.broadcast = broadcast  # the server ends the open streams with it when asked to stop

    def page(name: str, **ctx: Any) -> HTMLResponse:
        body = env.get_template(name).render(fleet=settings.fleet, **ctx)
        return HTMLResponse(body)

    def live() -> LiveFleet:
        return held["live"]

    def read(fn: Callable[[FleetSnapshot], dict[str, Any]]) -> dict[str, Any]:
        """What `fn` takes from the snapshot, and the version it was taken at (the page's stream
        starts from there)."""
        version, taken = live().read_versioned(fn)
        return {**taken, "version": version}

    @app.get("/", response_class=HTMLResponse)
    def fleet_page(group: str | None = None, state: str | None = None) -> HTMLResponse:
        def take(s: FleetSnapshot) -> dict[str, Any]:
            rows = views.fleet_rows(s, group, state)
            return {"rows": rows, "groups": views.fleet_groups(s), "total": len(s.devices)}

        return page("fleet.html", page="fleet", group=group, state=state, **read(take))

    @app.get("/devices/{device}", response_class=HTMLResponse)
    def device_page(device: str) -> HTMLResponse:
        def take(s: FleetSnapshot) -> dict[str, Any]:
            view = s.devices.get(device)
            return {"view": view, "row": views.fleet_row(view) if view else None}

        seen = read(take)
        recorded = views.device_events(held["history"], settings.fleet, device)
        events = views.merge_events(recorded, live().recent_events(device))
        if seen["view"] is None and not events:
            raise HTTPException(404, f"no device {device!r} in fleet {settings.fleet!r}")
        return page(
            "device.html",
            page="device",
            device=device,
            events=events,
            charts=charts(device),
            bench=list(reversed(bench_records(device))),
            **seen,
        )

    @app.get("/devices/{device}/charts", response_class=HTMLResponse)
    def device_charts(device: str) -> HTMLResponse:
        return HTMLResponse("".join(charts(device)))

    def bench_records(device: str) -> list:
        return [r for _, r in held["history"].bench_records(settings.fleet, device)]

    def charts(device: str) -> list[Markup]:
        records = bench_records(device)
        out = []
        for metric, title in views.CHART_METRICS:
            releases, series = views.bench_series(records, metric)
            out.append(Markup(line_chart(title, releases, series)))
        return out

    @app.get("/rollouts", response_class=HTMLResponse)
    def rollouts_page() -> HTMLResponse:
        return page("rollouts.html", page="rollouts", rollouts=held["store"].list(settings.fleet, limit=100))

    def rollout(rollout_id: str) -> views.RolloutView:
        store: RolloutStore = held["store"]
        try:
            store.get(rollout_id)
        except FleetError as exc:
            raise HTTPException(404, str(exc)) from exc
        return read(lambda s: {"ro": views.rollout_view(store, rollout_id, s, live().deployment_states)})

    @app.get("/rollouts/{rollout_id}", response_class=HTMLResponse)
    def rollout_page(rollout_id: str) -> HTMLResponse:
        return page("rollout.html", page="rollout", categories=views.CATEGORIES, **rollout(rollout_id))

    @app.get("/rollouts/{rollout_id}/live", response_class=HTMLResponse)
    def rollout_live(rollout_id: str) -> HTMLResponse:
        body = env.get_template("rollout_live.html").render(
            categories=views.CATEGORIES, **rollout(rollout_id)
        )
        return HTMLResponse(body)

    @app.get("/registry", response_class=HTMLResponse)
    def registry_page() -> HTMLResponse:
        try:
            reg, problem = registry_view(settings.registry, keys), None
        except RegistryError as exc:
            reg, problem = None, str(exc)
        return page("registry.html", page="registry", reg=reg, problem=problem)

    @app.get("/stream")
    async def stream(request: Request, since: int | None = None) -> StreamingResponse:
        """Changes after `since` (the version the page shows; on reconnect the browser's Last-Event-ID)
        first, then every change as it comes."""
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else since

        def catch_up() -> str | None:
            if start is None:
                return None
            return live().since(start, lambda change, snap: frame(change, snap) if change else None)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(broadcast.frames(catch_up), media_type="text/event-stream", headers=headers)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    return app


def event_summary(event: Event) -> str:
    """One line for an event: its error, or its message, or its progress."""
    if event.error:
        return f"{event.error.code}: {event.error.detail}"
    if event.progress and event.progress.total:
        return (
            f"{event.progress.done / event.progress.total:.0%} ({event.progress.done}/{event.progress.total})"
        )
    return event.message


__all__ = ["create_app", "event_summary"]
