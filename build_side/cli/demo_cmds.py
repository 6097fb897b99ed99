"""`slmops demo`: the end-to-end demo on embedded defaults (build_side/demo/story.py tells it)."""

from __future__ import annotations

import typer

from build_side.cli.output import console


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    prompt: str = typer.Option(
        "Name three primary colors.", "--prompt", "-p", help="The question to ask the device."
    ),
    transport: str = typer.Option(
        "auto",
        "--transport",
        help="auto: MQTT when a broker listens on the --broker address, HTTP polling otherwise.",
    ),
    broker: str = typer.Option("mqtt://127.0.0.1:1883", "--broker", help="Where to look for Mosquitto."),
    variant: str = typer.Option(
        "cpu-int4",
        "--variant",
        help="Variant the desired state pins (cpu-int4, cpu-int8, cpu-fp32), or `auto` to let the device choose.",
    ),
    max_tokens: int = typer.Option(96, "--max-tokens", help="Longest answer, in tokens."),
) -> None:
    """Run the whole story on this machine, start to end, and stop everything it started.

    Prepare the real SmolLM2-135M-Instruct, build its cpu variants (fp32, int8, int4; the recipe in
    manifests/recipes/), measure, sign and publish them to a registry under $SLMOPS_HOME, serve it, start an edge agent as a local device (over MQTT
    when Mosquitto listens, HTTP polling otherwise), deploy the bundle, watch the device's events,
    ask it a question through its OpenAI-compatible API, show its bench record and the fleet status.
    A second run reuses the prepared source and the published release.
    """
    from build_side.demo.story import DemoOptions, Story
    from build_side.settings import home_dir

    if transport not in ("auto", "mqtt", "http"):
        raise typer.BadParameter("--transport is auto, mqtt or http")
    opts = DemoOptions(
        prompt=prompt,
        home=home_dir(),
        transport=transport,
        broker=broker,
        variant=variant,
        max_tokens=max_tokens,
    )
    Story(opts, console).run()
