#!/usr/bin/env python
"""Whole cleaning runs over corpora of awkward shapes (issue #20, bad input): is every core busy
where there is work, is memory bounded, is every record accounted for?

    .venv/bin/python bench/pii_shapes.py                        # every shape, this checkout
    .venv/bin/python bench/pii_shapes.py --shapes tiny --code /tmp/before

Shapes (generated from the 17 Gutenberg books of shared/data and `pii_speed.py`'s synthetic PII
templates; reused from --work when present):

  tiny    100,000 records of 1-12 words (a piece of a sentence, or 1 in 10 a bare synthetic
          value: an e-mail address, a phone number, a card number), about 4 MB of text
  none    6,000 documents of lower-cased prose with no synthetic values (about 8 MB): nothing for
          the regex recognizers, few capitalised words for the NER
  dense   6,000 documents of 6-14 sentences, each one a synthetic PII sentence (about 5 MB): PII
          in every sentence (many go over `record_rule.max_spans` and are dropped)

Each shape: `hygiene run CONFIG --input corpus.jsonl --no-prefect` (configs/sample.yaml of --code
unless --config) in a subprocess, measured as `huge_record.py` measures (wall, CPU/wall of the
process tree, peak resident memory summed over the tree and of its largest process, the PII
phases' wall, CPU and CPU/wall from the manifest), and the records accounted for: the ledger's
rows against the input's lines, every record with one decision.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine_info, results_path  # noqa: E402
from gen_corpus import Prose  # noqa: E402
from huge_record import run  # noqa: E402
from pii_speed import _fake, pii_sentence  # noqa: E402

SHAPES = ("tiny", "none", "dense")
BARE_VALUES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")


def _tiny(rng: random.Random, prose: Prose) -> str:
    if rng.random() < 0.1:
        return _fake(rng.choice(BARE_VALUES), rng, [])
    words = prose.sentences[rng.randrange(len(prose.sentences))].split()
    start = rng.randrange(len(words))
    return " ".join(words[start:start + rng.randint(1, 12)])


def _none(rng: random.Random, prose: Prose) -> str:
    return prose.paragraph(rng, rng.randint(700, 1600))[0].lower()


def _dense(rng: random.Random, prose: Prose) -> str:
    return " ".join(pii_sentence(rng)[0] for _ in range(rng.randint(6, 14)))


GENERATORS = {"tiny": (_tiny, 100_000), "none": (_none, 6_000), "dense": (_dense, 6_000)}


def make_shape(folder: Path, shape: str, seed: int) -> dict:
    """corpus.jsonl of one shape in `folder`; reused when present and made with the same seed."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("seed") == seed:
        return json.loads(meta_path.read_text())
    make, docs = GENERATORS[shape]
    rng, prose, nbytes = random.Random(seed), Prose(), 0
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i in range(docs):
            text = make(rng, prose)
            nbytes += len(text.encode("utf-8"))
            f.write(json.dumps({"id": f"{shape}{i:06d}", "text": text}) + "\n")
    meta = {"shape": shape, "seed": seed, "records": docs, "text_bytes": nbytes}
    meta_path.write_text(json.dumps(meta))
    return meta


def accounted(out_dir: Path, records: int) -> dict:
    """The ledger's rows against the input's records: every record once, with a decision."""
    import polars as pl

    ledger = pl.read_parquet(out_dir / "ledger" / "*.parquet", columns=["record_id", "decision"])
    return {"input_records": records, "ledger_rows": ledger.height,
            "distinct_ids": ledger["record_id"].n_unique(),
            "without_decision": int(ledger["decision"].is_null().sum()),
            "by_decision": dict(sorted(ledger["decision"].value_counts().iter_rows()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--config", default=None)
    ap.add_argument("--code", default=str(REPO), help="the checkout whose pipeline runs")
    ap.add_argument("--work", default="/tmp/hygiene-piishapes")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    config = Path(args.config or Path(args.code) / "configs" / "sample.yaml")
    work = Path(args.work)
    results = {}
    for shape in args.shapes:
        meta = make_shape(work / f"corpus-{shape}-{args.seed}", shape, args.seed)
        out_dir = work / f"run-{shape}"
        shutil.rmtree(out_dir, ignore_errors=True)
        r = run(work / f"corpus-{shape}-{args.seed}" / "corpus.jsonl", out_dir, config, Path(args.code))
        r["accounted"] = accounted(out_dir, meta["records"])
        r["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        results[shape] = {"corpus": meta, **r}
        a = r["accounted"]
        print(f"{shape}: {meta['records']:,} records, {meta['text_bytes'] / 1e6:.1f} MB; wall {r['wall_s']} s, "
              f"CPU/wall {r['cpu_per_wall']}; PII wall {r['pii_wall_s']} s, CPU/wall {r['pii_cpu_per_wall']}; "
              f"peak RSS {r['peak_rss_tree_mib']} MiB (tree), {r['peak_rss_process_mib']} MiB (largest); "
              f"ledger {a['ledger_rows']:,} rows, {a['distinct_ids']:,} ids, {a['without_decision']} undecided; "
              f"{a['by_decision']}", flush=True)
    path = results_path("pii-shapes", args.out)
    path.write_text(json.dumps({"machine": machine_info(("presidio-analyzer", "spacy")), "config": str(config),
                                "code": args.code, "shapes": results}, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
