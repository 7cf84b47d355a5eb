"""The NER encoder's four maxout blocks with 8-bit integer products (`pii.ner_precision: int8`).

Usage (inside `_FastEncoder`, for the small English model's shape)::

    int8 = Int8Blocks(encoder.blocks)      # quantizes the weights once, builds the ORT sessions
    X = int8(X, buffers)                   # the padded rows after the four blocks

Why: the encoder is half of a first pass's CPU (bench/README.md, "A whole cleaning run"), and
its float32 products already run at the BLAS's peak. onnxruntime's `MatMulInteger` (u8 x s8 with
int32 sums) runs the same (rows x 288) by (288 x 288) product about 4x faster on one core with
AVX-512 VNNI.

The arithmetic, chosen so that the integer products are exact on every x86 kernel:

- weights: per output column, symmetric, 7 bits ([-63, 63], scale max|w| / 63). Without VNNI
  (AVX2, and AVX-512 before VNNI) ORT multiplies u8 by s8 with `vpmaddubsw`, which saturates a
  pair's sum at 32,767; with |w| <= 63 a pair is at most 2 * 255 * 63 = 32,130, so it never
  does, and the int32 sums are the same on an AVX2 AMD and an AVX-512 Intel.
- activations: per row of the block's input (a token with its two neighbours, 288 values),
  asymmetric u8 over [min(0, lo), max(0, hi)], so each token's result depends on its own rows
  only, never on the other documents of its group.
- dequantization, maxout, layer norm and residual in float32 (numba, no fast-math), as in the
  float32 path.

The result is not spaCy's: entities can differ where the model is near a decision
(bench/README.md has the agreement with the float32 path measured on 20,000 documents).
"""

from __future__ import annotations

import functools

import numpy as np

WIDTH, PIECES = 96, 3           # the small English model's encoder: width 96, three maxout pieces
COLS = 3 * WIDTH                # a block's input: the token with its two neighbours
WEIGHT_MAX = 63                 # 7-bit weights: no u8 x s8 pair can saturate `vpmaddubsw`


def quantize_weights(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, scales): W (outputs x inputs, float32) as int8 per output row with |q| <= 63,
    transposed to the (inputs x outputs) operand of `MatMulInteger`, and each output's scale."""
    peak = np.abs(W).max(axis=1)
    scales = np.where(peak > 0, peak / WEIGHT_MAX, 1.0).astype(np.float32)
    q = np.clip(np.rint(W / scales[:, None]), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return np.ascontiguousarray(q.T), scales


def _session(B: np.ndarray):
    """A one-node ORT session: u8 (rows x K) times this constant s8 (K x N), int32 out, one thread."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as e:
        raise ValueError("the int8 encoder needs onnx and onnxruntime: "
                         "pip install 'hygiene-pipeline[ner-int8]'") from e

    k, n = B.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_block",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, ["rows", k])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, ["rows", n])],
        [numpy_helper.from_array(B, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1     # a PII worker uses one core, as the BLAS does
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


class _Block:
    """One maxout block's quantized weights, its float32 bias and layer norm, and its session."""

    def __init__(self, block):
        self.B, self.scales = quantize_weights(block.W)
        self.colsum = self.B.astype(np.int32).sum(axis=0)
        self.b, self.G, self.beta = block.b, block.G, block.beta
        self.session = _session(self.B)

    def product(self, Aq: np.ndarray, out: np.ndarray) -> None:
        """out = Aq @ B in int32, written into `out` (no fresh array per call)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input("A", Aq)
        binding.bind_output("Y", "cpu", 0, np.int32, out.shape, out.ctypes.data)
        self.session.run_with_iobinding(binding)


class Int8Blocks:
    """The residual maxout blocks of `_FastEncoder` (width 96, three pieces) with int8 products."""

    def __init__(self, blocks):
        if any(b.nO != WIDTH or b.nP != PIECES or b.W.shape != (PIECES * WIDTH, COLS) for b in blocks):
            raise ValueError("int8 encoder: only the width-96, three-piece encoder is supported")
        self.blocks = [_Block(b) for b in blocks]

    def __call__(self, X: np.ndarray, buffers) -> np.ndarray:
        """The rows after every block, for the padded rows X (rows x 96); may return a buffer."""
        quantize_cols, dequant_block = _int8_kernels()
        rows = len(X)
        Aq = buffers.get("int8_A", rows, COLS, dtype=np.uint8)
        acc = buffers.get("int8_acc", rows, PIECES * WIDTH, dtype=np.int32)
        lo = buffers.get("int8_lo", rows, 1)[:, 0]
        hi = buffers.get("int8_hi", rows, 1)[:, 0]
        scale = buffers.get("int8_scale", rows, 1)[:, 0]
        zero = buffers.get("int8_zero", rows, 1, dtype=np.int32)[:, 0]
        X_next = buffers.get("X_next", rows, WIDTH)
        np.minimum(X.min(axis=1), 0, out=lo)
        np.maximum(X.max(axis=1), 0, out=hi)
        for block in self.blocks:
            quantize_cols(X, lo, hi, Aq, scale, zero)
            block.product(Aq, acc)
            dequant_block(acc, zero, scale, block.colsum, block.scales, block.b, block.G, block.beta,
                          X, X_next, lo, hi)
            X, X_next = X_next, X
        return X


@functools.lru_cache(maxsize=None)
def _int8_kernels():
    """The compiled float32 parts around the integer products (numba, imported on first use)."""
    import numba

    from pipeline.pii.float_sums import pairwise96_kernel

    f32 = np.float32
    pairwise96 = pairwise96_kernel()

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def quantize_cols(X, lo, hi, Aq, scale, zero):
        """Row i of the block's input (rows i-1, i, i+1 of X; zeros past the ends) as u8 over
        its own range, which holds 0: x ~ (q - zero[i]) * scale[i]. lo/hi: each X row's min/max
        with 0."""
        n = X.shape[0]
        for i in range(n):
            a, b = lo[i], hi[i]
            if i > 0:
                a, b = min(a, lo[i - 1]), max(b, hi[i - 1])
            if i + 1 < n:
                a, b = min(a, lo[i + 1]), max(b, hi[i + 1])
            s = (b - a) / f32(255)
            if s == 0:
                s = f32(1)
            z = np.int32(np.rint(-a / s))
            inv = f32(1) / s
            scale[i], zero[i] = s, z
            q = Aq[i]
            for seg in range(3):
                r = i + seg - 1
                if r < 0 or r >= n:
                    for o in range(WIDTH):
                        q[seg * WIDTH + o] = z
                    continue
                x = X[r]
                for o in range(WIDTH):
                    v = np.int32(np.rint(x[o] * inv)) + z
                    q[seg * WIDTH + o] = min(max(v, 0), 255)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def dequant_block(acc, zero, scale, colsum, wscale, b, G, beta, X, X_out, lo, hi):
        """Per row: the float32 product from the int32 sums, bias, maxout over three pieces,
        thinc's layer norm, the residual sum into X_out, and X_out's min/max with 0 into lo/hi."""
        t = np.empty(WIDTH, dtype=f32)
        d = np.empty(WIDTH, dtype=f32)
        y = np.empty(PIECES * WIDTH, dtype=f32)
        for i in range(acc.shape[0]):
            z, s = zero[i], scale[i]
            a = acc[i]
            for j in range(PIECES * WIDTH):
                y[j] = f32(a[j] - z * colsum[j]) * (s * wscale[j]) + b[j]
            for o in range(WIDTH):
                m = y[o]
                if y[WIDTH + o] > m:
                    m = y[WIDTH + o]
                if y[2 * WIDTH + o] > m:
                    m = y[2 * WIDTH + o]
                t[o] = m
            mu = f32(pairwise96(t) / f32(96))
            for o in range(WIDTH):
                d[o] = (t[o] - mu) * (t[o] - mu)
            inv = (f32(pairwise96(d) / f32(96)) + f32(1e-08)) ** f32(-0.5)
            x, x_out = X[i], X_out[i]
            low, high = f32(0), f32(0)
            for o in range(WIDTH):
                v = x[o] + ((t[o] - mu) * inv * G[o] + beta[o])
                x_out[o] = v
                low = min(low, v)
                high = max(high, v)
            lo[i], hi[i] = low, high

    return quantize_cols, dequant_block
