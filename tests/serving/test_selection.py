"""Variant and provider choice: ranking, memory, policy, local override, and the reasons given."""

from __future__ import annotations

import pytest

from edge_agent.contracts import BundleManifest, FileEntry, SourceInfo, Variant, VariantPolicy
from edge_agent.errors import MemoryInsufficientError, ProviderUnavailableError
from edge_agent.providers.probe import CpuInfo, DeviceInfo, EpDevice, MemoryInfo, probe_device
from edge_agent.providers.selection import choose_variant

CPU, CUDA, QNN, OV = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "QNNExecutionProvider",
    "OpenVINOExecutionProvider",
)


def variant(
    vid: str, device: str, providers: list[str], precision: str = "int4", memory: int = 100
) -> Variant:
    files = [FileEntry(path=f"{vid}/model.onnx", size=1, sha256="0" * 64)]
    return Variant(
        id=vid,
        precision=precision,
        device=device,
        execution_providers=providers,
        min_memory_mb=memory,
        files=files,
    )


MANIFEST = BundleManifest(
    name="m",
    version="1.0.0",
    source=SourceInfo(ref="x"),
    variants=[
        variant("cpu-int4", "cpu", [CPU]),
        variant("cpu-fp32", "cpu", [CPU], precision="fp32", memory=900),
        variant("gpu-fp16", "gpu", [CUDA, CPU], precision="fp16", memory=500),
        variant("npu-int8", "npu", [QNN], precision="int8"),
    ],
)


def device(providers: list[str], free_mb: int = 4000, ep_devices: list[EpDevice] | None = None) -> DeviceInfo:
    return DeviceInfo(
        onnxruntime_version="x",
        onnxruntime_genai_version="y",
        available_providers=providers,
        ep_devices=ep_devices,
        cpu=CpuInfo(model="test", architecture="x86_64", logical_cores=2),
        memory=MemoryInfo(total_mb=free_mb * 2, available_mb=free_mb),
    )


def test_npu_over_gpu_over_cpu_by_default() -> None:
    assert choose_variant(MANIFEST, device=device([CPU, CUDA, QNN])).variant_id == "npu-int8"
    gpu = choose_variant(MANIFEST, device=device([CPU, CUDA]))
    assert (gpu.variant_id, gpu.providers, gpu.device) == ("gpu-fp16", [CUDA, CPU], "gpu")
    cpu = choose_variant(MANIFEST, device=device([CPU]))
    assert cpu.variant_id == "cpu-int4"  # same device kind: the manifest's order decides
    assert any("npu-int8: skipped, none of" in r for r in cpu.reasons)


def test_memory_must_fit() -> None:
    choice = choose_variant(
        MANIFEST, VariantPolicy(allowed_precisions=["fp32"]), device=device([CPU], free_mb=4000)
    )
    assert choice.variant_id == "cpu-fp32"
    with pytest.raises(MemoryInsufficientError, match="needs 900 MB, 800 MB free"):
        choose_variant(
            MANIFEST, VariantPolicy(allowed_precisions=["fp32"]), device=device([CPU], free_mb=800)
        )
    small = choose_variant(MANIFEST, device=device([CPU, CUDA], free_mb=300))
    assert small.variant_id == "cpu-int4"
    assert any("gpu-fp16: skipped, needs 500 MB" in r for r in small.reasons)


def test_policy_wins_over_default_ranking() -> None:
    here = device([CPU, CUDA, QNN])
    assert (
        choose_variant(MANIFEST, VariantPolicy(preferred_devices=["cpu"]), device=here).variant_id
        == "cpu-int4"
    )
    assert choose_variant(MANIFEST, VariantPolicy(variant="cpu-fp32"), device=here).variant_id == "cpu-fp32"
    pinned = choose_variant(
        MANIFEST, VariantPolicy(allowed_precisions=["fp16"], preferred_providers=[CPU]), device=here
    )
    assert (pinned.variant_id, pinned.providers) == ("gpu-fp16", [CPU, CUDA])


def test_local_override_wins_over_policy() -> None:
    here = device([CPU, CUDA, QNN])
    choice = choose_variant(MANIFEST, VariantPolicy(preferred_devices=["npu"]), device=here, override=[CPU])
    assert choice.variant_id == "cpu-int4" and choice.providers == [CPU]
    assert choice.reasons[0].startswith("local override")


def test_no_runnable_variant_says_why() -> None:
    only_npu = MANIFEST.model_copy(update={"variants": [MANIFEST.variants[3]]})
    with pytest.raises(ProviderUnavailableError, match="QNNExecutionProvider"):
        choose_variant(only_npu, device=device([CPU]))


def test_ep_devices_refine_what_a_provider_drives() -> None:
    ov_npu = MANIFEST.model_copy(
        update={"variants": [variant("cpu-int4", "cpu", [CPU]), variant("ov", "npu", [OV])]}
    )
    eps = [
        EpDevice(provider=OV, device_type="npu", vendor="Intel"),
        EpDevice(provider=CPU, device_type="cpu"),
    ]
    assert choose_variant(ov_npu, device=device([CPU, OV], ep_devices=eps)).variant_id == "ov"
    assert (
        choose_variant(ov_npu, device=device([CPU, OV])).variant_id == "cpu-int4"
    )  # OpenVINO alone: a cpu EP


def test_probe_of_this_machine() -> None:
    info = probe_device()
    assert info.provider_available(CPU) and not info.provider_available("AzureExecutionProvider")
    assert info.memory.total_mb >= info.memory.available_mb > 0
    assert info.cpu.logical_cores >= 1
    if info.ep_devices is not None:
        assert any(d.provider == CPU and d.device_type == "cpu" for d in info.ep_devices)
