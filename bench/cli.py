"""`bench`: compare quantization levels, execution providers and engines on speed, memory and quality."""

from __future__ import annotations

import typer

from edge_agent.cli_support import FriendlyErrors

app = typer.Typer(
    cls=FriendlyErrors,
    help=(
        "bench: measure and compare model variants, execution providers and engines.\n\n"
        "Each case runs in its own process with warm-up and repetitions; results are tables, JSON,\n"
        "CSV, Markdown and PNG plots, and are appended to a results file for later comparison."
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
    """Print the bench version."""
    from edge_agent import __version__

    print(__version__)


if __name__ == "__main__":
    app()
