"""`slmops model`: prepare model sources and try them."""

from __future__ import annotations

import typer

from build_side.cli.output import console, print_json

model_app = typer.Typer(
    help="Prepare model sources (HF folder or id, GGUF file, named source).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


SOURCE_HELP = "A Hugging Face folder, a GGUF file, a hub id, or a named source such as smollm2-135m-instruct."


@model_app.command("prepare")
def prepare(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Turn SOURCE into a cached Hugging Face folder keyed by its content hash (instant the second time)."""
    from build_side.sources import prepare as do_prepare

    with console.status(f"preparing {source} ..."):
        prepared = do_prepare(source)
    if json_out:
        print_json({**prepared.info(), "path": str(prepared.path), "cached": prepared.cached})
    else:
        state = "cached" if prepared.cached else "prepared"
        console.print(f"{state} {source} ({prepared.kind}, sha256 {prepared.sha256[:12]}) -> {prepared.path}")


@model_app.command("generate")
def generate(
    source: str = typer.Argument(..., help=SOURCE_HELP),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message."),
    max_new_tokens: int = typer.Option(64, help="Most tokens to generate."),
) -> None:
    """Answer PROMPT with the model in transformers, through its chat template (greedy)."""
    from build_side.generate import generate as do_generate
    from build_side.sources import prepare as do_prepare

    with console.status(f"preparing {source} ..."):
        prepared = do_prepare(source)
    with console.status("generating ..."):
        answer = do_generate(prepared.path, prompt, max_new_tokens=max_new_tokens)
    print(answer)
