"""Commands of this part register here (not yet built)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Nothing to register yet."""
