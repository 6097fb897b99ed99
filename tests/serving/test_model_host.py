"""The model host: provider fallback (visible in /status), health gate failures, load beside, swap."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from edge_agent.adapters import folder_digest
from edge_agent.bundle_check import parse_manifest
from edge_agent.contracts import AdapterCard
from edge_agent.errors import HealthCheckError, IncompatibleError, ProviderUnavailableError
from edge_agent.http_server import BackgroundServer
from edge_agent.runtime import GenerationParams
from edge_agent.serving.api import create_app
from edge_agent.serving.model_host import ModelHost
from edge_agent.serving.settings import ApiSettings, RuntimeSettings
from tests.serving.conftest import VARIANT, MakeBundle

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def manifest_of(bundle: Path):  # type: ignore[no-untyped-def]
    return parse_manifest((bundle / "manifest.json").read_bytes())


def test_missing_provider_falls_back_to_cpu_and_status_shows_it(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("2.0.0", providers=(CUDA, CPU), device="gpu")
    host = ModelHost()
    manifest = manifest_of(bundle)
    choice = host.choose(manifest)
    assert choice.providers == [CUDA, CPU]  # CUDA stays first: the fallback past it is recorded, not hidden
    candidate = host.load_candidate(bundle, manifest, choice.variant_id, choice.providers, timeout_s=60)
    assert candidate.provider == CPU
    assert candidate.fallbacks == [f"{CUDA}: not available on this device"]
    host.promote(candidate)
    with BackgroundServer(create_app(host, ApiSettings(port=0))) as server:
        active = httpx.get(f"{server.url}/status").json()["active"]
        metrics = httpx.get(f"{server.url}/metrics").text
    assert active["provider"] == CPU and active["fallbacks"] == candidate.fallbacks
    assert "edge_agent_provider_fallbacks 1.0" in metrics


def test_provider_that_fails_to_start_falls_back(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("2.0.1")
    # listed by onnxruntime here, but onnxruntime-genai cannot run a model on it: it fails to start
    providers = ["AzureExecutionProvider", CPU]
    candidate = ModelHost().load_candidate(bundle, manifest_of(bundle), VARIANT, providers, timeout_s=60)
    assert candidate.provider == CPU
    assert candidate.fallbacks[0].startswith("AzureExecutionProvider: execution provider")


def test_no_provider_available_is_provider_unavailable(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("2.0.2")
    with pytest.raises(ProviderUnavailableError, match="CUDAExecutionProvider: not available"):
        ModelHost().load_candidate(bundle, manifest_of(bundle), VARIANT, [CUDA], timeout_s=60)


def test_broken_variant_fails_the_health_gate(serving_bundle: MakeBundle, tmp_path: Path) -> None:
    bundle = serving_bundle("2.0.3")
    (bundle / VARIANT / "model.onnx").write_bytes(b"not a model")
    host = ModelHost()
    with pytest.raises(HealthCheckError, match="did not load"):
        host.load_candidate(bundle, manifest_of(bundle), VARIANT, [CPU], timeout_s=60)
    assert host.current is None


def test_local_override_limits_providers(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("2.0.4", providers=(CUDA, CPU), device="gpu")
    host = ModelHost(RuntimeSettings(providers=[CPU]))
    served = host.load_dir(bundle)
    assert (served.provider, served.fallbacks) == (CPU, [])


def test_swap_releases_the_old_model_after_its_last_request(serving_bundle: MakeBundle) -> None:
    v1, v2 = serving_bundle("3.0.0"), serving_bundle("3.0.1")
    host = ModelHost()
    host.load_dir(v1)
    lease = host.acquire("tiny-chat")
    old = lease.served
    candidate = host.load_candidate(v2, manifest_of(v2), VARIANT, [CPU], timeout_s=60)
    assert host.current is old  # loaded beside: the old one still serves until promoted
    host.promote(candidate)
    assert host.acquire("tiny-chat").served.version == "3.0.1"
    assert old.model is not None and host.status()["retired"][0]["ref"] == "tiny-chat@3.0.0"
    gen = lease.model.generate(lease.model.encode("hi"), GenerationParams(max_new_tokens=3))
    list(gen)  # the request in flight finishes on the old model
    assert gen.completion_tokens == 3
    lease.release()
    assert old.model is None and host.status()["retired"] == [] and host.released == 1


def test_variant_folder_serves_standalone(lora_variant: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    variant_dir, adapters = lora_variant
    folder = shutil.copytree(variant_dir, tmp_path / "My_Model")
    for name, path in adapters.items():
        shutil.copy(path, folder / path.name)
        card = AdapterCard(name=name, base_weights_sha256=folder_digest(folder))
        (folder / f"{name}.adapter.json").write_text(card.model_dump_json())
    served = ModelHost().load_dir(folder)
    assert (served.name, served.version, served.adapters) == ("my-model", "0.0.0", ["alpha", "beta"])


def test_variant_folder_refuses_an_adapter_without_its_card_or_for_another_base(
    lora_variant: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    variant_dir, adapters = lora_variant
    folder = shutil.copytree(variant_dir, tmp_path / "m")
    shutil.copy(adapters["alpha"], folder / "alpha.onnx_adapter")
    with pytest.raises(IncompatibleError, match=r"no adapter card alpha\.adapter\.json"):
        ModelHost().load_dir(folder)
    card = AdapterCard(name="alpha", base_weights_sha256="ab" * 32)
    (folder / "alpha.adapter.json").write_text(card.model_dump_json())
    with pytest.raises(IncompatibleError, match="belongs to another base"):
        ModelHost().load_dir(folder)


def test_metrics_and_status_show_what_the_process_holds_with_the_model(serving_bundle: MakeBundle) -> None:
    bundle = serving_bundle("2.0.3")
    host = ModelHost()
    with BackgroundServer(create_app(host, ApiSettings(port=0))) as server:
        idle = httpx.get(f"{server.url}/metrics").text
        host.load_dir(bundle)
        active = httpx.get(f"{server.url}/status").json()["active"]
        metrics = httpx.get(f"{server.url}/metrics").text
    assert "edge_agent_active_model_resident_memory_bytes 0.0" in idle
    assert active["rss_mb"] > 0
    values = {
        line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if not line.startswith("#")
    }
    loaded = values["edge_agent_active_model_resident_memory_bytes"]
    assert loaded == pytest.approx(active["rss_mb"] * 2**20, rel=1e-3)
    assert 0 < loaded <= values["edge_agent_peak_resident_memory_bytes"]
    assert values["process_resident_memory_bytes"] > 0


def test_a_model_larger_than_free_memory_is_refused_before_loading(serving_bundle: MakeBundle) -> None:
    """The figures are in the error, nothing loads, and the model serving keeps serving."""
    import psutil

    from edge_agent.errors import MemoryInsufficientError

    old, new = serving_bundle("2.1.0"), serving_bundle("2.1.1")
    host = ModelHost()
    host.load_dir(old)
    reserve = psutil.virtual_memory().total // 2**20  # the device's own work wants all of it
    host.settings = RuntimeSettings(memory_reserve_mb=reserve)
    manifest = manifest_of(new)
    need = manifest.variant(VARIANT).min_memory_mb
    with pytest.raises(
        MemoryInsufficientError, match=rf"needs {need} MB, \d+ MB free \({reserve} MB of it kept"
    ):
        host.load_candidate(new, manifest, VARIANT, [CPU], timeout_s=60)
    with pytest.raises(MemoryInsufficientError, match=r"needs \d+ MB, \d+ MB free"):
        host.load_dir(new / VARIANT)  # a bare variant folder: the same rule on its estimate
    assert host.current is not None and host.current.version == "2.1.0"
    with host.acquire("tiny-chat") as lease:
        text = "".join(lease.model.stream(lease.model.encode("hi"), GenerationParams(max_new_tokens=3)))
    assert lease.model_id == "tiny-chat@2.1.0" and isinstance(text, str)


def test_a_session_option_this_runtime_lacks_names_it_and_the_version(serving_bundle: MakeBundle) -> None:
    import onnxruntime_genai as og

    bundle = serving_bundle("2.1.2")
    host = ModelHost(RuntimeSettings(session_options={"enable_cpu_mem_arena": False, "spin_forever": 3}))
    with pytest.raises(IncompatibleError, match=rf"onnxruntime-genai {og.__version__} .* 'spin_forever'"):
        host.load_candidate(bundle, manifest_of(bundle), VARIANT, [CPU], timeout_s=60)
    assert host.current is None
    fine = ModelHost(RuntimeSettings(session_options={"enable_cpu_mem_arena": False}))
    assert fine.load_dir(bundle).model is not None


def test_the_probe_only_agent_loads_with_the_same_session_options(serving_bundle: MakeBundle) -> None:
    """With the API off the health gate loads in a child process: the options travel with it."""
    from edge_agent.deploy.probe import ProbeActivator

    bundle = serving_bundle("2.1.3")
    manifest = manifest_of(bundle)
    bad = ProbeActivator(RuntimeSettings(session_options={"spin_forever": 3}))
    with pytest.raises(HealthCheckError, match=r"onnxruntime-genai [\d.]+ does not accept .*'spin_forever'"):
        bad.load_candidate(bundle, manifest, VARIANT, [CPU], timeout_s=120)
    good = ProbeActivator(RuntimeSettings(session_options={"enable_mem_pattern": False}))
    assert good.load_candidate(bundle, manifest, VARIANT, [CPU], timeout_s=120).provider == CPU
