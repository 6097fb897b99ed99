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
    VariantSpec(id="cpu-int4", gguf_blocks=True, int8_lm_head=True, symmetric=False)
    with pytest.raises(ValueError, match="gguf_blocks"):
        VariantSpec(id="cpu-int4", gguf_blocks=True, int8_lm_head=False)
    with pytest.raises(ValueError, match="gguf_blocks"):
        VariantSpec(id="cpu-int4", gguf_blocks=True, int8_lm_head=True, block_size=64)
