"""Several adapters on one ONNX base: exported, loaded by onnxruntime-genai, each changing the answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from build_side.cli.main import app
from build_side.finetune.export_adapters import AdapterSession, export_adapters, score_adapters
from tests.finetune.conftest import tiny_config

runner = CliRunner()
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def peft_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real PEFT adapters with different ranks and modules, their B made large so they show."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("peft")
    made = {}
    for seed, (name, r, targets) in enumerate([("alpha", 4, ALL), ("beta", 8, ["q_proj", "v_proj"])]):
        torch.manual_seed(seed)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"),
        )
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.normal_(0, 0.5)
        model.save_pretrained(root / name)
        made[name] = root / name
    return made


def torch_last_logits(base: Path, adapter: Path | None, ids: list[int]) -> np.ndarray:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()


def test_fp32_base_and_adapters_match_pytorch(
    tiny_model_dir: Path, peft_adapters: dict[str, Path], tmp_path: Path, task_file: Path
) -> None:
    from build_side.convert import load_variants

    out = tmp_path / "export"
    result = export_adapters(tiny_model_dir, peft_adapters, out, "fp32")
    assert result.base_dir == out / "cpu-fp32" and (out / "cpu-fp32" / "genai_config.json").is_file()
    assert [v.id for v in load_variants(out)] == ["cpu-fp32"]  # `slmops bundle` reads it as convert output
    info = json.loads((out / "export.json").read_text())
    assert info["lora_inputs"] == 2 * 2 * len(ALL)  # the union: 2 layers x 7 modules x (A, B)
    assert {n: (a["rank"], a["modules"]) for n, a in info["adapters"].items()} == {
        "alpha": (4, 14),
        "beta": (8, 4),
    }

    session = AdapterSession(result.base_dir, result.adapters)
    ids = session.prompt_ids("what colour is the sky?")
    logits = {}
    for name in (None, "alpha", "beta"):
        generator = session.generator(ids, name, max_new_tokens=4)
        logits[name] = np.asarray(generator.get_output("logits")).reshape(
            -1, 1, np.shape(generator.get_output("logits"))[-1]
        )[-1, 0]
        expected = torch_last_logits(tiny_model_dir, peft_adapters[name] if name else None, ids)
        np.testing.assert_allclose(logits[name], expected, atol=1e-4)  # the same model, in ONNX Runtime
    assert (
        np.abs(logits["alpha"] - logits[None]).max() > 0.1
        and np.abs(logits["beta"] - logits[None]).max() > 0.1
    )
    # the base is unchanged after an adapter was used (no state leaks between generators)
    generator = session.generator(ids, None, max_new_tokens=4)
    np.testing.assert_allclose(
        np.asarray(generator.get_output("logits")).reshape(-1, logits[None].shape[-1])[-1],
        logits[None],
        atol=1e-5,
    )
    # each adapter scored on a run's validation set through onnxruntime-genai (the run's finetune.json)
    run = tmp_path / "run"
    run.mkdir()
    config = tiny_config(task_file, eval__max_new_tokens=2)
    (run / "finetune.json").write_text(json.dumps({"config": config.model_dump(mode="json")}))
    (row,) = score_adapters(session, {"alpha": run}, limit=6)
    assert (row["adapter"], row["metric"], row["examples"]) == ("alpha", "accuracy", 6)
    assert 0 <= row["base"] <= 1 and 0 <= row["with_adapter"] <= 1
    assert row["base_samples"][0]["answer"] != row["with_adapter_samples"][0]["answer"]


def test_int4_export_bundle_and_try(
    tiny_model_dir: Path, peft_adapters: dict[str, Path], tmp_path: Path, signing_key
) -> None:
    from build_side.bundle import AdapterFile, BundleSettings, assemble

    out = tmp_path / "export"
    pairs = [f"{n}={p}" for n, p in peft_adapters.items()]
    args = [
        "adapters",
        "export",
        str(tiny_model_dir),
        *pairs,
        "--out",
        str(out),
        "--variant",
        "cpu-int4",
        "--json",
    ]
    made = runner.invoke(app, args)
    assert made.exit_code == 0, made.output[-2000:]
    info = json.loads(made.stdout)
    assert info["precision"] == "int4" and set(info["adapter_files"]) == {"alpha", "beta"}

    files = [AdapterFile(name=n, path=out / "adapters" / f"{n}.onnx_adapter") for n in peft_adapters]
    settings = BundleSettings(name="tiny-adapters", version="1.0.0", adapters=files)
    bundle = assemble(out, tmp_path / "bundles", settings, signing_key).path
    assert sorted(p.name for p in (bundle / "adapters").iterdir()) == [
        "alpha.onnx_adapter",
        "beta.onnx_adapter",
    ]
    card = json.loads((out / "adapters" / "alpha.adapter.json").read_text())
    assert card["base_weights_sha256"] == info["base_weights_sha256"]

    tried = runner.invoke(
        app, ["adapters", "try", str(bundle), "--prompt", "hello there", "--max-new-tokens", "6", "--json"]
    )
    assert tried.exit_code == 0, tried.output[-2000:]
    answers = {row["adapter"]: row["answer"] for row in json.loads(tried.stdout)}
    assert set(answers) == {None, "alpha", "beta"}
    assert len({answers[None], answers["alpha"], answers["beta"]}) == 3  # each adapter changes the answer
