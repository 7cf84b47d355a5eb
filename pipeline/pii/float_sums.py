"""numpy's float32 sum of a row of 96 values, compiled: the NER encoder's layer norm needs it.

Usage (inside a numba kernel factory)::

    pairwise96 = pairwise96_kernel()
    m = pairwise96(row) / 96     # the same float32 value as np.mean(row)

Why: thinc's layer norm takes `mean` and `var` with numpy, whose float32 sum of a contiguous row
shorter than 128 runs eight running sums, then a tree; the float32 encoder
(pipeline/pii/greedy_ner.py) replays that order to give thinc's vectors bit for bit, and the int8
encoder (pipeline/pii/int8_encoder.py) shares it.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def pairwise96_kernel():
    """The compiled sum (numba, imported on first use)."""
    import numba

    @numba.njit(cache=True, nogil=True, inline="always")
    def pairwise96(v):
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

    return pairwise96
