#!/usr/bin/env python
"""The int8 NER encoder (`pii.ner_precision: int8`) against today's float32 path: CPU and entities.

Two engines of `configs/sample.yaml`'s `pii` section in one process, one core (OMP/BLAS threads
1), the same documents of the whole-run corpus (`bench/whole_run.py` generates and caches it):

  split   CPU seconds (`time.process_time`) of a first pass (`PiiEngine.detect`) and of its
          encoder (the four maxout blocks, `_FastEncoder.__call__`) per --split-docs documents,
          after --warm documents have warmed both vocabularies; float32 and int8 alternate
          (which goes first alternates too), --rounds times, on fresh documents each round.
  agree   the first-pass spans of --docs documents, float32 against int8, per entity type:
          equal (same type, start and end), lost (only float32's), gained (only int8's); and the
          same for `detect_for_redaction` (the second pass included) on the first --redact-docs.

  products  one block's product alone, (4,096 x 288) by (288 x 288), ms per call: numpy's float32
          (today), ORT's float32 `MatMul`, ORT's `MatMulInteger` (u8 x s8, what `int8` runs) and
          ORT's `DynamicQuantizeMatMul` (its own per-tensor quantization of the input: a token's
          result would depend on the other documents of its group, so not used).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/ner_int8.py                 # ~10 min on one core
    OMP_NUM_THREADS=1 .venv/bin/python bench/ner_int8.py --docs 2000     # quick look

Writes a summary to stdout and bench/results/ner-int8-<date>.json (counts only, never text).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from common import machine_info, results_path  # noqa: E402

CORPUS = Path("/tmp/hygiene-wholerun/corpus-20000-20261207/corpus.jsonl")


class _TimedEncoder:
    """A `_FastEncoder` whose calls add their CPU seconds to `seconds`."""

    def __init__(self, encoder):
        self._encoder = encoder
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def __call__(self, *args):
        t0 = time.process_time()
        try:
            return self._encoder(*args)
        finally:
            self.seconds += time.process_time() - t0


def engine(precision: str):
    """A set-up engine of configs/sample.yaml's pii section at this precision, its encoder timed."""
    from pipeline.config import load_config
    from pipeline.pii.engine import PiiEngine

    cfg = load_config(REPO / "configs" / "sample.yaml").pii.model_copy(update={"ner_precision": precision})
    eng = PiiEngine(cfg).setup()
    maxout, encoder = eng._greedy._fast
    timed = _TimedEncoder(encoder)
    eng._greedy._fast = (maxout, timed)
    return eng, timed


def split(engines: dict, texts: list[str], warm: int, per: int, rounds: int) -> dict:
    """CPU seconds of a first pass and of its encoder per `per` documents, by precision and round."""
    for eng, _ in engines.values():
        eng.detect(texts[:warm])
    out = {name: {"first_pass": [], "encoder": []} for name in engines}
    names = list(engines)
    for r in range(rounds):
        docs = texts[warm + r * per: warm + (r + 1) * per]
        for name in names if r % 2 == 0 else names[::-1]:
            eng, timed = engines[name]
            timed.seconds = 0.0
            t0 = time.process_time()
            eng.detect(docs)
            out[name]["first_pass"].append(round(time.process_time() - t0, 3))
            out[name]["encoder"].append(round(timed.seconds, 3))
        print(f"round {r}: " + ", ".join(f"{n} {out[n]['first_pass'][-1]:.2f} s (encoder {out[n]['encoder'][-1]:.2f})"
                                         for n in names), file=sys.stderr, flush=True)
    return out


def _overlaps(span: tuple, others: set) -> bool:
    return any(o[1] < span[2] and span[1] < o[2] for o in others)


def products(calls: int = 200) -> dict:
    """ms per call of one block-sized product in the four ways the module docstring lists."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from pipeline.pii.int8_encoder import _session, quantize_weights

    rng = np.random.default_rng(0)
    A = rng.standard_normal((4096, 288)).astype(np.float32)
    W = (rng.standard_normal((288, 288)) * 0.08).astype(np.float32)
    B, scales = quantize_weights(W)
    Aq = rng.integers(0, 256, A.shape, dtype=np.uint8)

    def one_node(op, domain, inputs, consts, in_type, out_type):
        graph = helper.make_graph([helper.make_node(op, inputs, ["Y"], domain=domain)], "p",
                                  [helper.make_tensor_value_info("A", in_type, ["rows", 288])],
                                  [helper.make_tensor_value_info("Y", out_type, ["rows", 288])],
                                  [numpy_helper.from_array(v, k) for k, v in consts.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 8
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    f32 = one_node("MatMul", "", ["A", "W"], {"W": np.ascontiguousarray(W.T)}, TensorProto.FLOAT, TensorProto.FLOAT)
    dyn = one_node("DynamicQuantizeMatMul", "com.microsoft", ["A", "B", "s", "z"],
                   {"B": B, "s": scales, "z": np.zeros(288, np.int8)}, TensorProto.FLOAT, TensorProto.FLOAT)
    integer = _session(B)
    WT, out = np.ascontiguousarray(W.T), np.empty((4096, 288), np.float32)
    ways = {"numpy float32": lambda: np.matmul(A, WT, out=out),
            "ORT MatMul float32": lambda: f32.run(None, {"A": A}),
            "ORT MatMulInteger u8 x s8": lambda: integer.run(None, {"A": Aq}),
            "ORT DynamicQuantizeMatMul": lambda: dyn.run(None, {"A": A})}
    result = {}
    for name, call in ways.items():
        call()
        t0 = time.process_time()
        for _ in range(calls):
            call()
        result[name] = round((time.process_time() - t0) / calls * 1e3, 3)
        print(f"{name}: {result[name]:.2f} ms", file=sys.stderr)
    return result


def compare(a: list[list], b: list[list]) -> dict:
    """Per entity type: spans equal in both, only in a (lost), only in b (gained), and of those how
    many overlap a span the other side has instead (moved: other bounds or type); documents that differ."""
    counts: dict[str, Counter] = {}
    differ = 0
    for sa, sb in zip(a, b):
        ka = {(s.entity, s.start, s.end) for s in sa}
        kb = {(s.entity, s.start, s.end) for s in sb}
        differ += ka != kb
        lost, gained = ka - kb, kb - ka
        for key, kind in [(k, "equal") for k in ka & kb] + [(k, "lost") for k in lost] + [(k, "gained") for k in gained]:
            counts.setdefault(key[0], Counter())[kind] += 1
        for key in lost:
            counts[key[0]]["lost_moved"] += _overlaps(key, gained)
        for key in gained:
            counts[key[0]]["gained_moved"] += _overlaps(key, lost)
    return {"documents": len(a), "documents_differing": differ,
            "by_type": {t: dict(c) for t, c in sorted(counts.items())}}


def agree(engines: dict, texts: list[str], redact_docs: int) -> dict:
    (_, (e32, _)), (_, (e8, _)) = engines.items()
    first = compare(e32.detect(texts), e8.detect(texts))
    redact = texts[:redact_docs]
    return {"first_pass": first, "detect_for_redaction": compare(e32.detect_for_redaction(redact),
                                                                 e8.detect_for_redaction(redact))}


def table(result: dict) -> str:
    lines = ["| type | equal | lost (float32 only; of which moved) | gained (int8 only; of which moved) |",
             "|---|---|---|---|"]
    for t, c in result["by_type"].items():
        lines.append(f"| {t} | {c.get('equal', 0)} | {c.get('lost', 0)} ({c.get('lost_moved', 0)}) "
                     f"| {c.get('gained', 0)} ({c.get('gained_moved', 0)}) |")
    return "\n".join(lines) + f"\n\n{result['documents_differing']} of {result['documents']} documents differ"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(CORPUS))
    ap.add_argument("--docs", type=int, default=20_000, help="documents compared (agree)")
    ap.add_argument("--redact-docs", type=int, default=2_000, help="documents compared with the second pass")
    ap.add_argument("--warm", type=int, default=1_000)
    ap.add_argument("--split-docs", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--skip", choices=("split", "agree"), nargs="*", default=())
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    texts = [json.loads(line)["text"] for line in Path(args.corpus).read_text().splitlines()]
    result = {"machine": machine_info(("onnxruntime", "numpy", "spacy")), "corpus": args.corpus}
    result["products_ms"] = products()
    if {"split", "agree"} <= set(args.skip):
        engines = {}
    else:
        engines = {p: engine(p) for p in ("float32", "int8")}
    if "split" not in args.skip:
        result["split"] = split(engines, texts, args.warm, args.split_docs, args.rounds)
        result["split_docs"] = args.split_docs
    if "agree" not in args.skip:
        t0 = time.perf_counter()
        result["agree"] = agree(engines, texts[:args.docs], args.redact_docs)
        print(f"agree: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        print("first pass\n\n" + table(result["agree"]["first_pass"]))
        print("\ndetect_for_redaction\n\n" + table(result["agree"]["detect_for_redaction"]))
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out = results_path("ner-int8", args.out)
    out.write_text(json.dumps(result, indent=1))
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
