#!/usr/bin/env python
"""The batched greedy NER decoder against spaCy's own `nlp.pipe`: the same entities, document by document.

`pipeline/pii/greedy_ner.py` replays spaCy's network and greedy decode; this compares its
entities (token start, token end, label) with those of `nlp.pipe` on every document of the
labelled PII sets, the PII benchmark corpora and the sample data. Both see the same documents
in batches of --batch; spaCy runs with its shipped BLAS (BLIS), we with numpy's, so a rare
near-tie could decide differently (the count would show it).

Usage::

    .venv/bin/python bench/ner_parity.py                  # all sets (~5 min on 2 cores)
    .venv/bin/python bench/ner_parity.py --sets bench     # one set

Writes a table to stdout and bench/results/ner-parity-<date>.json (counts and the indices of the
documents that differ; never text).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DATA = ROOT.parent / "shared" / "data" / "pii"
LARGE = Path("/tmp/hygiene-bench/pii-speed")

from common import jsonl_texts  # noqa: E402


def load_sets(names: list[str], large_docs: int, seed: int) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    if "bench" in names:
        sets["bench"] = [json.loads(x)["text"] for x in (DATA / "bench_paragraphs" / "corpus.jsonl").read_text().splitlines()]
    if "large" in names:
        from pii_speed import make_large

        path = LARGE / f"large-{large_docs}-s{seed}.jsonl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            make_large(path, large_docs, seed)
        sets["large"] = [json.loads(x)["text"] for x in path.read_text().splitlines()]
    if "generated" in names:
        rows = (DATA / "generated" / "presidio_synth_2000_seed42.jsonl").read_text().splitlines()
        sets["generated-2000"] = [json.loads(x)["text"] for x in rows]
    if "research" in names:
        for name in ("synth_dataset_v2", "generated_large"):
            sets[name] = [r["full_text"] for r in json.loads((DATA / "presidio_research" / f"{name}.json").read_text())]
    if "samples" in names:
        sets["data_samples"] = jsonl_texts(sorted((ROOT / "data_samples").rglob("*.jsonl")))
    return sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="bench,large,generated,research,samples")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--large-docs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import spacy

    from pipeline.pii.config import DEFAULT_MODEL
    from pipeline.pii.greedy_ner import GreedyNer

    nlp = spacy.load(DEFAULT_MODEL, exclude=["tagger", "parser", "lemmatizer", "attribute_ruler", "tok2vec", "senter"])
    decoder = GreedyNer.for_pipe(nlp.get_pipe("ner"))
    if decoder is None:
        raise SystemExit(f"{DEFAULT_MODEL}: the batched decoder does not support this model")
    results = {"benchmark": "ner_parity", "date": dt.date.today().isoformat(), "command": " ".join(sys.argv),
               "python": platform.python_version(), "spacy": spacy.__version__, "model": DEFAULT_MODEL,
               "batch": args.batch, "sets": {}}
    print("| set | docs | entities (spaCy) | documents that differ | spaCy s | ours s |")
    print("|---|---|---|---|---|---|")
    for name, texts in load_sets(args.sets.split(","), args.large_docs, args.seed).items():
        t0 = time.perf_counter()
        expected = [sorted((e.start, e.end, e.label_) for e in doc.ents) for doc in nlp.pipe(texts, batch_size=args.batch)]
        t_spacy = time.perf_counter() - t0
        t0 = time.perf_counter()
        got = []
        for i in range(0, len(texts), args.batch):
            got += decoder([nlp.make_doc(t) for t in texts[i:i + args.batch]])
        t_ours = time.perf_counter() - t0
        differ = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
        n_ents = sum(len(e) for e in expected)
        results["sets"][name] = {"docs": len(texts), "entities": n_ents, "differ": len(differ),
                                 "differ_docs": differ[:100], "spacy_s": round(t_spacy, 2), "ours_s": round(t_ours, 2)}
        print(f"| {name} | {len(texts):,} | {n_ents:,} | {len(differ)} | {t_spacy:.1f} | {t_ours:.1f} |", flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"ner-parity-{results['date']}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
