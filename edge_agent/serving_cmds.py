"""`edge-agent providers` (what this device can run, and why a variant is chosen) and `edge-agent serve`."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml

from edge_agent.bundle_check import MANIFEST, parse_manifest
from edge_agent.contracts import VariantPolicy
from edge_agent.errors import ContractError
from edge_agent.providers.probe import DeviceInfo, probe_device
from edge_agent.providers.selection import Choice, choose_variant
from edge_agent.serving.settings import ApiSettings, RuntimeSettings

if TYPE_CHECKING:
    from rich.console import Console


def _console() -> Console:
    from rich.console import Console  # printers only: the agent at rest never loads rich

    return Console()


def register(app: typer.Typer) -> None:
    app.command("providers")(providers)
    app.command("serve")(serve)


def providers(
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        "-m",
        help="A bundle's manifest.json (or its folder): show which variant it would run.",
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="A variant policy (YAML or JSON, as in the desired state's variant_policy)."
    ),
    provider: list[str] = typer.Option(
        None, "--provider", "-p", help="Local override: only these providers, in this order (repeatable)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Print what ONNX Runtime and onnxruntime-genai can use on this device: providers, EP devices
    (CPU/GPU/NPU, vendor), CPU features and memory. With --manifest, also which variant and execution
    providers the agent would pick for that bundle, and the reason for every verdict."""
    device = probe_device()
    choice = None
    if manifest is not None:
        path = manifest / MANIFEST if manifest.is_dir() else manifest
        bundle = parse_manifest(path.read_bytes(), path)
        choice = choose_variant(bundle, _read_policy(policy), device=device, override=provider or None)
    if json_out:
        out: dict[str, Any] = {"device": device.model_dump()}
        if choice is not None:
            out["choice"] = {
                "variant": choice.variant_id,
                "providers": choice.providers,
                "device": choice.device,
                "reasons": choice.reasons,
            }
        print(json.dumps(out, indent=2))
        return
    _print_device(device)
    if choice is not None:
        _print_choice(choice)


def serve(
    model_dir: Path | None = typer.Option(
        None, "--model-dir", help="One variant folder (genai_config.json)."
    ),
    bundle: Path | None = typer.Option(None, "--bundle", help="A bundle or install folder (manifest.json)."),
    variant: str | None = typer.Option(
        None, "--variant", help="With --bundle: serve this variant (default: chosen as the agent chooses)."
    ),
    policy: Path | None = typer.Option(
        None, "--policy", help="With --bundle: a variant policy (YAML or JSON, as in the desired state)."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name in the API (default: the bundle's)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; anything but loopback needs a key."),
    port: int = typer.Option(8088, "--port", help="TCP port; 0 picks a free one."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="EDGE_AGENT_API_KEY", help="Bearer key required on /v1/* and /status."
    ),
    max_concurrent: int = typer.Option(1, "--max-concurrent", help="Generations running at once."),
    max_queue: int = typer.Option(8, "--max-queue", help="Requests waiting beyond that; more get 429."),
    provider: list[str] = typer.Option(
        None, "--provider", "-p", help="Only these execution providers, in this order (repeatable)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve one model with the OpenAI-compatible API, without the deployment machinery: for trying a
    bundle and for benchmarks. A bundle's variant is chosen the way the agent chooses it (the variant
    policy, the execution providers present, free memory), or pinned with --variant. The model name
    is the bundle's name (a variant folder's name), also as name@version; add ':adapter' to use one
    of its LoRA adapters. Stops on Ctrl-C or SIGTERM."""
    from edge_agent.http_server import BackgroundServer
    from edge_agent.serving.api import create_app
    from edge_agent.serving.model_host import ModelHost

    if (model_dir is None) == (bundle is None):
        raise typer.BadParameter("give exactly one of --model-dir and --bundle")
    if bundle is None and (variant or policy):
        raise typer.BadParameter("--variant and --policy choose among a bundle's variants: use --bundle")
    variant_policy = _read_policy(policy) or VariantPolicy()
    if variant:
        variant_policy = variant_policy.model_copy(update={"variant": variant})
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ApiSettings(
            host=host, port=port, api_key=api_key, max_concurrent=max_concurrent, max_queue=max_queue
        )
    except ValueError as exc:
        raise ContractError("serve options", str(exc)) from exc
    model_host = ModelHost(RuntimeSettings(providers=provider or None))
    served = model_host.load_dir(bundle or model_dir, name=name, policy=variant_policy)  # type: ignore[arg-type]
    app = create_app(model_host, settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console = _console()
    with BackgroundServer(app, settings.host, settings.port, log_level=log_level) as server:
        console.print(
            f"serving [bold]{served.ref}[/] ({served.variant_id} on {served.provider}) at {server.url}/v1",
            highlight=False,
        )
        while not stop.wait(0.5):
            pass
        console.print("stopping: finishing requests in flight", highlight=False)
    model_host.close()


def _read_policy(path: Path | None) -> VariantPolicy | None:
    if path is None:
        return None
    try:
        return VariantPolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValueError as exc:
        raise ContractError(path, str(exc)) from exc


def _print_device(device: DeviceInfo) -> None:
    from rich.table import Table

    console = _console()
    summary = Table(title="This device", show_header=False)
    summary.add_row("onnxruntime", device.onnxruntime_version)
    summary.add_row("onnxruntime-genai", device.onnxruntime_genai_version)
    cpu = device.cpu
    summary.add_row("CPU", f"{cpu.model} ({cpu.architecture}, {cpu.logical_cores} logical cores)")
    summary.add_row("CPU features", " ".join(cpu.features) or "-")
    summary.add_row("memory", f"{device.memory.available_mb} MB free of {device.memory.total_mb} MB")
    summary.add_row(
        "genai builds", " ".join(f"{k}={'yes' if v else 'no'}" for k, v in device.genai_support.items())
    )
    console.print(summary)
    eps = Table(title="Execution providers")
    for col in ("provider", "device", "vendor", "hardware"):
        eps.add_column(col)
    if device.ep_devices is None:
        for p in device.available_providers:
            eps.add_row(p, "/".join(device.provider_devices(p)), "", "(no EP device API in this onnxruntime)")
    else:
        for d in device.ep_devices:
            eps.add_row(
                d.provider, d.device_type, d.provider_vendor, f"{d.vendor} {d.vendor_id or ''}".strip()
            )
        listed = {d.provider for d in device.ep_devices}
        for p in device.available_providers:
            if p not in listed:
                eps.add_row(p, "/".join(device.provider_devices(p)), "", "(available, no EP device listed)")
    console.print(eps)


def _print_choice(choice: Choice) -> None:
    console = _console()
    console.print(
        f"[bold]Would run[/] variant [bold]{choice.variant_id}[/] on {choice.device}, "
        f"trying providers {choice.providers}",
        highlight=False,
    )
    for reason in choice.reasons:
        console.print(f"  - {reason}", highlight=False)
