"""Training against int4 weights: the round trip equals onnxruntime's MatMulNBits bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from build_side.finetune.quantsim import int4_round_trip, quantize_base


@pytest.mark.parametrize(("k", "n", "symmetric"), [(64, 48, True), (80, 16, True), (64, 24, False)])
def test_round_trip_matches_matmulnbits(k: int, n: int, symmetric: bool) -> None:
    torch.manual_seed(k + n)
    weight = torch.randn(n, k)  # torch's (out, in)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "B"], ["Y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [k, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [k, n])],
        [numpy_helper.from_array(weight.T.contiguous().numpy(), "B")],
    )
    quantizer = MatMulNBitsQuantizer(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
        block_size=32,
        is_symmetric=symmetric,
        accuracy_level=0,
    )
    quantizer.process()
    assert [node.op_type for node in quantizer.model.model.graph.node] == ["MatMulNBits"]
    session = ort.InferenceSession(
        quantizer.model.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    dequantized = session.run(None, {"X": np.eye(k, dtype=np.float32)})[0]  # identity in: the weights out
    np.testing.assert_array_equal(int4_round_trip(weight, 32, symmetric).T.numpy(), dequantized)


def test_quantize_base_rounds_each_weight_once(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = model.get_input_embeddings().weight.detach().clone()
    count = quantize_base(model)
    assert count == 2 * 7 + 1  # 2 layers x 7 projections + the embedding the head is tied to
    after = model.get_input_embeddings().weight
    assert model.lm_head.weight is after and not torch.equal(before, after)
    assert torch.equal(after, int4_round_trip(before))  # the tied tensor, rounded as one
    assert len(torch.unique(after[0, :32])) <= 16  # one block: at most 16 distinct levels
