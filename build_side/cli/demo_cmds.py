"""`slmops demo`: the end-to-end demo on embedded defaults (grows with every part that lands)."""

from __future__ import annotations

import time

import typer

from build_side.cli.output import console


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    prompt: str = typer.Option(
        "What is the capital of France?", "--prompt", "-p", help="The question to ask."
    ),
) -> None:
    """Run the whole story on this machine: prepare the real SmolLM2-135M-Instruct and answer a prompt."""
    from build_side.generate import generate
    from build_side.sources import prepare

    start = time.monotonic()
    console.rule("1. model source")
    with console.status("preparing smollm2-135m-instruct (de-quantizing the packaged GGUF) ..."):
        src = prepare("smollm2-135m-instruct")
    console.print(f"{'reused' if src.cached else 'prepared'} {src.ref} -> {src.path}")
    console.rule("2. answer")
    console.print(f"[bold]Q:[/] {prompt}")
    with console.status("generating ..."):
        answer = generate(src.path, prompt)
    console.print(f"[bold]A:[/] {answer}")
    console.rule(f"done in {time.monotonic() - start:.1f} s")
