"""Rich progress bars for the long stages, in one place; library functions take a plain callback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Advance = Callable[..., None]  # advance(n=1, **fields): move the bar, update its text fields


@contextmanager
def bar(description: str, total: int, done: int = 0, enabled: bool = True) -> Iterator[Advance]:
    """A bar with count, elapsed and remaining time, and a free `info` field for the stage to fill.
    Under `accelerate launch` only the first process draws it."""
    if not enabled or os.environ.get("RANK", "0") != "0":
        yield lambda n=1, **fields: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task(description, total=total, completed=done, info="")

        def advance(n: int = 1, **fields: object) -> None:
            info = " ".join(f"{k} {v}" for k, v in fields.items())
            progress.update(task, advance=n, **({"info": info} if fields else {}))

        yield advance
