"""`edge-agent`: the service on each device (run, status, providers, serve, install-service).

Commands register from one module per concern: `service_cmds` (the long-running service and its
state) and `serving_cmds` (providers and the inference server).
"""

from __future__ import annotations

import typer

from edge_agent import __version__, service_cmds, serving_cmds
from edge_agent.cli_support import FriendlyErrors

app = typer.Typer(
    cls=FriendlyErrors,
    help=(
        "edge-agent: keeps this device on the model version the fleet wants, and serves it.\n\n"
        "It receives a signed desired state over MQTT (or polls it over HTTP), downloads and verifies\n"
        "the bundle, installs it atomically, picks the variant and execution provider that suit this\n"
        "device, and serves an OpenAI-compatible API on 127.0.0.1."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main() -> None:
    """Group callback: keeps subcommands explicit even when there is one."""


@app.command("version")
def version() -> None:
    """Print the agent version."""
    print(__version__)


service_cmds.register(app)
serving_cmds.register(app)

if __name__ == "__main__":
    app()
