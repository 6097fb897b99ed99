"""A tiny ONNX variant whose LoRA weights are inputs, and `.onnx_adapter` files that feed them.

How: peft puts a random LoRA (q_proj, v_proj) on the tiny llama; the onnxruntime-genai model builder
with `adapter_path=` exports the graph with the LoRA MatMuls; then every lora_A/lora_B weight
becomes a graph input that keeps an initializer as its default (lora_B zero, so with no adapter
active the model is the base model), and the trained weights go into `.onnx_adapter` files with
onnxruntime's AdapterFormat. A second adapter holds other random weights, so that outputs differ.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np


def build_lora_variant(hf_dir: Path, out: Path, work: Path) -> tuple[Path, dict[str, Path]]:
    """-> (variant folder, {adapter name: .onnx_adapter path}); adapters are written under `work`."""
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import helper, numpy_helper
    from onnxruntime_genai.models import builder
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    peft_dir = work / "peft"
    torch.manual_seed(1)
    base = LlamaForCausalLM.from_pretrained(hf_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(peft_dir)

    with contextlib.redirect_stdout(io.StringIO()):  # the builder prints every tensor it saves
        opts = builder.parse_extra_options(
            None, str(hf_dir), str(out), "fp32", "cpu", str(work / "cache"), [f"adapter_path={peft_dir}"]
        )
        builder.create_model(None, str(hf_dir), str(out), "fp32", "cpu", str(work / "cache"), **opts)

    model = onnx.load(out / "model.onnx")
    trained: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if ".lora_A." not in init.name and ".lora_B." not in init.name:
            continue
        weights = numpy_helper.to_array(init).copy()
        trained[init.name] = weights
        if ".lora_B." in init.name:  # base behaviour: the LoRA branch adds nothing
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(weights), init.name))
        rows, cols = weights.shape
        dims = [rows, "lora_r"] if ".lora_A." in init.name else ["lora_r", cols]
        model.graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, dims))
    assert trained, "the builder made no LoRA weights"
    (out / "model.onnx.data").unlink()
    onnx.save(model, out / "model.onnx", save_as_external_data=True, location="model.onnx.data")

    rng = np.random.default_rng(7)
    adapters = {
        "alpha": trained,
        "beta": {k: (rng.standard_normal(v.shape) * 0.5).astype(np.float32) for k, v in trained.items()},
    }
    paths = {}
    for name, params in adapters.items():
        fmt = ort.AdapterFormat()
        fmt.set_adapter_version(1)
        fmt.set_model_version(1)
        fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in params.items()})
        paths[name] = work / f"{name}.onnx_adapter"
        fmt.export_adapter(str(paths[name]))
    return out, paths
