"""Convert a Hugging Face folder into ONNX variants with the onnxruntime-genai model builder.

A variant is a target (execution provider + precision, e.g. `cpu-int4`) plus its quantization
settings. Each one lands in `OUT/<id>/` (model.onnx, weights, genai_config.json, tokenizer, chat
template: what a bundle ships) beside `OUT/<id>.variant.json`, which records how it was built and,
once measured, its quality (`build_side.quality`). `slmops bundle` reads those records.

The builder runs in one child process for all variants (`build_side.builder_worker`); its output goes
to `OUT/convert.log`, and progress reaches the caller as `BuildProgress` events.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import build_side
from build_side.builder_worker import EVENT_PREFIX
from build_side.gguf_carry import carry_gguf_blocks
from build_side.settings import cache_dir
from edge_agent.bundle_check import describe_validation_error
from edge_agent.contracts import Quantization, SourceInfo, VariantEval
from edge_agent.contracts.common import Name
from edge_agent.contracts.manifest import DeviceKind, Precision
from edge_agent.errors import ConvertError

SIDECAR_SUFFIX = ".variant.json"
LOG_NAME = "convert.log"


@dataclass(frozen=True)
class Target:
    """What the model builder is asked for (`-e`, `-p`) and where the result runs."""

    ep: str
    precision: Precision
    device: DeviceKind
    providers: tuple[str, ...]


_CPU, _CUDA = ("CPUExecutionProvider",), ("CUDAExecutionProvider",)
_DML, _WEBGPU = ("DmlExecutionProvider",), ("WebGpuExecutionProvider",)

# The combinations the builder supports (its own list), by the variant id they get by default.
TARGETS: dict[str, Target] = {
    "cpu-fp32": Target("cpu", "fp32", "cpu", _CPU),
    "cpu-int8": Target("cpu", "int8", "cpu", _CPU),
    "cpu-int4": Target("cpu", "int4", "cpu", _CPU),
    "cuda-fp32": Target("cuda", "fp32", "gpu", _CUDA),
    "cuda-fp16": Target("cuda", "fp16", "gpu", _CUDA),
    "cuda-bf16": Target("cuda", "bf16", "gpu", _CUDA),
    "cuda-int8": Target("cuda", "int8", "gpu", _CUDA),
    "cuda-int4": Target("cuda", "int4", "gpu", _CUDA),
    "dml-fp16": Target("dml", "fp16", "gpu", _DML),
    "dml-int4": Target("dml", "int4", "gpu", _DML),
    "webgpu-int8": Target("webgpu", "int8", "gpu", _WEBGPU),
    "webgpu-int4": Target("webgpu", "int4", "gpu", _WEBGPU),
}
REFERENCE_ID = "cpu-fp32"


class VariantSpec(BaseModel):
    """One variant to build. Quantization settings apply to int4/int8 targets only; unset ones keep
    the builder's defaults (block size 32, accuracy level 4 on CPU, symmetric, RTN)."""

    model_config = ConfigDict(extra="forbid")

    id: Name
    target: str | None = Field(None, description="a key of TARGETS; default: the id itself")
    block_size: Literal[16, 32, 64, 128, 256] | None = None
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMul activation precision: 1 fp32, 2 fp16, 3 bf16, 4 int8"
    )
    symmetric: bool | None = None
    algorithm: Literal["rtn", "k_quant"] | None = None
    int8_lm_head: bool = Field(False, description="keep the LM head (the last MatMul) in int8")
    gguf_blocks: Literal["fused", "offset", "float", "uint8"] | None = Field(
        None,
        description="when the source is a Q4_1 GGUF: carry its 4-bit blocks (and Q8_0 embedding) into the "
        "ONNX weights instead of quantizing the de-quantized weights again. fused: near exact and fast "
        "(integer zero points, the per-block remainder as extra 4-bit digits in the same MatMul); "
        "offset: exact (integer zero points plus a per-block remainder in separate nodes); float: "
        "exact, float zero points (slow on CPU); uint8: zero points rounded (fast, not exact)",
    )
    extra_options: dict[str, str] = Field(default_factory=dict, description="passed to the builder as is")

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str | None) -> str | None:
        if value is not None and value not in TARGETS:
            raise ValueError(f"unknown target {value!r}; known: {', '.join(TARGETS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> VariantSpec:
        if self.target is None and self.id not in TARGETS:
            raise ValueError(
                f"variant {self.id!r} is not a known target; set target: (one of {', '.join(TARGETS)})"
            )
        quant = [
            k
            for k in ("block_size", "accuracy_level", "symmetric", "algorithm")
            if getattr(self, k) is not None
        ]
        if self.int8_lm_head:
            quant.append("int8_lm_head")
        if self.gguf_blocks is not None:
            quant.append("gguf_blocks")
            if (
                self.resolved.precision != "int4"
                or not self.int8_lm_head
                or self.block_size not in (None, 32)
            ):
                raise ValueError("gguf_blocks needs an int4 variant with block_size 32 and int8_lm_head")
        if quant and self.resolved.precision not in ("int4", "int8"):
            raise ValueError(
                f"{', '.join(quant)} only apply to int4/int8 variants, not {self.resolved.precision}"
            )
        return self

    @property
    def resolved(self) -> Target:
        return TARGETS[self.target or self.id]

    def builder_options(self) -> list[str]:
        """The builder's `--extra_options KEY=VALUE` list for this variant."""
        opts = {"hf_token": "false"}
        if self.block_size is not None:
            opts["block_size"] = str(self.block_size)
        if self.accuracy_level is not None:
            opts["accuracy_level"] = str(self.accuracy_level)
        if self.symmetric is not None:
            opts["is_symmetric"] = str(self.symmetric).lower()
        if self.algorithm is not None or self.int8_lm_head or self.symmetric is False:
            # The builder's "default" method ignores mixed precision (an int8 head implies rtn), and
            # with tied embeddings it writes an invalid graph when asymmetric (onnxruntime-genai 0.18).
            opts["algo_config"] = self.algorithm or "rtn"
        if self.int8_lm_head:
            # with tied embeddings the embedding shares the head's weights, so it becomes int8 too
            opts["matmul_mixed_precision"] = "last_matmul:int8"
        opts.update(self.extra_options)
        return [f"{k}={v}" for k, v in opts.items()]


def parse_variant(text: str, **quant: object) -> VariantSpec:
    """`cpu-int4` (a target) or `ID=TARGET` (e.g. `cpu-int4-k=cpu-int4`), with optional settings."""
    vid, _, target = text.partition("=")
    try:
        return VariantSpec(id=vid.strip(), target=target.strip() or None, **quant)
    except ValidationError as exc:
        raise ConvertError(f"variant {text!r}: {describe_validation_error(exc)}") from exc


class ConvertedVariant(BaseModel):
    """`OUT/<id>.variant.json`: how one variant folder was made, and its quality once measured."""

    model_config = ConfigDict(extra="forbid")

    id: Name
    precision: Precision
    device: DeviceKind
    execution_providers: list[str]
    quantization: Quantization | None = None
    spec: VariantSpec
    builder: str = Field(description="builder command equivalent, for the record")
    source: SourceInfo = Field(description="the weights it was built from (with the tools' versions)")
    eval: VariantEval | None = None
    eval_note: str | None = Field(None, description="why there is no eval (e.g. needs CUDA)")

    @classmethod
    def load(cls, path: Path) -> ConvertedVariant:
        try:
            return cls.model_validate_json(Path(path).read_text())
        except (OSError, ValidationError) as exc:
            raise ConvertError(f"{path}: not a readable variant record ({exc})") from exc

    def save(self, out_dir: Path) -> Path:
        path = Path(out_dir) / f"{self.id}{SIDECAR_SUFFIX}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")
        os.replace(tmp, path)
        return path


def load_variants(out_dir: Path, ids: list[str] | None = None) -> list[ConvertedVariant]:
    """The variant records in a convert output folder (all, or the ids asked for, in that order)."""
    out_dir = Path(out_dir)
    found = {p.name.removesuffix(SIDECAR_SUFFIX): p for p in out_dir.glob(f"*{SIDECAR_SUFFIX}")}
    wanted = ids or sorted(found)
    missing = [i for i in wanted if i not in found or not (out_dir / i).is_dir()]
    if missing:
        raise ConvertError(f"{out_dir}: no converted variant {', '.join(missing)} (run `slmops convert`)")
    return [ConvertedVariant.load(found[i]) for i in wanted]


@dataclass(frozen=True)
class BuildProgress:
    """One step of one variant: `completed` out of `total` (layers + 4 fixed steps)."""

    variant: str
    step: str
    completed: int
    total: int


ProgressFn = Callable[[BuildProgress], None]

_LAYER = re.compile(r"^Reading layer (\d+)")
_STEPS = {  # builder line prefix -> steps done, counted past the layers (the line starts the step)
    "Reading final norm": 1,
    "Reading LM head": 1,
    "Saving ONNX model": 2,  # quantization happens while saving
    "Saving GenAI config": 3,
}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def tool_versions() -> dict[str, str]:
    versions = {"slmops": _version("slmops")}
    versions.update({d: _version(d) for d in ("onnxruntime-genai", "onnxruntime", "transformers", "torch")})
    return versions


def builder_option_names() -> set[str] | None:
    """The `--extra_options` keys the installed model builder documents (its `--help` lists them), or
    None when its help cannot be read that way (then nothing is checked). Read from the source: the
    builder ignores keys it does not know, so a misspelt or too-new option would pass unnoticed."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_genai.models.builder")
    if spec is None or spec.origin is None:
        return None
    text = Path(spec.origin).read_text()
    start = text.find('"--extra_options"')
    end = text.find("add_argument(", start)
    if start < 0 or end < 0:
        return None
    names = set(re.findall(r"^\s+([a-z][a-z0-9_]*) = ", text[start:end], flags=re.MULTILINE))
    return names or None


def check_builder_options(specs: list[VariantSpec]) -> None:
    """Every extra option must be one the installed builder knows, before anything is built."""
    known = builder_option_names()
    if known is None:
        return
    for spec in specs:
        for option in spec.builder_options():
            key = option.partition("=")[0]
            if key not in known and key.removeprefix("int4_") not in known:
                raise ConvertError(
                    f"{spec.id}: the model builder of onnxruntime-genai {_version('onnxruntime-genai')} "
                    f"has no option {key!r} (extra_options); a newer onnxruntime-genai may have it"
                )


def _num_layers(hf_dir: Path) -> int:
    try:
        config = json.loads((hf_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{hf_dir}: no readable config.json ({exc})") from exc
    return int(config.get("num_hidden_layers") or config.get("n_layer") or 1)


def _worker_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    root = str(Path(build_side.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class _OutputReader:
    """Turns the builder child's output into log lines and progress events."""

    def __init__(self, layers: int, progress: ProgressFn | None) -> None:
        self.layers, self.total, self.progress = layers, layers + 4, progress
        self.current: str | None = None
        self.failure: str | None = None
        self.pending = b""

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        *lines, self.pending = re.split(rb"[\r\n]", self.pending)  # tqdm redraws with \r
        for raw in lines:
            self.line(raw.decode(errors="replace").strip())

    def line(self, line: str) -> None:
        if line.startswith(EVENT_PREFIX):
            event = json.loads(line[len(EVENT_PREFIX) :])
            self.current = event["id"]
            if event["event"] == "error":
                self.failure = event["message"]
            step, done = event["event"], (self.total if event["event"] == "done" else 0)
        elif self.current and (m := _LAYER.match(line)):
            step, done = f"layer {int(m.group(1)) + 1}/{self.layers}", int(m.group(1)) + 1
        elif self.current and (prefix := next((p for p in _STEPS if line.startswith(p)), None)):
            step, done = prefix.lower(), self.layers + _STEPS[prefix]
        else:
            return
        if self.progress and self.current:
            self.progress(BuildProgress(self.current, step, done, self.total))


def _run_worker(job: dict, log_path: Path, layers: int, progress: ProgressFn | None) -> None:
    """Run the builder child, stream its output into the log, raise on the first failure."""
    reader = _OutputReader(layers, progress)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(job, fh)
    cmd = [sys.executable, "-m", "build_side.builder_worker", fh.name]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_worker_env())
    assert proc.stdout is not None
    try:
        with open(log_path, "ab") as log:
            while chunk := proc.stdout.read1(1 << 16):
                log.write(chunk)
                reader.feed(chunk)
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: never leave the builder running
            proc.kill()
            proc.wait()
        os.unlink(fh.name)
    if code != 0 or reader.failure:
        where = f" on {reader.current}" if reader.current else ""
        raise ConvertError(
            f"the model builder failed{where}: {reader.failure or f'exit status {code}'} (full output in {log_path})"
        )


def _inspect_graph(model_path: Path) -> dict[str, object]:
    """What the builder actually did, read from the graph: embedding and LM head precision, block size
    and accuracy level of the quantized MatMuls."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    dtypes = {init.name: init.data_type for init in model.graph.initializer}
    names = {
        onnx.TensorProto.FLOAT: "fp32",
        onnx.TensorProto.FLOAT16: "fp16",
        onnx.TensorProto.BFLOAT16: "bf16",
    }

    def precision_of(node: onnx.NodeProto) -> str | None:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type in ("MatMulNBits", "GatherBlockQuantized"):
            return f"int{attrs.get('bits', 4)}"
        for name in node.input:
            if name in dtypes:
                return names.get(dtypes[name])
        return None

    found: dict[str, object] = {}
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if "embed_tokens" in node.name and node.op_type in ("Gather", "GatherBlockQuantized"):
            found.setdefault("embedding_precision", precision_of(node))
        elif node.name.startswith("/lm_head/") and node.op_type in ("MatMul", "MatMulNBits"):
            found.setdefault("lm_head_precision", precision_of(node))
        if node.op_type == "MatMulNBits":
            found.setdefault("block_size", attrs.get("block_size"))
            found.setdefault("accuracy_level", attrs.get("accuracy_level", 0))
    return found


def _quantization(spec: VariantSpec, variant_dir: Path) -> Quantization | None:
    graph = _inspect_graph(variant_dir / "model.onnx")
    if spec.resolved.precision not in ("int4", "int8"):
        return None
    return Quantization(
        algorithm="gguf-carry" if spec.gguf_blocks else spec.algorithm or "rtn",
        block_size=graph.get("block_size"),
        accuracy_level=graph.get("accuracy_level"),
        symmetric=True if spec.symmetric is None else spec.symmetric,
        lm_head_precision=graph.get("lm_head_precision"),
        embedding_precision=graph.get("embedding_precision"),
        extra={"tool": "onnxruntime-genai model builder"},
    )


def source_gguf(source: SourceInfo) -> Path:
    """The GGUF file a source came from, for variants that carry its blocks over."""
    from build_side.sources import NAMED_SOURCES, named_source_file

    if source.kind == "named" and source.ref in NAMED_SOURCES:
        return named_source_file(source.ref)
    if source.kind == "gguf" and Path(source.ref).is_file():
        return Path(source.ref)
    raise ConvertError(
        f"gguf_blocks needs a GGUF source (with no adapters merged), not {source.kind} {source.ref!r}"
    )


CARRIED_INT4: dict[str, object] = {
    "block_size": 32,
    "accuracy_level": 4,
    "symmetric": False,
    "int8_lm_head": True,
    "algorithm": "rtn",
    "gguf_blocks": "fused",
    # logits for the last position only: serving needs no more (peak RSS -43 MB on SmolLM2, docs/int4.md)
    "extra_options": {"prune_lm_head": "true"},
}


def with_source_defaults(spec: VariantSpec, source: SourceInfo) -> VariantSpec:
    """A plain cpu-int4 (no settings of its own) from a Q4_1 GGUF carries the GGUF's blocks instead
    of taking the builder's defaults, which quantize the de-quantized weights a second time
    (perplexity x1.38, top-1 62 % on SmolLM2-135M; carried: x1.004, 97 %; docs/int4.md)."""
    own = spec.model_dump(exclude={"id", "target"}, exclude_defaults=True)
    if own or spec.resolved != TARGETS["cpu-int4"]:
        return spec
    try:
        path = source_gguf(source)
    except ConvertError:
        return spec
    if not gguf_is_q4_1(path):
        return spec
    return spec.model_copy(update=CARRIED_INT4)


def gguf_is_q4_1(path: Path) -> bool:
    """Q4_1 linear weights and a Q8_0 embedding: the layout `carry_gguf_blocks` maps exactly."""
    import gguf

    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
    return types.get("blk.0.ffn_down.weight") == "Q4_1" and types.get("token_embd.weight") == "Q8_0"


def builder_command(spec: VariantSpec) -> str:
    t = spec.resolved
    return f"builder -p {t.precision} -e {t.ep} --extra_options {' '.join(spec.builder_options())}"


def convert(
    hf_dir: Path,
    specs: list[VariantSpec],
    out_dir: Path,
    source: SourceInfo,
    progress: ProgressFn | None = None,
) -> list[ConvertedVariant]:
    """Build every variant into `out_dir/<id>/` (replacing an older build of the same id only when the
    new one is complete) and write its `<id>.variant.json`. Quality is measured separately."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    specs = [with_source_defaults(s, source) for s in specs]
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConvertError(f"variant ids must be unique, got {ids}")
    if not specs:
        raise ConvertError("no variants to build")
    check_builder_options(specs)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".building-"))
    try:
        job = {
            "input": str(hf_dir),
            "cache": str(cache_dir() / "builder"),
            "variants": [
                {
                    "id": s.id,
                    "output": str(staging / s.id),
                    "precision": s.resolved.precision,
                    "ep": s.resolved.ep,
                    "extra_options": s.builder_options(),
                }
                for s in specs
            ],
        }
        _run_worker(job, out_dir / LOG_NAME, _num_layers(hf_dir), progress)
        source = source.model_copy(update={"tools": {**tool_versions(), **source.tools}})
        results = []
        for spec in specs:
            final = out_dir / spec.id
            if final.exists():
                shutil.rmtree(final)
            if spec.gguf_blocks:
                carry_gguf_blocks(staging / spec.id, source_gguf(source), spec.gguf_blocks)
            os.replace(staging / spec.id, final)
            record = ConvertedVariant(
                id=spec.id,
                precision=spec.resolved.precision,
                device=spec.resolved.device,
                execution_providers=list(spec.resolved.providers),
                quantization=_quantization(spec, final),
                spec=spec,
                builder=builder_command(spec),
                source=source,
            )
            record.save(out_dir)
            results.append(record)
        return results
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "REFERENCE_ID",
    "TARGETS",
    "BuildProgress",
    "ConvertedVariant",
    "Target",
    "VariantSpec",
    "builder_command",
    "builder_option_names",
    "check_builder_options",
    "convert",
    "gguf_is_q4_1",
    "load_variants",
    "parse_variant",
    "tool_versions",
    "with_source_defaults",
]
