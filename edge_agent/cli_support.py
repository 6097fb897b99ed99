"""What every slmops command line shares: typed errors become one clear message and an exit code.

Library code raises `SlmopsError`; this group class turns it into `Error: <message>` on stderr and exit
status 1, in one place, for every subcommand (the `llm` CLI's pattern).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from edge_agent.errors import SlmopsError


class FriendlyErrors(TyperGroup):
    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SlmopsError as exc:
            typer.secho(f"Error: {exc}", err=True, fg="red")
            raise typer.Exit(1) from exc

    def list_commands(self, ctx: typer.Context) -> list[str]:
        # Keep the order the commands were registered in: it tells the story of the workflow.
        return list(self.commands)
