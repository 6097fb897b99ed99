"""`slmops demo`: the end-to-end demo on embedded defaults (build_side/demo/story.py tells it)."""

from __future__ import annotations

import typer

from build_side.cli.output import console


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    prompt: str = typer.Option(
        None, "--prompt", "-p", help="Also ask the base model (no adapter) this question."
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
        help="Variant the desired state pins (cpu-int4, cpu-fp32), or `auto` to let the device choose.",
    ),
    max_tokens: int = typer.Option(96, "--max-tokens", help="Longest answer, in tokens."),
) -> None:
    """Run the whole story on this machine, start to end, and stop everything it started.

    Prepare the real SmolLM2-135M-Instruct; train two LoRA adapters on a fleet operator's requests
    (intents, JSON commands) and build the smollm2-ops release (cpu-fp32 and cpu-int4 bases, each
    adapter exported beside each, measured and scored; manifests/recipes/finetune-smollm2-ops-adapters.yaml);
    sign and publish it to a registry under $SLMOPS_HOME and serve it; start an edge agent as a local
    device (over MQTT when Mosquitto listens, HTTP polling otherwise); deploy the release and watch the
    device's events; ask each adapter, through the official openai client, operator requests it never
    trained on and count the right answers; show the device's bench record and the fleet status.
    A second run reuses the prepared source, the trained adapters and the published release.
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
