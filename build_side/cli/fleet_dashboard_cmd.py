"""`slmops fleet dashboard`: options become DashboardSettings, uvicorn serves the app."""

from __future__ import annotations

from types import FrameType

import typer
from pydantic import ValidationError

from build_side.cli.output import console
from build_side.fleet import settings
from build_side.fleet.errors import FleetError


def dashboard_cmd(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; anything but loopback needs --key."
    ),
    port: int = typer.Option(8090, "--port", "-p", help="TCP port (0 picks a free one)."),
    key: str | None = typer.Option(
        None,
        "--key",
        envvar="SLMOPS_DASHBOARD_KEY",
        help="Key the browser must give once (?key=...; kept in a cookie) or send as 'Authorization: Bearer'.",
    ),
    broker: str | None = typer.Option(
        None, "--broker", help="MQTT broker URL (default $SLMOPS_BROKER or mqtt://127.0.0.1:1883)."
    ),
    fleet: str | None = typer.Option(None, "--fleet", help="Fleet id (default $SLMOPS_FLEET or `default`)."),
    registry: str | None = typer.Option(
        None,
        "--registry",
        help="Registry directory or URL (default $SLMOPS_REGISTRY or $SLMOPS_HOME/registry).",
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        help="History database: a path or a database URL (default $SLMOPS_DB or $SLMOPS_HOME/fleet.db).",
    ),
) -> None:
    """Serve a read-only web dashboard: the fleet, rollouts wave by wave, each device's events and
    bench over releases, and the registry, updated live from the broker (server-sent events)."""
    import uvicorn

    from build_side.fleet.dashboard import DashboardSettings, create_app
    from build_side.settings import keys_dir

    try:
        conf = DashboardSettings(
            broker=broker or settings.broker_url(),
            fleet=fleet or settings.fleet_id(),
            db=db or settings.history_location(),
            registry=registry or settings.registry_location(),
            host=host,
            port=port,
            key=key,
        )
    except ValidationError as exc:
        raise FleetError(f"dashboard: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from exc
    app = create_app(conf, keys=keys_dir())
    console.print(f"fleet {conf.fleet} from {conf.broker}: http://{host}:{port}/ (Ctrl-C stops)")

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.broadcast.close()  # open pages' streams end now, so stopping does not wait on them
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    Server(config).run()
