"""Carry a Q4_1 / Q8_0 GGUF's quantized blocks into an int4 ONNX variant, without quantizing twice.

The named SmolLM2 source is a Q4_1 GGUF: its fp32 "source" is those blocks de-quantized. Quantizing
that fp32 again (the builder's RTN, integer zero points) moves every block's offset by up to half a
step, which costs ~30 % top-1 agreement on a 135M model. Q4_1 blocks are `d * q + m` (32 weights, fp16
d and m, q in 0..15): MatMulNBits holds them exactly as `(q - zp) * scale` with scale = d and a
*float* zero point zp = -m / d (ONNX Runtime accepts zero points of the scales' type). The tied
Q8_0 embedding / LM head maps exactly onto 8-bit MatMulNBits: uint8 q + 128, zero point 128.

The variant must come from the builder with block size 32 and an 8-bit LM head (graph shape and
names); only initializer values change.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_agent.errors import ConvertError

QK = 32  # weights per block in Q4_1 and Q8_0


class CarryError(ConvertError):
    """The GGUF and the ONNX variant do not line up (types, shapes or names)."""


def _q4_1_blocks(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q [rows, cols/32, 32] uint8, d [rows, cols/32] fp32, m [rows, cols/32] fp32) of a Q4_1 tensor."""
    blocks = raw.reshape(rows, cols // QK, 20)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = blocks[..., 4:20]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # low nibbles are weights 0..15, high 16..31
    return q, d, m


def _q8_0_blocks(raw: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    blocks = raw.reshape(rows, cols // QK, 34)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = blocks[..., 2:34].copy().view(np.int8)
    return q, d


def _unpermute_rows(n_rows: int, n_head: int) -> np.ndarray:
    """Row order that undoes llama.cpp's rotary permutation of attn_q / attn_k (as transformers does)."""
    idx = np.arange(n_rows)
    dim = n_rows // n_head // 2
    return idx.reshape(n_head, dim, 2).swapaxes(2, 1).reshape(n_rows)


def _pack4(q: np.ndarray) -> np.ndarray:
    """[N, blocks, 32] values 0..15 -> MatMulNBits' [N, blocks, 16] (even index in the low nibble)."""
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def dequantize_q4_1(q: np.ndarray, d: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (q.astype(np.float32) * d[..., None] + m[..., None]).reshape(q.shape[0], -1)


def carry_gguf_blocks(variant_dir: Path, gguf_path: Path, zero_points: str = "float") -> dict[str, int]:
    """Rewrite the variant's MatMulNBits weights from the GGUF's blocks, in place.

    zero_points: "float" (exact, but ONNX Runtime 1.32's CPU kernel de-quantizes float zero points on
    every call: ~20x slower), "uint8" (rounded to the 4-bit grid: fast, as inexact as quantizing
    again), "offset" (uint8, plus the per-block remainder added back as blocksum(x) @ remainder:
    exact, but four extra nodes per linear and two per layer input) or "fused" (the remainder as two
    extra 4-bit digits inside the same MatMulNBits, fed the input's block sums: within ~1/400 of a
    step of exact, two extra nodes per layer input and none per linear).
    Returns counts of what was carried.
    """
    import gguf
    import onnx
    from onnx import numpy_helper

    reader = gguf.GGUFReader(str(gguf_path))
    tensors = {t.name: t for t in reader.tensors}
    n_head = int(reader.fields["llama.attention.head_count"].parts[-1][0])
    n_kv = int(reader.fields["llama.attention.head_count_kv"].parts[-1][0])

    model_path = variant_dir / "model.onnx"
    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}

    def q41(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = tensors.get(name)
        if t is None or t.tensor_type.name != "Q4_1":
            raise CarryError(f"{name}: not a Q4_1 tensor in {gguf_path.name}")
        cols, rows = (int(x) for x in t.shape)
        return _q4_1_blocks(np.asarray(t.data), rows, cols)

    def put(name: str, value: np.ndarray) -> None:
        old = inits[name]
        new = numpy_helper.from_array(value, name)
        old.CopyFrom(new)

    counts = {"q4_1": 0, "q8_0": 0}
    blocksums: dict[str, str] = {}  # MatMulNBits input -> its per-block sums (offset mode)
    augmented: dict[str, tuple[str, int]] = {}  # input -> (input with its block sums, their width) (fused)
    extra_nodes: list[onnx.NodeProto] = []  # placed by _topological once all are known
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("block_size") != QK:
            raise CarryError(f"{node.name}: block size {attrs.get('block_size')}, carrying needs {QK}")
        w_name, s_name, zp_name = node.input[1], node.input[2], node.input[3]
        if node.name.startswith("/lm_head/"):
            t = tensors["token_embd.weight"]
            if t.tensor_type.name != "Q8_0" or attrs["bits"] != 8:
                raise CarryError("the LM head needs a Q8_0 embedding and an 8-bit MatMulNBits")
            cols, rows = (int(x) for x in t.shape)
            q, d = _q8_0_blocks(np.asarray(t.data), rows, cols)
            put(w_name, (q.astype(np.int16) + 128).astype(np.uint8))
            put(s_name, d.astype(np.float32))
            put(zp_name, np.full(d.shape, 128, np.uint8))
            counts["q8_0"] += 1
            continue
        layer = node.name.split("/")[2].split(".")[1]
        kind = node.name.split("/")[3:5]
        if kind == ["attn", "qkv_proj"]:
            parts = []
            for g, heads in (("attn_q", n_head), ("attn_k", n_kv), ("attn_v", None)):
                q, d, m = q41(f"blk.{layer}.{g}.weight")
                if heads is not None:
                    order = _unpermute_rows(q.shape[0], heads)
                    q, d, m = q[order], d[order], m[order]
                parts.append((q, d, m))
            q, d, m = (np.concatenate(x, axis=0) for x in zip(*parts, strict=True))
        else:
            gname = {
                ("attn", "o_proj"): "attn_output",
                ("mlp", "gate_proj"): "ffn_gate",
                ("mlp", "up_proj"): "ffn_up",
                ("mlp", "down_proj"): "ffn_down",
            }.get(tuple(kind))
            if gname is None:
                raise CarryError(f"{node.name}: no GGUF tensor for it")
            q, d, m = q41(f"blk.{layer}.{gname}.weight")
        if q.shape[0] != attrs["N"] or q.shape[1] * QK != attrs["K"]:
            raise CarryError(
                f"{node.name}: GGUF shape {q.shape} does not match N={attrs['N']} K={attrs['K']}"
            )
        counts["q4_1"] += 1
        zp = -m / np.where(d == 0, np.float32(1), d)  # exact, but fractional
        if zero_points == "float":
            zp_out = zp.astype(np.float32)
        else:
            zpi = np.clip(np.rint(zp), 0, 15).astype(np.uint8)
            residual = (m + zpi.astype(np.float32) * d).astype(np.float32)  # what the integer misses
            x = node.input[0]
            if zero_points == "fused":
                if x not in augmented:
                    augmented[x] = _augment_input(model, x, attrs["K"], extra_nodes)
                x_aug, pad = augmented[x]
                q_r, s_r, z_r = _remainder_digits(residual, pad)
                q, d, zpi = (np.concatenate(pair, axis=1) for pair in ((q, q_r), (d, s_r), (zpi, z_r)))
                node.input[0] = x_aug
                next(a for a in node.attribute if a.name == "K").i = q.shape[1] * QK
            elif zero_points == "offset":
                if x not in blocksums:
                    blocksums[x] = _blocksum_input(model, x, attrs["K"], extra_nodes)
                _add_offset(model, node, blocksums[x], residual, extra_nodes)
            zp_out = _pack_zero_points(zpi)
        put(w_name, _pack4(q))
        put(s_name, d.astype(np.float32))
        put(zp_name, zp_out)

    if counts["q8_0"] and share_embedding_table(model):
        counts["embedding_shared"] = 1
    if zero_points == "fused":
        counts["merged"] = merge_parallel_matmuls(model)
    if extra_nodes:
        nodes = list(model.graph.node) + extra_nodes
        del model.graph.node[:]
        model.graph.node.extend(
            _topological(
                nodes, {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer}
            )
        )
    data_name = "model.onnx.data"
    (variant_dir / data_name).unlink(missing_ok=True)
    onnx.save(
        model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name
    )
    return counts


def share_embedding_table(model) -> bool:
    """Let the tied 8-bit embedding read the LM head's table itself, so the process holds it once.

    The builder feeds GatherBlockQuantized a Reshape of the head's [vocab, blocks, 32] table to
    [vocab, hidden]; onnxruntime folds that constant Reshape into a second, heap-resident 28 MB copy
    (SmolLM2), next to the head's pre-packed one. Gathering from the 3-D table directly
    (quantize_axis 2, scales and zero points viewed as [vocab, blocks, 1]) and reshaping the gathered
    rows instead leaves the table in the memory-mapped weight file, of which only the rows of the
    tokens seen are ever read. The values are the same bytes: the output is unchanged.
    Returns whether the graph had the builder's tied 8-bit embedding to rewire.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gather = next((n for n in graph.node if n.op_type == "GatherBlockQuantized"), None)
    if gather is None:
        return False
    reshape = next((n for n in graph.node if n.op_type == "Reshape" and n.output[0] == gather.input[0]), None)
    attrs = {a.name: helper.get_attribute_value(a) for a in gather.attribute}
    if reshape is None or reshape.input[0] not in inits or attrs.get("bits") != 8:
        return False
    table = inits[reshape.input[0]]
    if len(table.dims) != 3 or attrs.get("quantize_axis", 1) != 1 or attrs.get("gather_axis", 0) != 0:
        return False
    hidden = table.dims[1] * table.dims[2]
    views = []
    for name in gather.input[2:4]:
        if name not in inits:
            return False
        values = numpy_helper.to_array(inits[name])
        views.append(numpy_helper.from_array(values.reshape(*values.shape, 1), f"{name}/per_block"))
    shape = numpy_helper.from_array(np.array([0, 0, hidden], np.int64), f"{gather.name}/rows_shape")
    graph.initializer.extend([*views, shape])
    out = gather.output[0]
    gather.input[0] = table.name
    gather.input[2], gather.input[3] = views[0].name, views[1].name
    gather.output[0] = f"{out}/blocks"
    kept = [a for a in gather.attribute if a.name != "quantize_axis"]
    del gather.attribute[:]
    gather.attribute.extend([*kept, helper.make_attribute("quantize_axis", 2)])
    rows = helper.make_node("Reshape", [gather.output[0], shape.name], [out], name=f"{gather.name}/rows")
    graph.node.insert(list(graph.node).index(gather) + 1, rows)
    if not any(reshape.output[0] in n.input for n in graph.node):
        graph.node.remove(reshape)
    return True


def merge_parallel_matmuls(model) -> int:
    """Fold MatMulNBits nodes that read the same input with the same settings (gate and up) into one
    wider node plus a Split: one larger MatMul keeps both threads busier than two small ones, and the
    per-node cost on a 135M model is a large share of each token. Returns how many nodes were folded."""
    import onnx
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    groups: dict[tuple, list] = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or len(node.input) != 4:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        key = (node.input[0], *sorted((k, v) for k, v in attrs.items() if k != "N"))
        groups.setdefault(key, []).append(node)
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    obsolete: set[str] = set()  # the initializers of the nodes folded away
    for nodes in groups.values():
        if len(nodes) < 2:
            continue
        first = nodes[0]
        name = f"{first.name}/merged"
        parts = [[numpy_helper.to_array(inits[n.input[i]]) for n in nodes] for i in (1, 2, 3)]
        names = [f"{name}/{part}" for part in ("weight", "scales", "zero_points")]
        for arrays, init_name in zip(parts, names, strict=True):
            model.graph.initializer.append(numpy_helper.from_array(np.concatenate(arrays), init_name))
        widths = [
            int(helper.get_attribute_value(next(a for a in n.attribute if a.name == "N"))) for n in nodes
        ]
        attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute} | {"N": sum(widths)}
        split = numpy_helper.from_array(np.array(widths, np.int64), f"{name}/split")
        model.graph.initializer.append(split)
        merged = helper.make_node(
            "MatMulNBits", [first.input[0], *names], [f"{name}/out"], name, domain="com.microsoft", **attrs
        )
        outs = [n.output[0] for n in nodes]
        replaced[id(first)] = [
            merged,
            helper.make_node("Split", [merged.output[0], split.name], outs, axis=-1),
        ]
        dropped.update(id(n) for n in nodes[1:])
        obsolete.update(i for n in nodes for i in n.input[1:])
    if not replaced:
        return 0
    nodes_out: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in dropped:
            continue
        nodes_out.extend(replaced.get(id(node), [node]))
    del model.graph.node[:]
    model.graph.node.extend(nodes_out)
    kept = [i for i in model.graph.initializer if i.name not in obsolete]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return len(dropped) + len(replaced)


def _augment_input(model, x: str, k: int, extra_nodes: list) -> tuple[str, int]:
    """`concat(x, s, s)` where s = x's per-block sums padded to whole blocks: the fused mode's input.

    One MatMul with a 0/1 matrix gives the sums already padded (its extra columns are zero), so the
    per-input cost is two nodes."""
    from onnx import helper, numpy_helper

    kb = k // QK
    pad = -(-kb // QK) * QK
    ones = np.zeros((k, pad), np.float32)
    ones[np.arange(k), np.arange(k) // QK] = 1.0
    model.graph.initializer.append(numpy_helper.from_array(ones, f"{x}/block_indicator"))
    sums, out = f"{x}/blocksums", f"{x}/with_blocksums"
    extra_nodes.append(helper.make_node("MatMul", [x, f"{x}/block_indicator"], [sums]))
    extra_nodes.append(helper.make_node("Concat", [x, sums, sums], [out], axis=-1))
    return out, pad


def _blocksum_input(model, x: str, k: int, extra_nodes: list) -> str:
    """x's per-block sums (offset mode): Reshape to [.., K/32, 32] and ReduceSum the last axis."""
    from onnx import helper, numpy_helper

    shape = numpy_helper.from_array(np.array([0, 0, k // QK, QK], np.int64), f"{x}/blocks_shape")
    axes = numpy_helper.from_array(np.array([-1], np.int64), f"{x}/blocks_axes")
    model.graph.initializer.extend([shape, axes])
    sums = f"{x}/blocksums"
    extra_nodes.append(helper.make_node("Reshape", [x, shape.name], [f"{x}/blocks"]))
    extra_nodes.append(helper.make_node("ReduceSum", [f"{x}/blocks", axes.name], [sums], keepdims=0))
    return sums


def _add_offset(model, node, sums: str, residual: np.ndarray, extra_nodes: list) -> None:
    """Offset mode: the node's output plus sums @ residual^T, which makes the layer exact."""
    from onnx import helper, numpy_helper

    r_name = f"{node.input[1]}_offset"
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(residual.T), r_name))
    out = node.output[0]
    node.output[0] = f"{out}/before_offset"
    extra_nodes.append(helper.make_node("MatMul", [sums, r_name], [f"{out}/offset"]))
    extra_nodes.append(helper.make_node("Add", [node.output[0], f"{out}/offset"], [out]))


def _pack_zero_points(zpi: np.ndarray) -> np.ndarray:
    """[N, blocks] values 0..15 -> MatMulNBits' 4-bit zero points, two per byte (even block low)."""
    if zpi.shape[1] % 2:
        zpi = np.pad(zpi, ((0, 0), (0, 1)))
    return (zpi[:, 0::2] | (zpi[:, 1::2] << 4)).astype(np.uint8)


def _remainder_digits(residual: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-block remainders [N, kb] as two 4-bit digits over padded blocks: codes [N, 2*pad/32, 32],
    scales and zero points [N, 2*pad/32]. The second digit holds what the first one's rounding missed,
    so the sum is within 1/28 of the first digit's step (itself 1/15 of the remainders' range)."""
    n, kb = residual.shape
    r = np.zeros((n, pad), np.float32)
    r[:, :kb] = residual
    blocks = r.reshape(n, pad // QK, QK)
    lo, hi = np.minimum(blocks.min(-1), 0), np.maximum(blocks.max(-1), 0)
    s1 = (hi - lo) / 15
    s1 = np.where(s1 == 0, np.float32(1), s1).astype(np.float32)
    z1 = np.clip(np.rint(-lo / s1), 0, 15)
    q1 = np.clip(np.rint(blocks / s1[..., None]) + z1[..., None], 0, 15)
    rest = blocks - (q1 - z1[..., None]) * s1[..., None]
    s2 = np.abs(rest).max(-1) / 7
    s2 = np.where(s2 == 0, np.float32(1), s2).astype(np.float32)
    q2 = np.clip(np.rint(rest / s2[..., None]) + 8, 0, 15)
    codes = np.concatenate([q1, q2], axis=1).astype(np.uint8)
    scales = np.concatenate([s1, s2], axis=1)
    zps = np.concatenate([z1, np.full_like(z1, 8)], axis=1).astype(np.uint8)
    return codes, scales, zps


def _topological(nodes: list, inputs: set[str]) -> list:
    """Nodes in an order where every input is produced before use (ONNX requires it)."""
    produced = set(inputs)
    for n in nodes:
        if n.op_type == "Constant":
            produced.update(n.output)
    pending, ordered = list(nodes), []
    while pending:
        progress = False
        rest = []
        for n in pending:
            if all(i == "" or i in produced for i in n.input):
                ordered.append(n)
                produced.update(n.output)
                progress = True
            else:
                rest.append(n)
        pending = rest
        if not progress:
            raise CarryError(f"graph has a cycle or a missing input near {pending[0].name}")
    return ordered
