"""`slmops`: build, sign and publish model bundles, and operate a fleet of edge devices.

Each noun lives in its own module that registers its commands here; heavy libraries (torch,
transformers) are imported inside the commands, so `slmops --help` stays instant.
"""

from __future__ import annotations

import typer

from build_side.cli import (
    bundle_cmds,
    convert_cmds,
    demo_cmds,
    distill_cmds,
    finetune_cmds,
    fleet_cmds,
    keys_cmds,
    manifest_cmds,
    model_cmds,
    pipeline_cmds,
    registry_cmds,
)
from edge_agent.cli_support import FriendlyErrors

app = typer.Typer(
    cls=FriendlyErrors,
    help=(
        "slmops: the build side and fleet operator of the small-language-model toolkit.\n\n"
        "Prepare a model source, fine-tune or distil it, convert and quantize it into a signed\n"
        "multi-variant bundle, publish it to a registry, then deploy it to devices running edge-agent."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Order is the workflow: sources, training, conversion, release, fleet, demo.
for module in (
    model_cmds,
    finetune_cmds,
    distill_cmds,
    convert_cmds,
    bundle_cmds,
    registry_cmds,
    pipeline_cmds,
    keys_cmds,
    manifest_cmds,
    fleet_cmds,
    demo_cmds,
):
    module.register(app)


if __name__ == "__main__":
    app()
