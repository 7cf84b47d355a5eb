"""Benchmark: the paragraph_dedup stage (lines mode) against datatrove's SentenceDedup on the same corpus.

Corpus: documents cut from the NLTK Gutenberg books (20-80 consecutive lines of one book), with
shared boilerplate lines added (navigation headers, footers, cookie and licence notices, chosen
at random from fixed templates, some in several documents, some in many), as JSONL with ids in
input order (so "first occurrence" means the same document for both tools).

Definitions matched as closely as datatrove allows: `split_sentences=False` (one "sentence" per
line, `str.splitlines`), `n_sentences=1` (each line on its own, not spans of 3 sentences),
normalisation lowercase + whitespace only (no punctuation, number or diacritic folding),
`min_doc_words=0`, `min_num_sentences=0`; ours `unit: line, max_documents: 1, min_chars: 1,
lowercase, collapse_whitespace`. Both then remove every occurrence of a line after its first one
(datatrove: its hash-sorted merge keeps the lowest (doc, line); ours: the survivor order, here
the id order). Agreement: per document, the non-empty lines kept by each tool.

Timing, each tool in its own subprocess, single-threaded (POLARS_MAX_THREADS=1 etc.; the
pipeline with one worker; datatrove's LocalPipelineExecutor with tasks=1, workers=1): wall and CPU
(user+sys of the child), peak RSS (ru_maxrss). Ours is the whole run (read, pass 1, barrier, pass
2 writing Parquet shards and the ledger, manifest); datatrove's is signature + find + filter
(reading JSONL, writing JSONL). Also our kernel alone (split+hash and the barrier's group-by).

    python bench/paragraph_dedup.py --size-mb 20 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import machine_info, median, results_path  # noqa: E402

GUTENBERG = Path("/work/shared/data/dedup/nltk_gutenberg_throughput")
PEER_PYTHON = "/tmp/peers-quality/bin/python"
SINGLE = {"NUMBA_NUM_THREADS": "1", "POLARS_MAX_THREADS": "1", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
          "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
HEADERS = ["Home | News | Sport | Culture | Contact", "Skip to main content", "Menu Search Sign in",
           "Home > Books > Classics", "You are here: Library / Reading room"]
FOOTERS = [f"Copyright {y} Example Publishing Ltd. All rights reserved." for y in range(2001, 2011)] + [
    "This site uses cookies to improve your experience. By continuing you accept our use of cookies.",
    "Share this page on Facebook, Twitter or by e-mail.",
    "Subscribe to our newsletter for weekly reading recommendations.",
    "Terms of use | Privacy policy | Accessibility statement",
    "Report an error in this text to the editors at errors@example.com.",
    "Powered by ExampleCMS version 4.2",
]
SEPARATORS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines splits on these too: kept out of the corpus


def make_corpus(out: Path, size_mb: float, seed: int = 7) -> dict:
    rng = random.Random(seed)
    books = []
    for p in sorted(GUTENBERG.glob("*.txt")):
        t = p.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        t = t.translate({ord(c): " " for c in SEPARATORS})
        books.append(t.split("\n"))
    # Rare boilerplate too: lines shared by a handful of documents (quotes, bylines).
    rare = [f"Posted by reader {i} in the {rng.choice(['fiction', 'poetry', 'history'])} forum" for i in range(400)]
    target = int(size_mb * 1_000_000)
    size = n = 0
    with out.open("w", encoding="utf-8") as f:
        while size < target:
            book = rng.choice(books)
            k = rng.randrange(20, 81)
            at = rng.randrange(0, max(1, len(book) - k))
            lines = book[at:at + k]
            if rng.random() < 0.7:
                lines = [rng.choice(HEADERS)] + lines
            if rng.random() < 0.5:
                lines = lines + rng.sample(FOOTERS, rng.randrange(1, 4))
            if rng.random() < 0.3:
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(rare))
            text = "\n".join(lines)
            rec = json.dumps({"id": f"d{n:08d}", "text": text}, ensure_ascii=False) + "\n"
            f.write(rec)
            size += len(rec.encode())
            n += 1
    return {"documents": n, "bytes": out.stat().st_size, "seed": seed}


OURS = r"""
import json, sys, time
from pipeline.config import parse_config
from pipeline.executor import run_local
corpus, out, with_stage = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
stages = [{"kind": "safety"}] + ([{"kind": "paragraph_dedup", "config": {
    "unit": "line", "max_documents": 1, "count": "occurrences", "min_chars": 1, "lowercase": True,
    "collapse_whitespace": True}}] if with_stage else [])
cfg = parse_config({"sources": [{"name": "b", "kind": "jsonl", "paths": [corpus], "id_field": "id"}],
                    "output": {"dir": out}, "runner": {"max_workers": 1}, "stages": stages})
t0 = time.perf_counter()
m = run_local(cfg, workers=1)
st = m["stages"].get("paragraph_dedup", {})
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "barrier": st.get("barrier"),
                              "timings": {k: v for k, v in m["timings"]["stages"].items() if "paragraph" in k}}))
"""

KERNEL = r"""
import json, sys, time
from pathlib import Path
import numpy as np, polars as pl, pyarrow.json as pj
from pipeline.dedup.paragraphs import find_repeats, split_units
corpus, work = sys.argv[1], Path(sys.argv[2])
t0 = time.perf_counter()
table = pj.read_json(corpus)
t1 = time.perf_counter()
units, docs = split_units(np.arange(table.num_rows, dtype=np.int64), table["text"], "line", True, True, 1)
units.write_parquet(work / "u00000.parquet")
t2 = time.perf_counter()
ranks = pl.DataFrame({"unit": np.zeros(table.num_rows, np.int64), "row": np.arange(table.num_rows), "rank": np.arange(table.num_rows)})
removals, stats = find_repeats([(0, work / "u00000.parquet")], ranks, work, 1, count="occurrences")
t3 = time.perf_counter()
print("RESULT " + json.dumps({"read_s": t1 - t0, "split_hash_s": t2 - t1, "barrier_s": t3 - t2, "removed": removals.height}))
"""

PEER = r"""
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup.sentence_dedup import (SentDedupConfig, SentenceDedupSignature, SentenceFindDedups,
                                                     SentenceDedupFilter)
from datatrove.utils.text import TextNormConfig
corpus_dir, work = sys.argv[1], sys.argv[2]
cfg = SentDedupConfig(n_sentences=1, split_sentences=False, only_dedup_in_index=True, min_doc_words=0,
                      min_num_sentences=0, norm_config=TextNormConfig(lowercase=True, norm_whitespace=True,
                      remove_punctuation=False, norm_unicode_diacritics=False, norm_numbers=False))
t0 = time.perf_counter()
for name, pipe in [
    ("sig", [JsonlReader(corpus_dir, id_key="id", text_key="text"), SentenceDedupSignature(f"{work}/sigs", config=cfg)]),
    ("find", [SentenceFindDedups(f"{work}/sigs", f"{work}/dups", config=cfg)]),
    ("filter", [JsonlReader(corpus_dir, id_key="id", text_key="text"), SentenceDedupFilter(f"{work}/dups", config=cfg),
                JsonlWriter(f"{work}/out", compression=None)]),
]:
    LocalPipelineExecutor(pipe, tasks=1, workers=1, logging_dir=f"{work}/logs/{name}").run()
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0}))
"""

# datatrove's defaults (3-sentence spans, NLTK sentence splitting, full normalisation): another
# definition, for its speed only.
PEER_DEFAULT = r"""
import json, sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.dedup.sentence_dedup import (SentDedupConfig, SentenceDedupSignature, SentenceFindDedups,
                                                     SentenceDedupFilter)
corpus_dir, work = sys.argv[1], sys.argv[2]
cfg = SentDedupConfig()
t0 = time.perf_counter()
for name, pipe in [
    ("sig", [JsonlReader(corpus_dir, id_key="id", text_key="text"), SentenceDedupSignature(f"{work}/sigs", config=cfg)]),
    ("find", [SentenceFindDedups(f"{work}/sigs", f"{work}/dups", config=cfg)]),
    ("filter", [JsonlReader(corpus_dir, id_key="id", text_key="text"), SentenceDedupFilter(f"{work}/dups", config=cfg),
                JsonlWriter(f"{work}/out", compression=None)]),
]:
    LocalPipelineExecutor(pipe, tasks=1, workers=1, logging_dir=f"{work}/logs/{name}").run()
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0}))
"""


def _child(args: list[str], env: dict, cwd: Path) -> dict:
    """Run one child; its own rusage (os.wait4): CPU user+sys and peak RSS of that process alone."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=out, stderr=err, text=True, env=env, cwd=str(cwd))
        _pid, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed: {stderr[-3000:]}")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": ru.ru_maxrss / 1024, **json.loads(line[7:])}


def _lines(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.strip()]


def agreement(corpus: Path, ours_out: Path, peer_out: Path) -> dict:
    import polars as pl

    orig = {r["id"]: r["text"] for r in map(json.loads, corpus.open(encoding="utf-8"))}
    shards = sorted((ours_out / "shards").glob("*.parquet"))
    ours = dict(pl.concat([pl.read_parquet(p, columns=["id", "text"]) for p in shards]).iter_rows()) if shards else {}
    peer = {}
    for p in sorted(peer_out.glob("*.jsonl")):
        for line in p.open(encoding="utf-8"):
            r = json.loads(line)
            peer[r["id"]] = r["text"]
    same = differ = 0
    removed_ours = removed_peer = 0
    examples = []
    for i, text in orig.items():
        n = len(_lines(text))
        a, b = _lines(ours.get(i, "")), _lines(peer.get(i, ""))
        removed_ours += n - len(a)
        removed_peer += n - len(b)
        if a == b:
            same += 1
        else:
            differ += 1
            if len(examples) < 5:
                examples.append({"id": i, "lines_kept_ours": len(a), "lines_kept_datatrove": len(b)})
    return {"documents": len(orig), "same_kept_lines": same, "different": differ,
            "documents_kept_ours": len(ours), "documents_kept_datatrove": len(peer),
            "lines_removed_ours": removed_ours, "lines_removed_datatrove": removed_peer, "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--datatrove-default", action="store_true", help="also time datatrove's default config once")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pdd-bench-"))
    try:
        corpus_dir = tmp / "corpus"
        corpus_dir.mkdir()
        corpus = corpus_dir / "c.jsonl"
        info = make_corpus(corpus, args.size_mb)
        env = {**os.environ, **SINGLE, "PYTHONPATH": str(REPO)}
        tools = ["ours", "ours_baseline", "ours_kernel", "datatrove"]
        runs = {t: [] for t in tools + ["datatrove_default"]}
        for r in range(args.repeats):
            for tool in tools + (["datatrove_default"] if r == 0 and args.datatrove_default else []):
                work = tmp / f"{tool}-{r}"  # tools interleaved: the machine is shared
                work.mkdir()
                if tool in ("ours", "ours_baseline"):
                    res = _child([sys.executable, "-c", OURS, str(corpus_dir), str(work / "out"),
                                  "1" if tool == "ours" else "0"], env, REPO)
                elif tool == "datatrove_default":
                    res = _child([PEER_PYTHON, "-c", PEER_DEFAULT, str(corpus_dir), str(work)], {**os.environ, **SINGLE},
                                 work)
                elif tool == "ours_kernel":
                    res = _child([sys.executable, "-c", KERNEL, str(corpus), str(work)], env, REPO)
                else:
                    res = _child([PEER_PYTHON, "-c", PEER, str(corpus_dir), str(work)], {**os.environ, **SINGLE}, work)
                res["mb_per_cpu_s"] = info["bytes"] / 1e6 / res["cpu_s"]
                runs[tool].append(res)
                print(tool, r, {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()
                                if k in ("wall_s", "cpu_s", "peak_rss_mib", "mb_per_cpu_s")}, flush=True)
        agree = agreement(corpus, tmp / "ours-0" / "out", tmp / "datatrove-0" / "out")
        summary = {t: {"median_cpu_s": median([x["cpu_s"] for x in v]), "median_wall_s": median([x["wall_s"] for x in v]),
                       "median_mb_per_cpu_s": median([x["mb_per_cpu_s"] for x in v]),
                       "max_peak_rss_mib": max(x["peak_rss_mib"] for x in v)} for t, v in runs.items() if v}
        # The stage's own cost inside the pipeline: the run with it minus the run without it (paired per repeat).
        added = [a["cpu_s"] - b["cpu_s"] for a, b in zip(runs["ours"], runs["ours_baseline"])]
        summary["stage_added_cpu_s"] = median(added)
        summary["stage_added_mb_per_cpu_s"] = info["bytes"] / 1e6 / median(added) if median(added) > 0 else None
        summary["speedup_cpu_stage_vs_datatrove"] = (summary["datatrove"]["median_cpu_s"] / median(added)
                                                     if median(added) > 0 else None)
        summary["speedup_cpu_ours_vs_datatrove"] = summary["datatrove"]["median_cpu_s"] / summary["ours"]["median_cpu_s"]
        summary["speedup_cpu_kernel_vs_datatrove"] = (summary["datatrove"]["median_cpu_s"]
                                                      / summary["ours_kernel"]["median_cpu_s"])
        result = {"benchmark": "paragraph-dedup", "corpus": info, "settings": {"repeats": args.repeats,
                  "size_mb": args.size_mb, "env": SINGLE},
                  "machine": machine_info(("polars", "polars-hash", "pyarrow", "hygiene-pipeline")),
                  "summary": summary, "agreement": agree, "runs": runs}
        path = Path(args.out) if args.out else results_path("paragraph-dedup", None)
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({"summary": summary, "agreement": agree}, indent=1))
        print("wrote", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
