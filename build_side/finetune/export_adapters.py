"""Several LoRA adapters on one ONNX base: the base graph gets LoRA inputs, each adapter a file.

    out/
      cpu-int4/                  the variant: model.onnx (+ .data), genai_config.json, tokenizer
      cpu-int4.variant.json      its record, as `slmops convert` writes it: `slmops bundle out
                                 --adapter NAME=out/adapters/NAME.onnx_adapter` makes the release
      adapters/<name>.onnx_adapter
      adapters/<name>.adapter.json   its card: the base weights it belongs to, what it is for, how
                                     it is asked (system prompt, answer format, generation defaults)
      export.json                the LoRA inputs, each adapter's rank and what it is for

How: the onnxruntime-genai model builder (`adapter_path=`) writes each adapted projection as
`MatMul(x, W) + MatMul(MatMul(x, A), B)` with A (in, r) and B (r, out, already times alpha/r) as
initializers. We build once with a zero rank-1 adapter over the union of every adapter's modules,
then turn each A and B into a graph input whose default is an empty (in, 0) / (0, out) tensor: with
no adapter active the LoRA path adds zeros, so the base answers as the base. Each adapter's A and B
are written with `onnxruntime.AdapterFormat`; onnxruntime-genai feeds them by name when a generator
activates the adapter, with any rank. For int4/int8 bases the LoRA MatMuls stay float (excluded
from quantization), since a quantized (in, r) weight could not be swapped at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from build_side.convert import ConvertedVariant, VariantSpec, builder_command, parse_variant, tool_versions
from edge_agent.adapters import CARD_SUFFIX, folder_digest
from edge_agent.contracts import AdapterCard, AdapterInfo, Quantization, SourceInfo
from edge_agent.errors import TrainingError

LORA_INPUT = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.MatMul\.weight$")
NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RANK_DIM = "lora_r"


@dataclass
class AdapterExport:
    base_dir: Path  # the variant folder: the ONNX base with LoRA inputs
    adapters: dict[str, Path]  # name -> .onnx_adapter file
    info: dict[str, Any] = field(default_factory=dict)


PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")


def variant_spec(variant: str | VariantSpec) -> VariantSpec:
    """`int4` (-> cpu-int4), a convert target such as `cpu-int4`, or a full `VariantSpec`."""
    if isinstance(variant, VariantSpec):
        return variant
    return parse_variant(f"cpu-{variant}" if variant in PRECISIONS else variant)


# -- names --------------------------------------------------------------------------------------


def builder_module_name(torch_name: str) -> str:
    """PEFT's module path -> the model builder's: `...layers.3.self_attn.q_proj` -> `...layers.3.attn.q_proj`."""
    name = torch_name.removeprefix("base_model.model.")
    return name.replace(".self_attn.", ".attn.")


def builder_node_name(module: str, ab: str) -> str:
    """`model.layers.3.attn.q_proj` -> `/model/layers.3/attn/q_proj/lora_A/MatMul` (the builder's node)."""
    parts = module.split(".")
    joined: list[str] = []
    for part in parts:
        if part.isdigit() and joined:
            joined[-1] = f"{joined[-1]}.{part}"
        else:
            joined.append(part)
    return "/" + "/".join(joined) + f"/lora_{ab}/MatMul"


# -- reading the PEFT adapters ------------------------------------------------------------------


def _check_peft_dir(name: str, peft_dir: Path) -> dict[str, Any]:
    if not NAME.match(name):
        raise TrainingError(f"adapter name {name!r}: use lowercase letters, digits and dashes")
    config_file = Path(peft_dir) / "adapter_config.json"
    if not config_file.is_file():
        raise TrainingError(f"{peft_dir}: not a PEFT adapter folder (no adapter_config.json)")
    config = json.loads(config_file.read_text())
    if config.get("peft_type") != "LORA":
        raise TrainingError(
            f"{peft_dir}: a {config.get('peft_type')} adapter; only LoRA exports to ONNX Runtime"
        )
    if config.get("use_dora"):
        raise TrainingError(
            f"{peft_dir}: DoRA adapters do not export as .onnx_adapter files; train plain LoRA"
        )
    return config


def lora_weights(base_hf_dir: Path, adapters: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """{adapter: {builder module: (A (in, r), B (r, out) scaled)}} as float32 numpy arrays."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_hf_dir, dtype=torch.float32)
    names = list(adapters)
    try:
        model = PeftModel.from_pretrained(base, str(adapters[names[0]]), adapter_name=names[0])
        for name in names[1:]:
            model.load_adapter(str(adapters[name]), adapter_name=name)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise TrainingError(f"the adapters do not fit the base model {base_hf_dir}: {exc}") from exc
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    for module_name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for name in names:
            if name not in module.lora_A:
                continue
            a = module.lora_A[name].weight.detach().float()  # (r, in)
            b = module.lora_B[name].weight.detach().float() * module.scaling[name]  # (out, r)
            out[name][builder_module_name(module_name)] = (a.T.contiguous().numpy(), b.T.contiguous().numpy())
    for name, modules in out.items():
        if not modules:
            raise TrainingError(f"adapter {name!r}: no LoRA layers found in {adapters[name]}")
    return out


def _union_adapter(base_hf_dir: Path, modules: set[str], folder: Path) -> None:
    """A rank-1 adapter over every adapted module: only its shape reaches the ONNX graph."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_hf_dir, dtype=torch.float32)
    by_builder = {
        builder_module_name(n): n.removeprefix("base_model.model.") for n, _ in base.named_modules()
    }
    targets = sorted(by_builder[m] for m in modules)
    model = get_peft_model(
        base, LoraConfig(r=1, lora_alpha=1, target_modules=targets, init_lora_weights=True)
    )
    model.save_pretrained(folder)


# -- building the base and rewriting its LoRA weights into inputs -------------------------------


def _run_builder(
    base_hf_dir: Path, adapter_dir: Path, out: Path, spec: VariantSpec, cache: Path, extra: dict[str, str]
) -> None:
    options = [
        *spec.builder_options(),
        f"adapter_path={adapter_dir}",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    target = spec.resolved
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(base_hf_dir), "-o", str(out)]
    cmd += ["-p", target.precision, "-e", target.ep, "-c", str(cache), "--extra_options", *options]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TrainingError(
            f"the onnxruntime-genai model builder failed:\n{(proc.stderr or proc.stdout)[-3000:]}"
        )


def _lora_inputs_from_initializers(src: Path, dst: Path) -> dict[str, dict[str, Any]]:
    """Copy the ONNX folder, with every LoRA weight turned into an input that defaults to empty."""
    import numpy as np
    import onnx_ir as ir

    model = ir.load(src / "model.onnx")
    graph = model.graph
    inputs: dict[str, dict[str, Any]] = {}
    for name in sorted(graph.initializers):
        match = LORA_INPUT.match(name)
        if not match:
            continue
        value = graph.initializers[name]
        rows, cols = (int(d) for d in value.shape)
        shape = [rows, RANK_DIM] if match["ab"] == "A" else [RANK_DIM, cols]
        empty = (rows, 0) if match["ab"] == "A" else (0, cols)
        dtype = value.dtype.numpy()
        value.const_value = ir.tensor(np.zeros(empty, dtype=dtype), name=name)
        value.shape = ir.Shape(shape)
        graph.inputs.append(value)
        inputs[name] = {"shape": shape, "dtype": str(np.dtype(dtype))}
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith("model.onnx"):
            shutil.copy2(f, dst / f.name)
    ir.save(model, dst / "model.onnx", external_data="model.onnx.data")
    return inputs


def _write_adapter_file(
    name: str, weights: dict[str, Any], lora_inputs: dict[str, dict[str, Any]], path: Path
) -> int:
    """One .onnx_adapter with this adapter's A and B under the base graph's input names; its rank."""
    import numpy as np
    import onnxruntime as ort

    params = {}
    ranks = set()
    for module, (a, b) in weights.items():
        for ab, array in (("A", a), ("B", b)):
            key = f"{module}.lora_{ab}.MatMul.weight"
            spec = lora_inputs.get(key)
            if spec is None:
                raise TrainingError(f"adapter {name!r}: the base graph has no LoRA input {key}")
            fixed = spec["shape"][0] if ab == "A" else spec["shape"][1]
            have = array.shape[0] if ab == "A" else array.shape[1]
            if fixed != have:
                raise TrainingError(
                    f"adapter {name!r}: {key} has shape {array.shape}, the base expects {spec['shape']}"
                )
            params[key] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array.astype(spec["dtype"])))
        ranks.add(a.shape[1])
    adapter = ort.AdapterFormat()
    adapter.set_adapter_version(1)
    adapter.set_model_version(1)
    adapter.set_parameters(params)
    adapter.export_adapter(str(path))
    return max(ranks)


def _lora_base(
    base_hf_dir: Path, modules: set[str], spec: VariantSpec, extra: dict[str, str], dest: Path
) -> dict[str, dict[str, Any]]:
    """The ONNX base with LoRA inputs for these modules at `dest`, built once per (weights, variant
    settings, modules, builder): a release that only adds an adapter over the same modules ships the
    very same base files, so registries and devices that hold them store and fetch only the adapter."""
    from build_side.fingerprint import dir_digest, settings_digest
    from build_side.settings import cache_dir

    key = settings_digest(
        {
            "model": dir_digest(base_hf_dir),
            "spec": spec.model_dump(mode="json"),
            "modules": sorted(modules),
            "extra": extra,
            "tools": tool_versions(),
        }
    )
    cached = cache_dir() / "lora-bases" / key[:20]
    if not (cached / "lora_inputs.json").is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".lora-base-", dir=cached.parent) as tmp:
            union = Path(tmp) / "union"
            _union_adapter(base_hf_dir, modules, union)
            built = Path(tmp) / "built"
            _run_builder(base_hf_dir, union, built, spec, Path(tmp) / "cache", extra)
            work = Path(tmp) / "base"
            inputs = _lora_inputs_from_initializers(built, work / "onnx")
            (work / "lora_inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True))
            if cached.exists():
                shutil.rmtree(cached)
            os.replace(work, cached)
    shutil.copytree(cached / "onnx", dest)
    return json.loads((cached / "lora_inputs.json").read_text())


def _variant_record(spec: VariantSpec, source: SourceInfo) -> ConvertedVariant:
    target = spec.resolved
    quantization = None
    if target.precision in ("int4", "int8"):
        quantization = Quantization(
            algorithm=spec.algorithm or "rtn",
            block_size=spec.block_size or 32,
            accuracy_level=spec.accuracy_level,
            symmetric=True if spec.symmetric is None else spec.symmetric,
            extra={"lora": "float LoRA inputs, excluded from quantization"},
        )
    return ConvertedVariant(
        id=spec.id,
        precision=target.precision,
        device=target.device,
        execution_providers=list(target.providers),
        quantization=quantization,
        spec=spec,
        builder=builder_command(spec) + " adapter_path=<union of the adapters' modules>",
        source=source.model_copy(update={"tools": {**tool_versions(), **source.tools}}),
    )


def export_adapters(
    base_hf_dir: Path,
    adapters: dict[str, Path],
    out_dir: Path,
    variant: str | VariantSpec = "cpu-int4",
    *,
    source: SourceInfo | None = None,
    infos: dict[str, AdapterInfo] | None = None,
) -> AdapterExport:
    """Build one ONNX base with LoRA inputs and one `.onnx_adapter` per PEFT folder in `adapters`.

    `variant` is a precision (`int4`), a convert target (`cpu-int4`) or the recipe's `VariantSpec`,
    so the base is built with the same settings as the variant `slmops convert` makes; `out_dir`
    is laid out as a convert output, for `slmops bundle`. Each adapter gets a card beside its file
    with the base's weights digest and its `infos` entry (what it is for and how it is asked).
    """
    if not adapters:
        raise TrainingError("no adapters to export")
    for name, folder in adapters.items():
        _check_peft_dir(name, Path(folder))
    spec = variant_spec(variant)
    base_hf_dir, out_dir = Path(base_hf_dir), Path(out_dir)
    weights = lora_weights(base_hf_dir, adapters)
    modules = {m for w in weights.values() for m in w}
    extra = {}
    if spec.gguf_blocks:
        raise TrainingError(
            f"{spec.id}: a base with LoRA inputs is built by the model builder; carried GGUF blocks "
            "(gguf_blocks) cannot take LoRA inputs: drop gguf_blocks for this variant"
        )
    if spec.resolved.precision in ("int4", "int8"):  # keep every LoRA MatMul float, see the module docstring
        extra["nodes_to_exclude"] = ",".join(builder_node_name(m, ab) for m in sorted(modules) for ab in "AB")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    lora_inputs = _lora_base(base_hf_dir, modules, spec, extra, out_dir / spec.id)
    expected = {f"{m}.lora_{ab}.MatMul.weight" for m in modules for ab in "AB"}
    if set(lora_inputs) != expected:
        missing, extra_names = sorted(expected - set(lora_inputs)), sorted(set(lora_inputs) - expected)
        raise TrainingError(
            "the ONNX base's LoRA weights do not match the adapters' modules "
            f"(missing {missing[:3]}, unexpected {extra_names[:3]}); this architecture's names differ"
        )
    _variant_record(spec, source or SourceInfo(kind="hf-folder", ref=str(base_hf_dir))).save(out_dir)
    (out_dir / "adapters").mkdir()
    base_digest = folder_digest(out_dir / spec.id)
    files, info = {}, {}
    for name in adapters:
        path = out_dir / "adapters" / f"{name}.onnx_adapter"
        rank = _write_adapter_file(name, weights[name], lora_inputs, path)
        card = AdapterCard(
            **(infos or {}).get(name, AdapterInfo(name=name)).model_dump(exclude={"name"}),
            name=name,
            base_weights_sha256=base_digest,
        )
        write_card(card, path)
        files[name] = path
        info[name] = {
            "file": f"adapters/{name}.onnx_adapter",
            "rank": rank,
            "modules": len(weights[name]),
            "trained_for": card.trained_for,
            "system": card.prompt.system,
        }
    summary = {
        "base": spec.id,
        "base_weights_sha256": base_digest,
        "precision": spec.resolved.precision,
        "lora_inputs": len(lora_inputs),
        "adapters": info,
    }
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2))
    return AdapterExport(out_dir / spec.id, files, summary)


def card_path(adapter_file: Path) -> Path:
    return adapter_file.with_name(adapter_file.name.removesuffix(".onnx_adapter") + CARD_SUFFIX)


def write_card(card: AdapterCard, adapter_file: Path) -> Path:
    path = card_path(adapter_file)
    path.write_text(card.model_dump_json(indent=2, exclude_defaults=False) + "\n")
    return path


def read_card(adapter_file: Path) -> AdapterCard:
    path = card_path(adapter_file)
    try:
        return AdapterCard.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise TrainingError(
            f"{adapter_file}: no adapter card {path.name} beside it; export adapters with "
            "`slmops adapters export` (the card records the base they belong to)"
        ) from exc
    except ValueError as exc:
        raise TrainingError(f"{path}: not a valid adapter card ({exc})") from exc


# -- trying them with onnxruntime-genai ---------------------------------------------------------


class AdapterSession:
    """One ONNX base loaded once in onnxruntime-genai with its adapters; greedy answers per adapter."""

    def __init__(self, base_dir: Path, adapter_files: dict[str, Path]) -> None:
        import onnxruntime_genai as og

        self._og = og
        try:
            self.model = og.Model(str(base_dir))
            self.tokenizer = og.Tokenizer(self.model)
            self.adapters = og.Adapters(self.model)
            for name, path in adapter_files.items():
                self.adapters.load(str(path), name)
        except Exception as exc:  # onnxruntime-genai raises plain RuntimeError/Exception for every failure
            raise TrainingError(
                f"{base_dir}: onnxruntime-genai could not load the base or an adapter: {exc}"
            ) from exc
        self.names = list(adapter_files)

    def prompt_ids(self, prompt: str | list[dict[str, str]], system: str | None = None) -> list[int]:
        """Token ids of a user message (with an optional system turn) or of whole chat turns."""
        if isinstance(prompt, str):
            system_turn = [{"role": "system", "content": system}] if system else []
            prompt = [*system_turn, {"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(json.dumps(prompt), add_generation_prompt=True)
        return list(self.tokenizer.encode(text))

    def generator(self, ids: list[int], adapter: str | None, max_new_tokens: int) -> Any:
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
        generator = self._og.Generator(self.model, params)
        if adapter is not None:
            generator.set_active_adapter(self.adapters, adapter)
        generator.append_tokens(ids)
        return generator

    def answer(
        self,
        prompt: str | list[dict[str, str]],
        adapter: str | None = None,
        system: str | None = None,
        max_new_tokens: int = 48,
    ) -> str:
        ids = self.prompt_ids(prompt, system)
        generator = self.generator(ids, adapter, max_new_tokens)
        while not generator.is_done():
            generator.generate_next_token()
        return self.tokenizer.decode(generator.get_sequence(0)[len(ids) :]).strip()


def score_adapters(
    session: AdapterSession, runs: dict[str, Path], limit: int | None = None
) -> list[dict[str, Any]]:
    """Each adapter on its own run's validation set, in onnxruntime-genai, beside the bare base.

    `runs` maps an adapter name to the `slmops finetune` folder that trained it: its finetune.json
    gives the data, the template and the seed, so the split is the very one scored in PyTorch.
    """
    from build_side.finetune.config import FinetuneConfig
    from build_side.finetune.data import load_examples
    from build_side.finetune.evaluate import is_hit, resolve_metric

    rows = []
    for name, run_dir in runs.items():
        if name not in session.names:
            raise TrainingError(f"no adapter {name!r} is loaded (have {session.names})")
        try:
            config = FinetuneConfig.model_validate(
                json.loads((Path(run_dir) / "finetune.json").read_text())["config"]
            )
        except (OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"{run_dir}: not a finetune output folder ({exc})") from exc
        _, val = load_examples(config.data, config.train.seed)
        val = val[:limit] if limit else val
        metric = resolve_metric(config.eval.metric, val)
        if metric == "perplexity":
            raise TrainingError(
                f"{name}: its data has no labels; only accuracy or exact match are scored here"
            )
        row: dict[str, Any] = {"adapter": name, "metric": metric, "examples": len(val)}
        for label, use in (("base", None), ("with_adapter", name)):
            if isinstance(val[0].prompt, str):
                raise TrainingError(f"{name}: scoring in onnxruntime-genai needs chat prompts")
            answers = [session.answer(e.prompt, use, max_new_tokens=config.eval.max_new_tokens) for e in val]
            row[label] = round(
                sum(is_hit(metric, a, e) for a, e in zip(answers, val, strict=True)) / len(val), 4
            )
            row[f"{label}_samples"] = [
                {"expected": e.response, "answer": a} for e, a in list(zip(val, answers, strict=True))[:3]
            ]
        rows.append(row)
    return rows
