"""Carrying GGUF blocks: the parsed blocks must de-quantize to exactly what gguf (and so transformers,
which builds the fp32 source from it) de-quantizes, in MatMulNBits' packing and row order."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import quants
from gguf.constants import GGMLQuantizationType as QT

from build_side import gguf_carry as gc
from build_side.convert import VariantSpec


def test_q4_1_blocks_dequantize_exactly_like_gguf() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 96)).astype(np.float32)
    raw = quants.quantize(w, QT.Q4_1)
    q, d, m = gc._q4_1_blocks(raw, 6, 96)
    assert q.shape == (6, 3, 32) and q.max() <= 15
    np.testing.assert_array_equal(gc.dequantize_q4_1(q, d, m), quants.dequantize(raw, QT.Q4_1))
    # float zero point -m/d gives back the same weights through MatMulNBits' (q - zp) * scale
    zp = -m / d
    np.testing.assert_allclose(
        ((q - zp[..., None]) * d[..., None]).reshape(6, -1), gc.dequantize_q4_1(q, d, m), atol=1e-5
    )


def test_q8_0_blocks_dequantize_exactly_like_gguf() -> None:
    w = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    raw = quants.quantize(w, QT.Q8_0)
    q, d = gc._q8_0_blocks(raw, 4, 64)
    as_uint8 = (q.astype(np.int16) + 128).astype(np.uint8)
    back = ((as_uint8.astype(np.float32) - 128) * d[..., None]).reshape(4, -1)
    np.testing.assert_array_equal(back, quants.dequantize(raw, QT.Q8_0))


def test_pack4_puts_even_weights_in_the_low_nibble() -> None:
    q = np.arange(32, dtype=np.uint8).reshape(1, 1, 32) % 16
    packed = gc._pack4(q)
    assert packed.shape == (1, 1, 16)
    assert (
        packed[0, 0, 0] == (0 | 1 << 4)
        and packed[0, 0, 8] == (0 | 1 << 4)
        and packed[0, 0, 1] == (2 | 3 << 4)
    )


def test_unpermute_rows_matches_transformers() -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rows = np.arange(3 * 8 * 2)[:, None].astype(np.float32)
    expected = LlamaTensorProcessor._reverse_permute_weights(None, rows, 3)[:, 0]
    np.testing.assert_array_equal(gc._unpermute_rows(len(rows), 3), expected.astype(int))


def test_gguf_blocks_needs_block_32_and_int8_head() -> None:
    VariantSpec(id="cpu-int4", gguf_blocks="offset", int8_lm_head=True, symmetric=False)
    with pytest.raises(ValueError, match="gguf_blocks"):
        VariantSpec(id="cpu-int4", gguf_blocks="offset", int8_lm_head=False)
    with pytest.raises(ValueError, match="gguf_blocks"):
        VariantSpec(id="cpu-int4", gguf_blocks="offset", int8_lm_head=True, block_size=64)


LINEARS = {
    "down": ("ffn_down", "mlp/down_proj"),
    "gate": ("ffn_gate", "mlp/gate_proj"),
    "up": ("ffn_up", "mlp/up_proj"),
}


def _tiny_model(tmp_path, linears: tuple[str, ...] = ("down",), rows: int = 8, cols: int = 64):
    """An ONNX graph of MatMulNBits nodes named like the builder's, all reading input x, and a GGUF
    with their Q4_1 weights. Returns the variant folder, the GGUF and {output: de-quantized weight}."""
    import gguf
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    tmp_path.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    blocks = cols // 32
    nodes, inits, outputs, weights = [], [], [], {}
    for kind in linears:
        gname, path = LINEARS[kind]
        w = rng.normal(size=(rows, cols)).astype(np.float32)
        raw = quants.quantize(w, QT.Q4_1)
        writer.add_tensor(f"blk.0.{gname}.weight", raw, raw_shape=raw.shape, raw_dtype=QT.Q4_1)
        weights[f"y_{kind}"] = quants.dequantize(raw, QT.Q4_1)
        inits += [
            numpy_helper.from_array(np.zeros((rows, blocks, 16), np.uint8), f"w_{kind}"),
            numpy_helper.from_array(np.ones((rows, blocks), np.float32), f"s_{kind}"),
            numpy_helper.from_array(np.zeros((rows, (blocks + 1) // 2), np.uint8), f"zp_{kind}"),
        ]
        nodes.append(helper.make_node(
            "MatMulNBits", ["x", f"w_{kind}", f"s_{kind}", f"zp_{kind}"], [f"y_{kind}"],
            f"/model/layers.0/{path}/MatMul_Q4",
            domain="com.microsoft", K=cols, N=rows, bits=4, block_size=32, accuracy_level=0,
        ))  # fmt: skip
        outputs.append(helper.make_tensor_value_info(f"y_{kind}", TensorProto.FLOAT, [1, None, rows]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, cols])], outputs, inits
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    variant = tmp_path / "variant"
    variant.mkdir()
    onnx.save(model, str(variant / "model.onnx"))
    return variant, tmp_path / "m.gguf", weights


def _tiny_pair(tmp_path, rows: int = 8, cols: int = 64):
    variant, gguf_path, weights = _tiny_model(tmp_path, ("down",), rows, cols)
    return variant, gguf_path, weights["y_down"]


def _run(variant, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(variant / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"x": x}), strict=True))


@pytest.mark.parametrize("mode", ["offset", "float"])
def test_carried_matmul_is_exact_in_onnxruntime(tmp_path, mode: str) -> None:
    import onnxruntime as ort

    variant, gguf_path, w = _tiny_pair(tmp_path)
    assert gc.carry_gguf_blocks(variant, gguf_path, mode) == {"q4_1": 1, "q8_0": 0}
    x = np.random.default_rng(3).normal(size=(1, 3, w.shape[1])).astype(np.float32)
    sess = ort.InferenceSession(str(variant / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w.T, rtol=1e-4, atol=1e-4)


def test_uint8_zero_points_are_not_exact(tmp_path) -> None:
    import onnxruntime as ort

    variant, gguf_path, w = _tiny_pair(tmp_path)
    gc.carry_gguf_blocks(variant, gguf_path, "uint8")
    x = np.random.default_rng(3).normal(size=(1, 3, w.shape[1])).astype(np.float32)
    sess = ort.InferenceSession(str(variant / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"x": x})[0] - x @ w.T).max() > 1e-2


@pytest.mark.parametrize("cols", [64, 1536])
def test_fused_remainder_is_near_exact_and_far_better_than_rounding(tmp_path, cols: int) -> None:
    """The fused mode's error is a small fraction of the rounded zero points' (uint8 mode's)."""
    x = np.random.default_rng(3).normal(size=(1, 3, cols)).astype(np.float32)
    variant, gguf_path, w = _tiny_pair(tmp_path / "fused", rows=16, cols=cols)
    assert gc.carry_gguf_blocks(variant, gguf_path, "fused")["q4_1"] == 1
    fused_err = np.abs(_run(variant, x)["y_down"] - x @ w.T).max()
    variant, gguf_path, w = _tiny_pair(tmp_path / "uint8", rows=16, cols=cols)
    gc.carry_gguf_blocks(variant, gguf_path, "uint8")
    rounded_err = np.abs(_run(variant, x)["y_down"] - x @ w.T).max()
    assert fused_err < rounded_err / 100
    assert fused_err < 1e-3 * np.abs(x @ w.T).max()


def test_fused_mode_folds_gate_and_up_into_one_matmul(tmp_path) -> None:
    import onnx

    variant, gguf_path, weights = _tiny_model(tmp_path, ("gate", "up"), rows=8, cols=64)
    counts = gc.carry_gguf_blocks(variant, gguf_path, "fused")
    assert counts["q4_1"] == 2 and counts["merged"] == 2
    ops = [n.op_type for n in onnx.load(str(variant / "model.onnx")).graph.node]
    assert ops.count("MatMulNBits") == 1 and ops.count("Split") == 1
    x = np.random.default_rng(4).normal(size=(1, 2, 64)).astype(np.float32)
    out = _run(variant, x)
    for name, w in weights.items():
        np.testing.assert_allclose(out[name], x @ w.T, rtol=1e-3, atol=1e-3)


def test_plain_cpu_int4_from_a_q4_1_gguf_carries_its_blocks(tmp_path) -> None:
    """What won in docs/int4.md is what `slmops convert SOURCE -v cpu-int4` builds from a Q4_1 GGUF."""
    import gguf

    from build_side.convert import with_source_defaults
    from edge_agent.contracts.manifest import SourceInfo

    def write(name: str, linear: QT) -> SourceInfo:
        path = tmp_path / name
        writer = gguf.GGUFWriter(str(path), "llama")
        w = np.random.default_rng(5).normal(size=(4, 64)).astype(np.float32)
        for tensor, qtype in (("blk.0.ffn_down.weight", linear), ("token_embd.weight", QT.Q8_0)):
            raw = quants.quantize(w, qtype)
            writer.add_tensor(tensor, raw, raw_shape=raw.shape, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return SourceInfo(kind="gguf", ref=str(path))

    q4_1, q8_0 = write("q4_1.gguf", QT.Q4_1), write("q8_0.gguf", QT.Q8_0)
    carried = with_source_defaults(VariantSpec(id="cpu-int4"), q4_1)
    assert (carried.gguf_blocks, carried.int8_lm_head, carried.symmetric, carried.accuracy_level) == (
        "fused",
        True,
        False,
        4,
    )
    assert with_source_defaults(VariantSpec(id="cpu-int4"), q8_0).gguf_blocks is None  # not Q4_1 blocks
    own = VariantSpec(id="cpu-int4", block_size=32)  # any setting of its own: the builder's defaults
    assert with_source_defaults(own, q4_1) == own
    assert with_source_defaults(VariantSpec(id="cpu-int8"), q4_1).gguf_blocks is None
    hf = SourceInfo(kind="hf-folder", ref=str(tmp_path))
    assert with_source_defaults(VariantSpec(id="cpu-int4"), hf).gguf_blocks is None


def test_the_shipped_recipe_builds_what_convert_builds_by_default() -> None:
    """manifests/recipes/smollm2-135m-instruct.yaml spells out the carried cpu-int4; keep it equal to
    what a plain `-v cpu-int4` from that source gets, so the two cannot drift apart."""
    from pathlib import Path

    from build_side.convert import with_source_defaults
    from build_side.recipe import load_recipe
    from edge_agent.contracts.manifest import SourceInfo

    recipe = load_recipe(Path(__file__).parents[2] / "manifests/recipes/smollm2-135m-instruct.yaml")
    int4 = next(v for v in recipe.convert.variants if v.id == "cpu-int4")
    default = with_source_defaults(VariantSpec(id="cpu-int4"), SourceInfo(kind="named", ref=recipe.source))
    assert VariantSpec.model_validate(int4.model_dump()) == default


def test_the_tied_8bit_embedding_reads_the_lm_heads_table_itself(tmp_path) -> None:
    """The builder's Reshape of the head's table (folded by onnxruntime into a second copy) is gone;
    the embedding gathers the same rows, and the head's MatMul is untouched."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    vocab, hidden = 40, 64
    rng = np.random.default_rng(5)
    table = rng.integers(0, 256, size=(vocab, hidden // 32, 32), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, size=(vocab, hidden // 32)).astype(np.float32)
    zps = np.full((vocab, hidden // 32), 128, np.uint8)
    inits = [
        numpy_helper.from_array(table, "lm_head.MatMul.weight_Q8G32"),
        numpy_helper.from_array(scales, "lm_head.MatMul.weight_scale"),
        numpy_helper.from_array(zps, "lm_head.MatMul.weight_zp"),
        numpy_helper.from_array(np.array([vocab, hidden], np.int64), "table_shape"),
    ]
    head = ["lm_head.MatMul.weight_Q8G32", "lm_head.MatMul.weight_scale", "lm_head.MatMul.weight_zp"]
    nodes = [
        helper.make_node("Reshape", [head[0], "table_shape"], ["table2d"], "/model/embed_tokens/Reshape"),
        helper.make_node(
            "GatherBlockQuantized", ["table2d", "ids", *head[1:]], ["embeds"], "/model/embed_tokens/GatherBlockQuantized",
            domain="com.microsoft", bits=8, block_size=32, gather_axis=0, quantize_axis=1,
        ),
        helper.make_node(
            "MatMulNBits", ["embeds", *head], ["logits"], "/lm_head/MatMul_Q8",
            domain="com.microsoft", K=hidden, N=vocab, bits=8, block_size=32, accuracy_level=0,
        ),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])],
        [
            helper.make_tensor_value_info("embeds", TensorProto.FLOAT, [1, None, hidden]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, None, vocab]),
        ],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    ids = np.array([[3, 0, 39, 3]], np.int64)

    def run(m) -> list[np.ndarray]:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"ids": ids})

    before = run(model)
    assert gc.share_embedding_table(model)
    after = run(model)
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    assert gather.input[0] == head[0]  # the head's own table, no Reshape between
    assert not [n for n in model.graph.node if n.name == "/model/embed_tokens/Reshape"]
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert not gc.share_embedding_table(model)  # nothing left to rewire
    onnx.checker.check_model(model)


def test_a_builder_option_the_installed_onnxruntime_genai_lacks_is_refused_before_building(tmp_path) -> None:
    from importlib.metadata import version

    from build_side.convert import CARRIED_INT4, builder_option_names, convert
    from edge_agent.contracts.manifest import SourceInfo
    from edge_agent.errors import ConvertError

    assert {"prune_lm_head", "shared_embeddings", "accuracy_level"} <= (builder_option_names() or set())
    source = SourceInfo(kind="hf-folder", ref=str(tmp_path))
    misspelt = VariantSpec(id="cpu-int4", **{**CARRIED_INT4, "extra_options": {"prune_lm_hed": "true"}})
    expected = rf"onnxruntime-genai {version('onnxruntime-genai')} has no option 'prune_lm_hed'"
    with pytest.raises(ConvertError, match=expected):
        convert(tmp_path / "hf", [misspelt], tmp_path / "out", source)
    assert not (tmp_path / "out").exists()  # refused before anything was built
