"""spaCy's greedy NER decoding, vectorised over a batch: the same model, the same entities.

Usage::

    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"))   # None if the component is not supported
    ents = decoder(docs)          # per doc: [(start token, end token, label), ...]

Why: spaCy's transition-based NER (`TransitionBasedParser.v2`, greedy) spends most of its time
not in the network but in its per-token state machine, whose compiled helpers take and release
the GIL on every call (about 40% of NER time measured with `perf` on spaCy 3.8.18). That state
machine is tiny for NER: every action consumes exactly one token, so step t of the decode is
token t of every document. This module runs the same network (spaCy's own tok2vec and
precomputed lower layer, the same weights) and replays the decode with numpy over the whole
batch at once: feature ids B0, E0 and B0-1 as `StateC.set_context_tokens` builds them for
three features, summed in the same order as `sum_state_features`, maxout, the upper layer,
spaCy's unseen-class rule, `BiluoPushDown`'s validity rules for documents without preset
entities, and the first maximum among valid actions (`arg_max_if_valid`).

`tests/unit/pii/test_greedy_ner.py` and `bench/pii_speed.py --check-ner` compare the entities
with `nlp.pipe`'s on real text.

The token vectors are spaCy's tok2vec, with its maxout layers run piece-major (`_MaxoutNorm`,
`_FastEncoder`): the same products and the same layer-norm arithmetic, bit for bit the same
vectors (tested), in half thinc's time; another tok2vec shape goes through thinc.

The matrix products go through numpy's BLAS (single-threaded while decoding, so a worker uses
one core) instead of thinc's bundled BLIS: about 1.4x faster here; in rare near-ties the last
bits of a score can differ from spaCy's, which could flip a decision (none seen on the
benchmark corpora).
"""

from __future__ import annotations

import functools
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

    f32 = np.float32

    @numba.njit(cache=True, nogil=True, inline="always")
    def _pairwise96(v):
        # numpy's float32 sum of a contiguous row of 96 (< 128): eight running sums, then a tree
        r0, r1, r2, r3, r4, r5, r6, r7 = v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
        for k in range(8, 96, 8):
            r0 += v[k]
            r1 += v[k + 1]
            r2 += v[k + 2]
            r3 += v[k + 3]
            r4 += v[k + 4]
            r5 += v[k + 5]
            r6 += v[k + 6]
            r7 += v[k + 7]
        return ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))

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


class _FastEncoder:
    """spaCy's `MaxoutWindowEncoder.v2` with window 1 for inference: thinc's flatten with its
    padding rows, then per block seq2col, maxout, layer norm and the residual sum, as
    `with_array(clone(residual(...)))` computes them."""

    def __init__(self, encode, ops):
        self.ops = ops
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
        # The compiled tail covers the small English model's shape: width 96, three pieces, float32.
        self.fused = all(b.nO == 96 and b.nP == 3 and b.W.dtype == np.float32 for b in self.blocks)

    def __call__(self, per_doc: list) -> list:
        lengths = np.asarray([len(x) for x in per_doc], dtype=np.int32)
        X = self.ops.flatten(per_doc, pad=self.pad)
        if self.fused and X.shape[0]:
            maxout_moments, norm_residual = _fused_kernel()
            n = X.shape[0]
            cols = _seq2col1(X)
            Y = np.empty((n, 3 * 96), dtype=np.float32)
            T = np.empty((n, 96), dtype=np.float32)
            mu = np.empty((n, 1), dtype=np.float32)
            var = np.empty((n, 1), dtype=np.float32)
            for block in self.blocks:
                np.matmul(cols, block.W.T, out=Y)
                maxout_moments(Y, block.b, T, mu[:, 0], var[:, 0])
                inv = var ** (-1.0 / 2.0)   # numpy's float32 power, as thinc's layer norm takes it
                X_next = np.empty_like(X)
                norm_residual(T, mu[:, 0], inv[:, 0], block.G, block.beta, X, X_next, cols)
                X = X_next
            return self.ops.unflatten(X, lengths, pad=self.pad)
        for block in self.blocks:
            X = X + block(_seq2col1(X))
        return self.ops.unflatten(X, lengths, pad=self.pad)


class GreedyNer:
    """Batch greedy decoder for one spaCy `EntityRecognizer`; build with `for_pipe`."""

    def __init__(self, ner, *, numpy_blas: bool = True):
        model = ner.model
        self._t2v = model.get_ref("tok2vec")
        self._lower = model.get_ref("lower")
        upper = model.get_ref("upper")
        if numpy_blas:
            ops = _blas_ops()
            for node in (*self._t2v.walk(), *self._lower.walk(), *upper.walk()):
                node.ops = ops
        self._ops = upper.ops
        self._embed_parts = _embed_parts(self._t2v)
        self._fast = None
        if self._embed_parts is not None:
            try:
                _, _, maxout, encode, _, _ = self._embed_parts
                self._fast = (_MaxoutNorm(maxout.layers[0]), _FastEncoder(encode, self._ops))
            except (ValueError, KeyError, StopIteration):
                self._fast = None
        self._W = upper.get_param("W")
        self._bu = upper.get_param("b")
        self._bl = self._lower.get_param("b").reshape(-1)
        self._pieces = self._lower.get_dim("nP")
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

        with threadpool_limits(limits=1, user_api="blas"):
            return self._decode(list(docs))

    def _tokvecs(self, docs: list):
        """The tok2vec output for the docs' tokens, concatenated. The embedding stage depends
        on each token's own features only (NORM, PREFIX, SUFFIX, SHAPE), so it runs once per
        distinct feature row of the batch (a third of the rows on English prose) and is
        gathered back; the convolutions then see exactly the rows `predict` would give them."""
        if self._embed_parts is None:
            return self._t2v.predict(docs)
        features, embed, maxout, encode, to_array, linear = self._embed_parts
        rows = features.predict(docs)
        lengths = [len(r) for r in rows]
        table = np.concatenate(rows)
        keys = np.ascontiguousarray(table).view(np.dtype((np.void, table.dtype.itemsize * table.shape[1]))).ravel()
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        if self._fast is not None:
            fast_maxout, fast_encode = self._fast
            vectors = fast_maxout(embed.predict(table[first]))[inverse]
            per_doc = np.split(vectors, np.cumsum(lengths)[:-1])
            return linear.predict(to_array.predict(fast_encode(per_doc)))
        vectors = maxout.predict(embed.predict(table[first]))[inverse]
        per_doc = np.split(vectors, np.cumsum(lengths)[:-1])
        return linear.predict(to_array.predict(encode.predict(per_doc)))

    def _decode(self, docs: list) -> list[list[tuple[int, int, str]]]:
        from spacy.attrs import ENT_IOB, IS_SPACE, SENT_START

        out: list[list[tuple[int, int, str]]] = [[] for _ in docs]
        lens = np.array([len(d) for d in docs], dtype=np.int64)
        todo = [d for d in docs if len(d)]
        if not todo:
            return out
        attrs = np.concatenate([d.to_array([IS_SPACE, ENT_IOB, SENT_START]).reshape(-1, 3) for d in todo])
        if attrs[:, 1].any():
            raise ValueError("GreedyNer decodes documents without preset entities only")
        # A sentence start after a document's first token would forbid entities across it
        # (spaCy's rule); documents from the tokenizer have none, and only they come here.
        starts = attrs[:, 2] == 1
        starts[np.concatenate([[0], np.cumsum(lens[lens > 0])[:-1]])] = False
        if starts.any():
            raise ValueError("GreedyNer decodes documents without sentence boundaries only")
        tokvecs = self._tokvecs(todo)
        cached, _ = self._lower(tokvecs, is_train=False)      # row 0: padding, then one row per token
        cached = cached.reshape(cached.shape[0], cached.shape[1], -1)
        f0, f1, f2 = cached[:, 0], cached[:, 1], cached[:, 2]
        space = np.concatenate([[0], attrs[:, 0]]).astype(np.int64)

        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]) + 1
        order = np.argsort(-lens, kind="stable")
        order = order[lens[order] > 0]
        slens, soffs = lens[order], offsets[order]
        n = len(order)
        ent_start = np.full(n, -1, dtype=np.int64)   # token index of the open entity, -1: none
        cur = np.zeros(n, dtype=np.int64)            # label of the open entity, 0: none
        found = []
        active = n
        for t in range(int(slens[0])):
            while slens[active - 1] <= t:
                active -= 1
            k = active
            ids0 = soffs[:k] + t
            es = ent_start[:k]
            opened = es >= 0
            h = f0[ids0]
            h += f1[np.where(opened, soffs[:k] + es, 0)]
            h += f2[np.where(opened, ids0 - 1, 0)]
            h += self._bl
            h = h.reshape(k, -1, self._pieces)
            h = functools.reduce(np.maximum, [h[:, :, p] for p in range(1, self._pieces)], h[:, :, 0])
            scores = self._ops.gemm(h, self._W, trans2=True)
            scores += self._bu
            if len(self._unseen):
                scores[:, self._unseen] = scores.min()
            code = cur[:k] * 4 + (slens[:k] - 1 == t) * 2 + space[ids0]
            scores += self._mask[code]
            act = scores.argmax(axis=1)
            kind, lab = self._kind[act], self._lab[act]
            began = np.nonzero(kind == 0)[0]
            ent_start[began] = t
            cur[began] = lab[began]
            closed = np.nonzero(kind == 2)[0]
            if len(closed):
                found.append((closed, ent_start[closed].copy(), t + 1, cur[closed].copy()))
                ent_start[closed] = -1
                cur[closed] = 0
            unit = np.nonzero(kind == 3)[0]
            if len(unit):
                found.append((unit, np.full(len(unit), t), t + 1, lab[unit]))
        for rows, begins, end, labels in found:
            for doc_i, b, lb in zip(order[rows].tolist(), begins.tolist(), labels.tolist()):
                out[doc_i].append((b, end, self.labels[lb]))
        for ents in out:
            ents.sort()
        return out
