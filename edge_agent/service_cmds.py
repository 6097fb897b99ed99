"""`edge-agent run`, `status` and `install-service`: the agent as a service on the device."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_agent.config import AgentConfig, load_config
from edge_agent.errors import ConfigError

ConfigOpt = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="EDGE_AGENT_CONFIG",
        help="agent YAML config (see edge_agent/agent.example.yaml); EDGE_AGENT_* variables override it",
    ),
]


def run(config: ConfigOpt = Path("/etc/edge-agent/agent.yaml")) -> None:
    """Run the agent until SIGTERM: follow the desired state, install safely, report, serve.

    The config is validated and logged at start-up. SIGTERM or Ctrl-C stop the step in progress at a
    safe point (it resumes on the next start) and exit with status 0.
    """
    from edge_agent.logs import setup_logging
    from edge_agent.service import AgentService

    cfg = load_config(config)
    setup_logging(cfg.log)
    service = AgentService(cfg)

    def on_signal(signum: int, frame: Any) -> None:
        service.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.run()


def _state_dir(config: Path | None, state_dir: Path | None) -> Path:
    if state_dir:
        return state_dir
    if config:
        return load_config(config).state_dir
    raise ConfigError("give --config or --state-dir")


def status(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar="EDGE_AGENT_CONFIG", help="agent YAML config")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="read this state folder instead of the config's")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Show the active version, the last deployment and recent events (reads the state folder only).

    Works whether the agent runs or not.
    """
    from edge_agent.status import read_status

    info = read_status(_state_dir(config, state_dir))
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    from rich.console import Console  # the table printers only: `run` never loads rich
    from rich.table import Table

    console = Console()
    table = Table(title=f"edge-agent status ({info['state_dir']})", show_header=False)
    active = info["active"]
    table.add_row("device", f"{info['device'] or '?'} (fleet {info['fleet'] or '?'})")
    table.add_row(
        "active",
        f"{active['ref']}  variant {active['variant']}  provider {active['provider'] or '?'}"
        if active
        else "none",
    )
    table.add_row("previous", info["previous"] or "none")
    table.add_row("installed", ", ".join(info["installed"]) or "none")
    used = info["store"]
    table.add_row(
        "store",
        f"{used['disk_bytes'] / 1e6:.1f} MB on disk ({used['logical_bytes'] / 1e6:.1f} MB of files, "
        "identical ones stored once)",
    )
    table.add_row("applied revision", str(info["applied_revision"]))
    last = info["last_deployment"]
    if last:
        err = f"  {last['error']['code']}: {last['error']['detail']}" if last.get("error") else ""
        table.add_row("last deployment", f"{last['deployment_id']} {last['bundle']} {last['state']}{err}")
    if info["in_progress"]:
        p = info["in_progress"]
        table.add_row("in progress", f"{p['deployment_id']} {p['bundle']} at {p['step']}")
    console.print(table)
    if info["events"]:
        events = Table(title="recent events")
        for col in ("time", "deployment", "seq", "state", "detail"):
            events.add_column(col)
        for e in info["events"]:
            detail = e.get("error", {}).get("code", "") if e.get("error") else ""
            if e.get("progress"):
                p = e["progress"]
                detail = f"{p['done']}/{p['total']} bytes"
                if p.get("reused"):
                    detail += f", {p['reused']} reused"
            events.add_row(e["time"], e["deployment_id"], str(e["seq"]), e["state"], detail)
        console.print(events)


def render_unit(config: Path, cfg: AgentConfig, user: str) -> str:
    template = resources.files("edge_agent").joinpath("edge-agent.service").read_text()
    exec_start = shlex.join([sys.executable, "-m", "edge_agent", "run", "--config", str(config)])
    state = Path(cfg.state_dir)
    if state.parent == Path("/var/lib"):
        state_line = f"StateDirectory={state.name}"
    else:
        state_line = f"ReadWritePaths={state}"
    return template.format(exec_start=exec_start, user=user, state_line=state_line)


def install_service(
    config: Annotated[Path, typer.Option("--config", "-c", help="agent YAML config the service runs with")],
    dest: Annotated[Path, typer.Option(help="folder for the unit file")] = Path("/etc/systemd/system"),
    user: Annotated[str, typer.Option(help="account the agent runs as")] = "",
    enable: Annotated[bool, typer.Option(help="systemctl daemon-reload and enable --now")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the unit instead of writing it")] = False,
) -> None:
    """Write the systemd unit `edge-agent.service` that runs this agent with CONFIG.

    The config is validated first. The unit uses this Python interpreter, restarts on failure,
    and stops with SIGTERM (the agent drains and exits).
    """
    config = config.resolve()
    cfg = load_config(config)
    unit = render_unit(config, cfg, user or getpass.getuser())
    if dry_run:
        print(unit, end="")
        return
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "edge-agent.service"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(unit)
    os.replace(tmp, path)
    print(f"wrote {path}")
    if enable:
        if not shutil.which("systemctl"):
            raise ConfigError("systemctl not found: enable the unit by hand")
        subprocess.run(["systemctl", "daemon-reload"], check=True)
        subprocess.run(["systemctl", "enable", "--now", "edge-agent.service"], check=True)
        print("enabled and started edge-agent.service")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("status")(status)
    app.command("install-service")(install_service)
