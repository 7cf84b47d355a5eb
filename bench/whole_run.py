#!/usr/bin/env python
"""A whole cleaning run as a user runs it, against plain Presidio's single-core speed, same run.

    .venv/bin/python bench/whole_run.py                       # 20,000 docs (~26 MB), configs/sample.yaml
    .venv/bin/python bench/whole_run.py --docs 2000 --plain-docs 100   # quick check

Corpus: prose documents of 8-16 sentences drawn from the 17 Gutenberg books in
shared/data/dedup/nltk_gutenberg_throughput (names everywhere: Emma Woodhouse, Mr. Knightley ...)
with 0-3 synthetic PII sentences each (the templates of bench/pii_speed.py: e-mail addresses at
example.com, phone numbers in 555-01xx, Luhn-valid test card numbers, SSNs, IBANs, documentation IP
ranges), as JSON Lines with an `id` and a `text`. The gold spans of the synthetic values are kept in
a sidecar file, not in the corpus.

Measured, in one invocation:

  plain      Presidio's `AnalyzerEngine.analyze` per document on the first --plain-docs documents,
             entities = the config's entity list less those Presidio has no recognizer for, one
             core (OMP/BLAS threads 1), in a subprocess: MB/s of text per core
  ours       `hygiene run CONFIG --input corpus.jsonl --no-prefect` (or with Prefect: --prefect) in a
             subprocess, the shipped config as is: wall, MB/s of input text, CPU/wall of the process
             tree (sampled every 0.2 s), and the manifest's per-phase timings (wall, CPU, CPU/wall)

Reported: the whole run's MB/s over plain Presidio's single-core MB/s (the target is >= 20x on a
2-core machine), CPU/wall during the PII phase (target >= 1.7), and whether the same entities are
found: the share of gold synthetic values that no longer appear in our output, beside the share
plain Presidio's spans cover on its documents, per entity type.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from common import finished_run, machine_info, results_path  # noqa: E402
from gen_corpus import Prose  # noqa: E402
from pii_speed import GOLD_FIELDS, pii_sentence  # noqa: E402

ONE_CORE = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def make_corpus(folder: Path, docs: int, seed: int) -> dict:
    """corpus.jsonl (id, text) and gold.jsonl (id, spans) in `folder`; reused when present and equal."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("docs") == docs and meta.get("seed") == seed:
            return meta
    rng = random.Random(seed)
    prose = Prose()
    nbytes = 0
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f, open(folder / "gold.jsonl", "w", encoding="utf-8") as g:
        for i in range(docs):
            text, _ = prose.paragraph(rng, rng.randint(700, 1600))
            parts = [text]
            spans = []
            for _ in range(rng.choice([0, 1, 1, 2, 3])):
                sent, sp = pii_sentence(rng)
                cut = rng.randint(0, len(parts))
                parts.insert(cut, (sent, sp))
            out = ""
            for p in parts:
                if out:
                    out += " "
                if isinstance(p, tuple):
                    spans += [[e, a + len(out), b + len(out)] for e, a, b in p[1]]
                    out += p[0]
                else:
                    out += p
            nbytes += len(out.encode("utf-8"))
            f.write(json.dumps({"id": f"d{i:06d}", "text": out}) + "\n")
            g.write(json.dumps({"id": f"d{i:06d}", "spans": spans}) + "\n")
    meta = {"docs": docs, "seed": seed, "text_bytes": nbytes, "file_bytes": (folder / "corpus.jsonl").stat().st_size}
    meta_path.write_text(json.dumps(meta))
    return meta


PLAIN_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[4])
from pipeline.config import load_config
from pipeline.pii.engine import _offline_tldextract
from presidio_analyzer import AnalyzerEngine
from presidio_analyzer.nlp_engine import NlpEngineProvider
_offline_tldextract()
cfg = load_config(sys.argv[3]).pii
conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": cfg.model}]}
analyzer = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
known = set(analyzer.get_supported_entities("en"))
entities = [e for e in cfg.all_entities() if e in known]
texts = [json.loads(l)["text"] for l, _ in zip(open(sys.argv[1], encoding="utf-8"), range(int(sys.argv[2])))]
for t in texts[:3]:
    analyzer.analyze(t, language="en", entities=entities)
t0, c0 = time.perf_counter(), time.process_time()
spans = [[(r.entity_type, r.start, r.end) for r in analyzer.analyze(t, language="en", entities=entities)] for t in texts]
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"docs": len(texts), "text_bytes": sum(len(t.encode()) for t in texts), "wall_s": wall, "cpu_s": cpu,
                  "entities": entities, "spans": spans}))
"""


def run_plain(corpus: Path, n: int, config: Path) -> dict:
    env = {**os.environ, **ONE_CORE}
    out = subprocess.run([sys.executable, "-c", PLAIN_CHILD, str(corpus), str(n), str(config), str(REPO)],
                         env=env, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["mb_per_s"] = res["text_bytes"] / 1e6 / res["wall_s"]
    return res


def run_ours(corpus: Path, out_dir: Path, config: Path, prefect: bool, code: Path = REPO) -> dict:
    import psutil

    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(config), "--input", str(corpus), "--output", str(out_dir)]
    if not prefect:
        cmd.append("--no-prefect")
    env = {**os.environ, "PYTHONPATH": str(code)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    samples = []  # (t, cpu seconds of the tree)
    seen: dict[int, float] = {}
    while proc.poll() is None:
        try:
            for p in [me, *me.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    seen[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        samples.append((time.perf_counter() - t0, sum(seen.values())))
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    _, manifest = finished_run(proc, out_dir)
    return {"wall_s": wall, "cpu_s": samples[-1][1] if samples else None, "samples": samples, "manifest": manifest}


def redaction_recall(out_dir: Path, gold_path: Path, ids: set[str] | None = None) -> dict:
    """Per entity type: gold synthetic values (in kept documents) that no longer appear in the output text."""
    import polars as pl

    corpus_dir = gold_path.parent
    texts = {}
    for line in open(corpus_dir / "corpus.jsonl", encoding="utf-8"):
        r = json.loads(line)
        if ids is None or r["id"] in ids:
            texts[r["id"]] = r["text"]
    out = pl.concat([pl.read_parquet(p, columns=["id", "text"]) for p in sorted((out_dir / "shards").glob("*.parquet"))])
    written = dict(zip(out["id"].to_list(), out["text"].to_list()))
    per: dict[str, list[int]] = {}
    for line in open(gold_path, encoding="utf-8"):
        g = json.loads(line)
        if g["id"] not in written or g["id"] not in texts:
            continue
        for e, a, b in g["spans"]:
            value = texts[g["id"]][a:b]
            hit = per.setdefault(e, [0, 0])
            hit[1] += 1
            hit[0] += value not in written[g["id"]]
    return {e: {"removed": h, "gold": n, "recall": round(h / n, 4)} for e, (h, n) in sorted(per.items())}


def plain_recall(plain: dict, gold_path: Path) -> dict:
    per: dict[str, list[int]] = {}
    golds = [json.loads(line) for line, _ in zip(open(gold_path, encoding="utf-8"), range(plain["docs"]))]
    for g, spans in zip(golds, plain["spans"]):
        for e, a, b in g["spans"]:
            hit = per.setdefault(e, [0, 0])
            hit[1] += 1
            hit[0] += any(s < b and a < t for _, s, t in spans)
    return {e: {"covered": h, "gold": n, "recall": round(h / n, 4)} for e, (h, n) in sorted(per.items())}


def phase_table(manifest: dict) -> list[dict]:
    return manifest.get("timings", {}).get("phases", [])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--plain-docs", type=int, default=300)
    ap.add_argument("--config", default=None)
    ap.add_argument("--work", default="/tmp/hygiene-wholerun")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--prefect", action="store_true", help="run through the Prefect flow (default: --no-prefect)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--code", default=str(REPO),
                    help="the checkout whose pipeline runs (e.g. a worktree of an older commit, for a before/after "
                         "in the same session); its own configs/sample.yaml unless --config is given")
    args = ap.parse_args()
    args.config = args.config or str(Path(args.code) / "configs" / "sample.yaml")

    work = Path(args.work)
    corpus_dir = work / f"corpus-{args.docs}-{args.seed}"
    meta = make_corpus(corpus_dir, args.docs, args.seed)
    corpus, gold = corpus_dir / "corpus.jsonl", corpus_dir / "gold.jsonl"
    print(f"corpus: {meta['docs']:,} docs, {meta['text_bytes'] / 1e6:.1f} MB of text", flush=True)

    runs, plains = [], []
    for k in range(args.repeats):
        plains.append(run_plain(corpus, args.plain_docs, Path(args.config)))
        print(f"plain Presidio: {plains[-1]['mb_per_s']:.4f} MB/s on one core ({plains[-1]['docs']} docs)", flush=True)
        out_dir = work / f"run-{k}"
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        r = run_ours(corpus, out_dir, Path(args.config), args.prefect, Path(args.code))
        r["mb_per_s"] = meta["text_bytes"] / 1e6 / r["wall_s"]
        r["cpu_per_wall"] = r["cpu_s"] / r["wall_s"] if r["cpu_s"] else None
        runs.append(r)
        pii = next((p for p in phase_table(r["manifest"]) if p["name"] == "pii"), {})
        print(f"ours: {r['wall_s']:.1f} s, {r['mb_per_s']:.3f} MB/s, CPU/wall {r['cpu_per_wall']:.2f}; "
              f"pii phase {pii.get('wall_s')} s, CPU/wall {pii.get('cpu_per_wall')}", flush=True)

    plain_mb = statistics.median(p["mb_per_s"] for p in plains)
    ours_mb = statistics.median(r["mb_per_s"] for r in runs)
    last = runs[-1]
    m = last["manifest"]
    sample_ids = {json.loads(line)["id"] for line, _ in zip(open(corpus, encoding="utf-8"), range(args.plain_docs))}
    result = {
        "machine": machine_info(("presidio-analyzer", "spacy", "polars", "pyarrow")),
        "corpus": meta, "config": args.config, "code": args.code, "prefect": args.prefect, "repeats": args.repeats,
        "plain": [{k: v for k, v in p.items() if k != "spans"} for p in plains],
        "ours": [{"wall_s": round(r["wall_s"], 2), "mb_per_s": round(r["mb_per_s"], 4),
                  "cpu_per_wall": round(r["cpu_per_wall"], 3) if r["cpu_per_wall"] else None} for r in runs],
        "speedup_vs_plain_single_core": round(ours_mb / plain_mb, 2),
        "timings": m.get("timings"),
        "conservation": m["conservation"]["overall"],
        "pii": {k: m["pii"][k] for k in ("records_by_action", "by_entity", "residual_scan")},
        "found": {"ours_all_docs": redaction_recall(work / f"run-{args.repeats - 1}", gold),
                  "ours_plain_docs": redaction_recall(work / f"run-{args.repeats - 1}", gold, sample_ids),
                  "plain_plain_docs": plain_recall(plains[-1], gold)},
    }
    path = results_path("whole-run", args.out)
    path.write_text(json.dumps(result, indent=2))
    if not m.get("timings"):
        print("(this checkout records no timings)")
    print(f"\nwhole run {ours_mb:.3f} MB/s = {result['speedup_vs_plain_single_core']}x plain Presidio's single-core "
          f"{plain_mb:.4f} MB/s")
    print("phases:")
    for p in phase_table(m):
        print(f"  {p['name']:<12} wall {p['wall_s']:>8.2f} s  cpu {p.get('cpu_s') or 0:>8.2f} s  "
              f"cpu/wall {p.get('cpu_per_wall', '-')!s:>5}  {p.get('mb_per_s', '')}")
    print("found (share of gold values removed / covered):")
    for e, v in result["found"]["ours_plain_docs"].items():
        pv = result["found"]["plain_plain_docs"].get(e, {})
        print(f"  {e:<14} ours {v['recall']:.3f} ({v['gold']})   plain {pv.get('recall', float('nan')):.3f}")
    print(f"results: {path}")


if __name__ == "__main__":
    main()
