"""What this device can run, as ONNX Runtime and onnxruntime-genai see it, plus CPU and memory.

The variant choice reads a `DeviceInfo`; `edge-agent providers` prints one. Everything here is
read-only and cheap (no session is created), so the agent can probe before every choice.
ONNX Runtime and onnxruntime-genai are imported by `probe_device()`, not by this module: the agent
at rest (no deployment running, no model served) holds neither.
"""

from __future__ import annotations

import platform
from pathlib import Path
from types import ModuleType
from typing import Literal

import psutil
from pydantic import BaseModel, Field

DeviceType = Literal["cpu", "gpu", "npu"]

# Where no EP-device API says otherwise: the kind of device each provider drives.
PROVIDER_DEVICE: dict[str, DeviceType] = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "gpu",
    "TensorrtExecutionProvider": "gpu",
    "NvTensorRTRTXExecutionProvider": "gpu",
    "ROCMExecutionProvider": "gpu",
    "MIGraphXExecutionProvider": "gpu",
    "DmlExecutionProvider": "gpu",
    "WebGpuExecutionProvider": "gpu",
    "QNNExecutionProvider": "npu",
    "VitisAIExecutionProvider": "npu",
    "CoreMLExecutionProvider": "npu",
    "OpenVINOExecutionProvider": "cpu",  # refined by its EP devices (it drives cpu, gpu and npu)
}

# CPU flags worth knowing for int4/int8 kernels (x86 from /proc/cpuinfo `flags`, Arm from `Features`).
INTERESTING_CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)

# Listed by onnxruntime but not a device of this machine: never chosen to run a model.
REMOTE_PROVIDERS = frozenset({"AzureExecutionProvider"})

_DEVICE_TYPE_NAMES: dict[str, DeviceType] = {"CPU": "cpu", "GPU": "gpu", "NPU": "npu"}


class EpDevice(BaseModel):
    """One (execution provider, hardware device) pair from `onnxruntime.get_ep_devices()`."""

    provider: str
    provider_vendor: str = ""
    device_type: DeviceType
    vendor: str = ""
    vendor_id: int | None = None
    device_id: int | None = None


class CpuInfo(BaseModel):
    model: str
    architecture: str
    logical_cores: int
    physical_cores: int | None = None
    features: list[str] = Field(default_factory=list, description="the interesting flags it has")


class MemoryInfo(BaseModel):
    total_mb: int
    available_mb: int


class DeviceInfo(BaseModel):
    onnxruntime_version: str
    onnxruntime_genai_version: str
    available_providers: list[str] = Field(description="what onnxruntime.get_available_providers() lists")
    ep_devices: list[EpDevice] | None = Field(
        None, description="None where the installed onnxruntime has no get_ep_devices()"
    )
    genai_support: dict[str, bool] = Field(
        default_factory=dict, description="onnxruntime-genai's is_<x>_available() answers"
    )
    cpu: CpuInfo
    memory: MemoryInfo

    def provider_available(self, provider: str) -> bool:
        return provider in self.available_providers and provider not in REMOTE_PROVIDERS

    def provider_devices(self, provider: str) -> list[DeviceType]:
        """The kinds of device `provider` drives here: from EP devices when known, else the static table."""
        if self.ep_devices:
            kinds = [d.device_type for d in self.ep_devices if d.provider == provider]
            if kinds:
                return sorted(set(kinds), key=("npu", "gpu", "cpu").index)
        return [PROVIDER_DEVICE.get(provider, "cpu")]


def probe_device() -> DeviceInfo:
    import onnxruntime as ort
    import onnxruntime_genai as og

    return DeviceInfo(
        onnxruntime_version=ort.__version__,
        onnxruntime_genai_version=og.__version__,
        available_providers=list(ort.get_available_providers()),
        ep_devices=_ep_devices(ort),
        genai_support=_genai_support(og),
        cpu=_cpu_info(),
        memory=memory_info(),
    )


def memory_info() -> MemoryInfo:
    vm = psutil.virtual_memory()
    return MemoryInfo(total_mb=vm.total // 2**20, available_mb=vm.available // 2**20)


def _ep_devices(ort: ModuleType) -> list[EpDevice] | None:
    get = getattr(ort, "get_ep_devices", None)
    if get is None:  # onnxruntime < 1.22
        return None
    devices = []
    for d in get():
        hw = d.device
        devices.append(
            EpDevice(
                provider=d.ep_name,
                provider_vendor=d.ep_vendor,
                device_type=_DEVICE_TYPE_NAMES.get(str(hw.type).rsplit(".", 1)[-1], "cpu"),
                vendor=hw.vendor,
                vendor_id=hw.vendor_id,
                device_id=hw.device_id,
            )
        )
    return devices


def _genai_support(og: ModuleType) -> dict[str, bool]:
    return {
        name.removeprefix("is_").removesuffix("_available"): bool(getattr(og, name)())
        for name in sorted(dir(og))
        if name.startswith("is_") and name.endswith("_available")
    }


def _cpu_info() -> CpuInfo:
    fields = _cpuinfo_fields(Path("/proc/cpuinfo"))
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Hardware") or platform.processor() or "unknown"
    return CpuInfo(
        model=model,
        architecture=platform.machine(),
        logical_cores=psutil.cpu_count(logical=True) or 1,
        physical_cores=psutil.cpu_count(logical=False),
        features=[f for f in INTERESTING_CPU_FLAGS if f in flags],
    )


def _cpuinfo_fields(path: Path) -> dict[str, str]:
    """The first processor's `key: value` lines (every core lists the same flags)."""
    if not path.exists():
        return {}
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip() and fields:
            break
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields
