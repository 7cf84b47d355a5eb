"""The int8 encoder blocks: exact integer products on every x86 kernel, float32 results close to the float32 blocks."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from pipeline.pii.greedy_ner import _Buffers  # noqa: E402
from pipeline.pii.int8_encoder import COLS, PIECES, WEIGHT_MAX, WIDTH, Int8Blocks, quantize_weights  # noqa: E402


def _blocks(rng, n=4):
    """Blocks shaped like the small English model's (weights about its size), as `_MaxoutNorm` holds them."""
    return [types.SimpleNamespace(nO=WIDTH, nP=PIECES,
                                  W=(rng.standard_normal((PIECES * WIDTH, COLS)) * 0.08).astype(np.float32),
                                  b=(rng.standard_normal(PIECES * WIDTH) * 0.1).astype(np.float32),
                                  G=(1 + rng.standard_normal(WIDTH) * 0.1).astype(np.float32),
                                  beta=(rng.standard_normal(WIDTH) * 0.1).astype(np.float32)) for _ in range(n)]


def _float32_blocks(blocks, X):
    """The float32 reference: seq2col, maxout, layer norm, residual, as `_FastEncoder` runs them."""
    for blk in blocks:
        cols = np.zeros((len(X), COLS), dtype=np.float32)
        cols[1:, :WIDTH], cols[:, WIDTH:2 * WIDTH], cols[:-1, 2 * WIDTH:] = X[:-1], X, X[1:]
        Y = cols @ blk.W.T + blk.b
        t = np.maximum(np.maximum(Y[:, :WIDTH], Y[:, WIDTH:2 * WIDTH]), Y[:, 2 * WIDTH:])
        mu, var = t.mean(axis=1, keepdims=True), t.var(axis=1, keepdims=True) + 1e-08
        X = X + ((t - mu) / np.sqrt(var) * blk.G + blk.beta)
    return X


def test_weights_are_7_bit_so_no_u8_pair_saturates_an_avx2_16_bit_sum():
    W = np.random.default_rng(0).standard_normal((PIECES * WIDTH, COLS)).astype(np.float32)
    B, scales = quantize_weights(W)
    assert B.dtype == np.int8 and B.shape == (COLS, PIECES * WIDTH)
    assert np.abs(B).max() == WEIGHT_MAX
    assert 2 * 255 * WEIGHT_MAX <= 32767          # vpmaddubsw's pairwise int16 sum
    assert (np.abs(B.T * scales[:, None] - W) <= scales[:, None] / 2 + 1e-6).all()   # rounded to the nearest step


def test_the_integer_products_are_exact():
    rng = np.random.default_rng(1)
    blk = Int8Blocks(_blocks(rng, 1)).blocks[0]
    A = rng.integers(0, 256, (300, COLS), dtype=np.uint8)    # the full u8 range, worst case for saturation
    out = np.empty((300, PIECES * WIDTH), dtype=np.int32)
    blk.product(A, out)
    np.testing.assert_array_equal(out, A.astype(np.int64) @ blk.B.astype(np.int64))


def test_int8_blocks_stay_close_to_float32():
    rng = np.random.default_rng(2)
    blocks = _blocks(rng)
    X = rng.standard_normal((2000, WIDTH)).astype(np.float32)
    X[::50] = 0                                   # padding rows between documents
    expected = _float32_blocks(blocks, X)
    got = Int8Blocks(blocks)(X.copy(), _Buffers(4096))
    rel_rms = np.sqrt(((got - expected) ** 2).mean() / (expected ** 2).mean())
    assert rel_rms < 0.05      # 2.8% on these random weights; 1.2% on the model's own (test_greedy_ner.py)


def test_a_row_s_result_does_not_depend_on_rows_beyond_its_reach():
    """Per-row quantization: rows 4 blocks away from a change are unchanged (the float32 path's rule)."""
    rng = np.random.default_rng(3)
    blocks = Int8Blocks(_blocks(rng))
    X = rng.standard_normal((200, WIDTH)).astype(np.float32)
    changed = X.copy()
    changed[150:] *= 40                           # a very different document further on
    a = blocks(X.copy(), _Buffers(4096))[:146].copy()
    b = blocks(changed, _Buffers(4096))[:146]
    np.testing.assert_array_equal(a, b)


def test_other_encoder_shapes_are_refused():
    blk = _blocks(np.random.default_rng(4), 1)[0]
    blk.nO = 64
    with pytest.raises(ValueError, match="width-96"):
        Int8Blocks([blk])
