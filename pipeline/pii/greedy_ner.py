"""spaCy's greedy NER decoding, vectorised over a batch: the same model, the same entities.

(About 580 lines, over the ~500 of STYLE.md, on purpose: one algorithm, spaCy's encoder and
greedy decode replayed with the model's own weights, whose compiled kernels share buffers and
feature layouts; its parity with `nlp.pipe` is tested as a whole.)

Usage::

    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"))   # None if the component is not supported
    ents = decoder(docs)          # per doc: [(start token, end token, label), ...]

Why: spaCy's transition-based NER (`TransitionBasedParser.v2`, greedy) spends most of its time
not in the network but in its per-token state machine, whose compiled helpers take and release
the GIL on every call (about 40% of NER time measured with `perf` on spaCy 3.8.18). That state
machine is tiny for NER: every action consumes exactly one token, so step t of the decode is
token t of every document. This module runs the same network (spaCy's own tok2vec and
precomputed lower layer, the same weights) and replays the decode in one compiled loop per group
of documents (`_decode_kernel`): feature ids B0, E0 and B0-1 as `StateC.set_context_tokens`
builds them for three features, summed in the same order as `sum_state_features`, maxout, the
upper layer, spaCy's unseen-class rule, `BiluoPushDown`'s validity rules for documents without
preset entities, and the first maximum among valid actions (`arg_max_if_valid`). Most steps have
no entity open; their features E0 and B0-1 are the padding row, so their scores are one matrix
product over all tokens, computed before the loop.

`tests/integration/test_greedy_ner.py` compares the entities with `nlp.pipe`'s on real and on
awkward text.

The token vectors are spaCy's tok2vec, with its maxout layers run piece-major (`_MaxoutNorm`,
`_FastEncoder`): the same products and the same layer-norm arithmetic, bit for bit the same
vectors (tested), in half thinc's time; another tok2vec shape goes through thinc. Documents go
through the encoder and the decode in groups of about `GreedyNer.GROUP_ROWS` rows whose work arrays
(`_Buffers`) are reused: they stay in the caches, and no batch pays the page faults of fresh
allocations of tens of megabytes.

With `precision="int8"` (`pii.ner_precision: int8`) the encoder's four blocks run their products as
8-bit integers instead (pipeline/pii/int8_encoder.py): faster, but not spaCy's vectors, so a few
entities near the model's decisions change.

The matrix products go through numpy's BLAS (single-threaded while decoding, so a worker uses
one core) instead of thinc's bundled BLIS: about 1.4x faster here. The upper layer's product for
a step with an entity open is a compiled dot product (exact products summed in float64). In rare
near-ties the last bits of a score can therefore differ from spaCy's, which could flip a
decision (none seen on the test and benchmark corpora).
"""

from __future__ import annotations

import functools
import threading
from typing import Sequence

import numpy as np

_KINDS = "BILUO"


def _blas_ops():
    from thinc.api import NumpyOps

    class BlasOps(NumpyOps):
        """thinc's numpy ops with `gemm` through numpy's BLAS."""

        name = "numpy-blas"

        def gemm(self, x, y, *, out=None, trans1=False, trans2=False):
            x = x.T if trans1 else x
            y = y.T if trans2 else y
            if out is None:
                return np.matmul(x, y)
            np.matmul(x, y, out=out)
            return out

    return BlasOps()


def _embed_parts(t2v):
    """The layers of spaCy's `Tok2Vec.v2` (MultiHashEmbed + MaxoutWindowEncoder, then the
    parser's linear projection) in the order `_tokvecs` runs them, or None for another shape."""
    try:
        outer, to_array, linear = t2v.layers
        embed, encode = outer.layers
        features, to_ragged, hashes, maxout, to_list = embed.layers
    except ValueError:
        return None
    names = (features.name, to_ragged.name, to_array.name, linear.name, to_list.name)
    if names != ("extract_features", "list2ragged", "list2array", "linear", "ragged2list"):
        return None
    if not (hashes.name.startswith("with_array(") and "hashembed" in hashes.name
            and maxout.name.startswith("with_array(maxout") and encode.name.startswith("with_array(residual")):
        return None
    return features, hashes, maxout, encode, to_array, linear


class _MaxoutNorm:
    """thinc's `Maxout(normalize=True)` (maxout >> layernorm >> dropout 0) for inference, with the
    weights reordered piece-major: the pieces of every output are then three contiguous blocks of
    the product, reduced by two `np.maximum`s instead of thinc's strided loop. Each output is
    the same dot product as thinc's, and the layer norm is thinc's arithmetic, in its order."""

    def __init__(self, chain):
        maxout, norm = _maxout_norm_nodes(chain)
        nO, nP, nI = maxout.get_dim("nO"), maxout.get_dim("nP"), maxout.get_dim("nI")
        W = maxout.get_param("W").reshape(nO, nP, nI)
        self.W = np.ascontiguousarray(W.transpose(1, 0, 2).reshape(nP * nO, nI))
        self.b = np.ascontiguousarray(maxout.get_param("b").reshape(nO, nP).T.reshape(nP * nO))
        self.G, self.beta = norm.get_param("G"), norm.get_param("b")
        self.nO, self.nP = nO, nP

    def __call__(self, X: np.ndarray) -> np.ndarray:
        nO = self.nO
        Y = np.matmul(X, self.W.T)
        Y += self.b
        best = np.maximum(Y[:, :nO], Y[:, nO:2 * nO])
        for p in range(2, self.nP):
            np.maximum(best, Y[:, p * nO:(p + 1) * nO], out=best)
        # thinc's LayerNorm forward, the same operations on the same float32 values
        mu = best.mean(axis=1, keepdims=True)
        var = best.var(axis=1, keepdims=True) + 1e-08
        Xhat = (best - mu) * var ** (-1.0 / 2.0)
        out = Xhat * self.G
        out += self.beta
        return out


@functools.lru_cache(maxsize=None)
def _fused_kernel():
    """The compiled tail of one encoder block (numba, imported only when a decoder is built)."""
    import numba

    from pipeline.pii.float_sums import pairwise96_kernel

    f32 = np.float32
    _pairwise96 = pairwise96_kernel()

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def maxout_moments(Y, b, T, mu, var):
        """From the block's product Y (piece-major, no bias): bias and maxout over 3 pieces into
        T, and each row's mean and variance (+1e-08) as numpy's float32 `mean`/`var` give them."""
        x = np.empty(96, dtype=f32)
        for i in range(Y.shape[0]):
            t = T[i]
            for o in range(96):
                a = Y[i, o] + b[o]
                c = Y[i, 96 + o] + b[96 + o]
                if c > a:
                    a = c
                c = Y[i, 192 + o] + b[192 + o]
                if c > a:
                    a = c
                t[o] = a
            m = f32(_pairwise96(t) / f32(96))
            for o in range(96):
                d = t[o] - m
                x[o] = d * d
            mu[i] = m
            var[i] = f32(_pairwise96(x) / f32(96)) + f32(1e-08)

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def norm_residual(T, mu, inv, G, beta, X, X_out, cols):
        """thinc's layer norm of T with the per-row mean and var**-0.5, the residual sum into
        X_out, and each row placed in `cols` as the next block's seq2col input (previous, own
        and next row; zeros past the ends)."""
        n = X.shape[0]
        for i in range(n):
            m = mu[i]
            r = inv[i]
            x_out = X_out[i]
            for o in range(96):
                h = (T[i, o] - m) * r
                h = h * G[o]
                h = h + beta[o]
                x_out[o] = X[i, o] + h
            own = cols[i]
            for o in range(96):
                own[96 + o] = x_out[o]
            if i + 1 < n:
                below = cols[i + 1]
                for o in range(96):
                    below[o] = x_out[o]
            if i > 0:
                above = cols[i - 1]
                for o in range(96):
                    above[192 + o] = x_out[o]
        for o in range(96):
            cols[0, o] = 0
            cols[n - 1, 192 + o] = 0

    return maxout_moments, norm_residual


@functools.lru_cache(maxsize=None)
def _decode_kernel():
    """The greedy decode of one group of documents, compiled (numba)."""
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def greedy(cached, closed, W, bu, bl, pieces, mask, kind, lab, unseen, soffs, slens, space,
               ent_doc, ent_start, ent_end, ent_label):
        """Decode documents sorted by length, longest first; document d's token t has row
        soffs[d] + t of `cached` (the lower layer's output, row 0 its padding) and of `closed`
        (the scores of the state with no entity open, whose features are all padding but B0).
        Step t advances every document longer than t, as spaCy's batch does; returns the number
        of entities written to ent_* (document, first token, end token, label)."""
        n, n_act = len(slens), W.shape[0]
        hidden = W.shape[1]
        opened_at = np.full(n, -1, dtype=np.int64)   # first token of the open entity, -1: none
        cur = np.zeros(n, dtype=np.int64)             # label of the open entity, 0: none
        scores = np.empty((n, n_act), dtype=np.float32)
        h = np.empty(hidden, dtype=np.float32)
        found = 0
        active = n
        for t in range(slens[0] if n else 0):
            while slens[active - 1] <= t:
                active -= 1
            lowest = np.inf
            for d in range(active):
                row = soffs[d] + t
                s = scores[d]
                if opened_at[d] < 0:
                    s[:] = closed[row]
                else:
                    # B0, E0 and B0-1 summed in spaCy's order, the bias, maxout, the upper layer
                    f1 = soffs[d] + opened_at[d]
                    for o in range(hidden):
                        m = np.float32(0)
                        for p in range(pieces):
                            j = o * pieces + p
                            v = cached[row, 0, j] + cached[f1, 1, j]
                            v = v + cached[row - 1, 2, j]
                            v = v + bl[j]
                            if p == 0 or v > m:
                                m = v
                        h[o] = m
                    # the upper layer's dot products, each product exact and summed in float64
                    for a in range(n_act):
                        acc = 0.0
                        for o in range(hidden):
                            acc += np.float64(h[o]) * np.float64(W[a, o])
                        s[a] = np.float32(acc) + bu[a]
                if len(unseen):
                    for a in range(n_act):
                        if s[a] < lowest:
                            lowest = s[a]
            for d in range(active):
                s = scores[d]
                for a in unseen:     # spaCy gives classes never seen in training the batch's lowest score
                    s[a] = lowest
                row = soffs[d] + t
                code = cur[d] * 4 + (slens[d] - 1 == t) * 2 + space[row]
                best = -1
                for a in range(n_act):     # the first maximum among the valid actions
                    if mask[code, a] == 0 and (best < 0 or s[a] > s[best]):
                        best = a
                k = kind[best]
                if k == 0:
                    opened_at[d] = t
                    cur[d] = lab[best]
                elif k == 2:
                    ent_doc[found], ent_start[found], ent_end[found], ent_label[found] = d, opened_at[d], t + 1, cur[d]
                    found += 1
                    opened_at[d] = -1
                    cur[d] = 0
                elif k == 3:
                    ent_doc[found], ent_start[found], ent_end[found], ent_label[found] = d, t, t + 1, lab[best]
                    found += 1
        return found

    return greedy


def _maxout_norm_nodes(chain):
    """(maxout, layernorm) of a `maxout>>layernorm>>dropout` chain with dropout 0, else ValueError."""
    nodes = {n.name: n for n in chain.walk()}
    if chain.name not in ("maxout>>layernorm>>dropout", "expand_window>>maxout>>layernorm>>dropout"):
        raise ValueError(chain.name)
    if nodes["dropout"].attrs.get("dropout_rate", 0.0) != 0.0:
        raise ValueError("dropout")
    return nodes["maxout"], nodes["layernorm"]


def _seq2col1(X: np.ndarray) -> np.ndarray:
    """thinc's `seq2col(X, nW=1)` of one sequence: each row with its neighbours, zeros past the ends."""
    n, d = X.shape
    out = np.empty((n, 3 * d), dtype=X.dtype)
    out[1:, :d] = X[:-1]
    out[:1, :d] = 0
    out[:, d:2 * d] = X
    out[:-1, 2 * d:] = X[1:]
    out[-1:, 2 * d:] = 0
    return out


class _Buffers:
    """Work arrays reused from one group of documents to the next: a group's arrays stay in the
    caches, and no batch pays the page faults of fresh large allocations (measured: a fifth of
    the encoder's time on a cold 1,000-paragraph run). A group larger than the capacity (one
    very long document) gets arrays of its own, freed after it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._arrays: dict[tuple, np.ndarray] = {}

    def get(self, name: str, rows: int, *shape: int, dtype=np.float32) -> np.ndarray:
        if rows > self.capacity:
            return np.empty((rows, *shape), dtype=dtype)
        key = (name, *shape, np.dtype(dtype).str)
        a = self._arrays.get(key)
        if a is None:
            a = self._arrays[key] = np.empty((self.capacity, *shape), dtype=dtype)
        return a[:rows]


class _FastEncoder:
    """spaCy's `MaxoutWindowEncoder.v2` with window 1 for inference, one group of documents at a
    time: thinc's flatten with its padding rows, then per block seq2col, maxout, layer norm and
    the residual sum, as `with_array(clone(residual(...)))` computes them.

    Each document's rows depend only on its own rows: the encoder's receptive field (one row per
    block) does not reach past the padding rows thinc puts between documents (`pad` is at least
    the number of blocks, checked), so a group gives the same rows as the whole batch."""

    def __init__(self, encode):
        self.pad = encode.attrs["pad"]
        (stack,) = encode.layers
        blocks = stack.layers if stack.name.count("residual(") > 1 else [stack]
        self.blocks = []
        for block in blocks:
            if not block.name.startswith("residual(") or len(block.layers) != 1:
                raise ValueError(block.name)
            inner = block.layers[0]
            window = next(n for n in inner.walk() if n.name == "expand_window")
            if window.attrs.get("window_size") != 1:
                raise ValueError("window")
            self.blocks.append(_MaxoutNorm(inner))
        if self.pad < len(self.blocks):
            raise ValueError("pad")
        self.width = self.blocks[0].nO
        # The compiled tail covers the small English model's shape: width 96, three pieces, float32.
        self.fused = all(b.nO == 96 and b.nP == 3 and b.W.dtype == np.float32 for b in self.blocks)
        self.int8 = None    # the blocks with 8-bit products (`pii.ner_precision: int8`), see `use_int8`

    def use_int8(self) -> None:
        """Run the blocks with int8 products from now on (pipeline/pii/int8_encoder.py);
        ValueError for an encoder of another shape."""
        from pipeline.pii.int8_encoder import Int8Blocks

        if not self.fused:
            raise ValueError("int8 encoder: only the width-96, three-piece float32 encoder is supported")
        self.int8 = Int8Blocks(self.blocks)

    def padded_rows(self, lengths: np.ndarray) -> np.ndarray:
        """The row of each token of the documents in thinc's padded layout."""
        doc = np.repeat(np.arange(len(lengths)), lengths)
        return np.arange(len(doc)) + self.pad * (doc + 1)

    def __call__(self, vectors: np.ndarray, lengths: np.ndarray, buffers: _Buffers) -> np.ndarray:
        """The encoder's rows for documents whose embedded rows are `vectors` (concatenated,
        `lengths[i]` rows each; no empty document), concatenated the same way."""
        rows = self.pad * (len(lengths) + 1) + len(vectors)
        where = self.padded_rows(lengths)
        X = buffers.get("X", rows, self.width)
        X[:] = 0
        X[where] = vectors
        if self.int8 is not None:
            return self.int8(X, buffers)[where]
        if not self.fused:
            for block in self.blocks:
                X = X + block(_seq2col1(X))
            return X[where]
        maxout_moments, norm_residual = _fused_kernel()
        cols = buffers.get("cols", rows, 3 * 96)
        cols[1:, :96] = X[:-1]
        cols[:1, :96] = 0
        cols[:, 96:192] = X
        cols[:-1, 192:] = X[1:]
        cols[-1:, 192:] = 0
        Y = buffers.get("Y", rows, 3 * 96)
        T = buffers.get("T", rows, 96)
        mu = buffers.get("mu", rows, 1)[:, 0]
        var = buffers.get("var", rows, 1)[:, 0]
        X_next = buffers.get("X_next", rows, 96)
        for block in self.blocks:
            np.matmul(cols, block.W.T, out=Y)
            maxout_moments(Y, block.b, T, mu, var)
            inv = var ** (-1.0 / 2.0)   # numpy's float32 power, as thinc's layer norm takes it
            norm_residual(T, mu, inv, block.G, block.beta, X, X_next, cols)
            X, X_next = X_next, X
        return X[where]


class GreedyNer:
    """Batch greedy decoder for one spaCy `EntityRecognizer`; build with `for_pipe`."""

    # Documents are encoded and decoded in groups of about this many rows (tokens plus thinc's
    # padding): a group's work arrays fit in the caches (4,096 rows of 288 floats: 4.5 MiB).
    GROUP_ROWS = 4096

    def __init__(self, ner, *, numpy_blas: bool = True, precision: str = "float32"):
        model = ner.model
        self._t2v = model.get_ref("tok2vec")
        self._lower = model.get_ref("lower")
        upper = model.get_ref("upper")
        if numpy_blas:
            ops = _blas_ops()
            for node in (*self._t2v.walk(), *self._lower.walk(), *upper.walk()):
                node.ops = ops
        self._embed_parts = _embed_parts(self._t2v)
        self._fast = None
        if self._embed_parts is not None:
            try:
                _, _, maxout, encode, _, _ = self._embed_parts
                self._fast = (_MaxoutNorm(maxout.layers[0]), _FastEncoder(encode))
            except (ValueError, KeyError, StopIteration):
                self._fast = None
        if precision == "int8":
            if self._fast is None:
                raise ValueError("int8 encoder: this model's tok2vec is not spaCy's Tok2Vec.v2 shape")
            self._fast[1].use_int8()
        elif precision != "float32":
            raise ValueError(f"precision is float32 or int8, not {precision!r}")
        self._W = np.ascontiguousarray(upper.get_param("W"), dtype=np.float32)
        self._bu = np.ascontiguousarray(upper.get_param("b"), dtype=np.float32)
        self._bl = np.ascontiguousarray(self._lower.get_param("b").reshape(-1), dtype=np.float32)
        self._pieces = self._lower.get_dim("nP")
        lw = self._lower.get_param("W")
        self._lower_W = lw.reshape(-1, self._lower.get_dim("nI"))      # (nF * nO * nP, nI), as spaCy's forward
        self._lower_pad = self._lower.get_param("pad").reshape(-1)
        self._buffers = _Buffers(self.GROUP_ROWS + 16)
        self._lock = threading.Lock()
        names = [ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)]
        self._unseen = np.array(sorted(model.attrs.get("unseen_classes", ())), dtype=np.int64)
        kind = np.array([_KINDS.index(n[0]) for n in names], dtype=np.int64)
        labels = sorted({n[2:] for n in names if n != "O" and n[2:]})
        lab = np.array([labels.index(n[2:]) + 1 if n != "O" and n[2:] else 0 for n in names], dtype=np.int64)
        self.labels = ["", *labels]
        self._kind, self._lab = kind, lab
        self._mask = self._mask_table(kind, lab, len(labels))

    @classmethod
    def for_pipe(cls, ner, **kw) -> "GreedyNer | None":
        """A decoder for this component, or None when it is not the greedy BILUO architecture
        the decoder replays exactly (then the caller uses spaCy's own `pipe`)."""
        try:
            model = ner.model
            if model.name != "parser_model" or not model.attrs.get("has_upper"):
                return None
            if getattr(ner, "cfg", {}).get("beam_width", 1) != 1:
                return None
            lower = model.get_ref("lower")
            if lower.get_dim("nF") != 3 or lower.get_dim("nP") < 2:
                return None
            names = [ner.moves.get_class_name(i) for i in range(ner.moves.n_moves)]
        except (AttributeError, KeyError, ValueError):
            return None
        if "O" not in names or any(n != "O" and (len(n) < 2 or n[0] not in "BILU" or n[1] != "-") for n in names):
            return None
        return cls(ner, **kw)

    @staticmethod
    def _mask_table(kind: np.ndarray, lab: np.ndarray, n_labels: int) -> np.ndarray:
        """0 for a valid action, -inf otherwise, indexed by state code: open label (0: no entity
        open) * 4 + (B0 is the last token) * 2 + (B0 is whitespace). `BiluoPushDown`'s rules
        for a document without preset entities or sentence starts."""
        codes = (n_labels + 1) * 4
        table = np.full((codes, len(kind)), -np.inf, dtype=np.float32)
        for code in range(codes):
            cur, last, space = code // 4, bool(code & 2), bool(code & 1)
            opened = cur != 0
            for a, (k, lb) in enumerate(zip(kind.tolist(), lab.tolist())):
                if k == 0:      # Begin
                    ok = not opened and not last and lb != 0 and not space
                elif k == 1:    # In
                    ok = opened and not last and lb != 0 and lb == cur
                elif k == 2:    # Last
                    ok = opened and lb != 0 and lb == cur
                elif k == 3:    # Unit
                    ok = not opened and lb != 0 and not space
                else:           # Out
                    ok = not opened
                if ok:
                    table[code, a] = 0.0
        return table

    def __call__(self, docs: Sequence) -> list[list[tuple[int, int, str]]]:
        from threadpoolctl import threadpool_limits

        with self._lock, threadpool_limits(limits=1, user_api="blas"):
            return self._decode(list(docs))

    def _embedded(self, docs: list) -> np.ndarray:
        """The embedding stage's rows for the docs' tokens, concatenated. It depends on each
        token's own features only (NORM, PREFIX, SUFFIX, SHAPE), so it runs once per distinct
        feature row of the batch (a third of the rows on English prose) and is gathered back."""
        features, embed, _, _, _, _ = self._embed_parts
        fast_maxout, _ = self._fast
        table = np.concatenate(features.predict(docs))
        keys = np.ascontiguousarray(table).view(np.dtype((np.void, table.dtype.itemsize * table.shape[1]))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        return fast_maxout(embed.predict(table[first]))[inverse.reshape(-1)]

    def _groups(self, lengths: np.ndarray) -> list[tuple[int, int]]:
        """Consecutive runs [i, j) of documents (none empty) of about GROUP_ROWS rows in all."""
        pad = self._fast[1].pad if self._fast is not None else 0
        groups, i, rows = [], 0, pad
        for j, n in enumerate(lengths.tolist()):
            if j > i and rows + n + pad > self.GROUP_ROWS:
                groups.append((i, j))
                i, rows = j, pad
            rows += n + pad
        if i < len(lengths):
            groups.append((i, len(lengths)))
        return groups

    def _group_tokvecs(self, vectors: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """tok2vec's output for one group from its embedded rows: the encoder, then the
        parser's linear projection (thinc's `Linear`, through the same BLAS product)."""
        _, _, _, _, _, linear = self._embed_parts
        return linear.predict(self._fast[1](vectors, lengths, self._buffers))

    def _tokvecs(self, docs: list) -> np.ndarray:
        """The tok2vec output for the docs' tokens, concatenated: the rows `predict` gives."""
        if self._fast is None:
            return self._t2v.predict(docs)
        with self._lock:
            lengths = np.array([len(d) for d in docs], dtype=np.int64)
            lengths = lengths[lengths > 0]
            vectors = self._embedded(docs)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            parts = [self._group_tokvecs(vectors[starts[i]:starts[j]], lengths[i:j]) for i, j in self._groups(lengths)]
            return np.concatenate(parts) if parts else self._t2v.predict(docs)

    def _decode(self, docs: list) -> list[list[tuple[int, int, str]]]:
        from spacy.attrs import ENT_IOB, IS_SPACE, SENT_START

        out: list[list[tuple[int, int, str]]] = [[] for _ in docs]
        lens = np.array([len(d) for d in docs], dtype=np.int64)
        idx = np.nonzero(lens)[0]
        if not len(idx):
            return out
        todo = [docs[i] for i in idx.tolist()]
        lens = lens[idx]
        attrs = np.concatenate([d.to_array([IS_SPACE, ENT_IOB, SENT_START]).reshape(-1, 3) for d in todo])
        if attrs[:, 1].any():
            raise ValueError("GreedyNer decodes documents without preset entities only")
        # A sentence start after a document's first token would forbid entities across it
        # (spaCy's rule); documents from the tokenizer have none, and only they come here.
        starts = np.concatenate([[0], np.cumsum(lens)])
        sent = attrs[:, 2] == 1
        sent[starts[:-1]] = False
        if sent.any():
            raise ValueError("GreedyNer decodes documents without sentence boundaries only")
        space = attrs[:, 0].astype(np.int64)
        if self._fast is not None:
            vectors = self._embedded(todo)
        else:
            tokvecs = self._t2v.predict(todo)
        for i, j in self._groups(lens):
            a, b = starts[i], starts[j]
            tv = self._group_tokvecs(vectors[a:b], lens[i:j]) if self._fast is not None else tokvecs[a:b]
            for d, begin, end, label in self._decode_group(tv, lens[i:j], space[a:b]):
                out[idx[i + d]].append((begin, end, self.labels[label]))
        for ents in out:
            ents.sort()
        return out

    def _decode_group(self, tokvecs: np.ndarray, lens: np.ndarray, space: np.ndarray) -> list[tuple[int, int, int, int]]:
        """(document within the group, first token, end token, label index) of each entity."""
        n = len(tokvecs)
        nF, width = self._lower.get_dim("nF"), len(self._bl)
        # spaCy's PrecomputableAffine: one product for every token and feature slot, row 0 padding
        cached = self._buffers.get("lower", n + 1, nF * width)
        np.matmul(tokvecs, self._lower_W.T, out=cached[1:])
        cached[0] = self._lower_pad
        cached = cached.reshape(n + 1, nF, width)
        # Scores of the state with no entity open (features E0 and B0-1 are padding): one product
        # for all tokens instead of one per decoding step.
        h = cached[1:, 0] + cached[0, 1]
        h += cached[0, 2]
        h += self._bl
        h = h.reshape(n, -1, self._pieces)
        h = functools.reduce(np.maximum, [h[:, :, p] for p in range(1, self._pieces)], h[:, :, 0])
        closed = self._buffers.get("closed", n + 1, len(self._bu))
        np.matmul(h, self._W.T, out=closed[1:])
        closed[1:] += self._bu
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]) + 1
        order = np.argsort(-lens, kind="stable")
        ent = [np.empty(n, dtype=np.int64) for _ in range(4)]
        found = _decode_kernel()(cached, closed, self._W, self._bu, self._bl, self._pieces, self._mask,
                                 self._kind, self._lab, self._unseen, offsets[order], lens[order],
                                 np.concatenate([[0], space]), *ent)
        docs, begins, ends, labels = (e[:found] for e in ent)
        return list(zip(order[docs].tolist(), begins.tolist(), ends.tolist(), labels.tolist()))
