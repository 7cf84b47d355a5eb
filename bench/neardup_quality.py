#!/usr/bin/env python
"""Near-duplicate quality: our pipeline against datatrove and datasketch on a labelled corpus.

On the seeded corpus of bench/neardup_corpus.py (every document knows its true cluster and the
edit that made it), each tool runs in a fresh subprocess under `flock /tmp/hygiene-bench.lock`
and writes its keep/drop decisions; this script then scores them against the ground truth.

Tools (all at one threshold, 128 permutations, word 5-grams):

  ours              pipeline.executor.run_local (exact dedup, then MinHash LSH with the banding
                    chosen for the threshold, verification on the estimated Jaccard, anti-chaining
                    clusters); also at --ours-thresholds
  datatrove         its 4-stage MinHash pipeline (signatures, buckets, cluster, filter) with its
                    defaults (14 bands x 8 rows, 5-grams, spaCy word tokenizer), JsonlReader,
                    LocalPipelineExecutor(tasks=2, workers=2; buckets stage tasks=14, workers=2);
                    it shards by file, so it reads the same JSONL split into two files
  datasketch        MinHash (MinHash.bulk, 128 perms) + MinHashLSH(threshold) with its "optimal"
                    banding + connected components of the LSH candidates, lowest id kept
  datasketch-16x8   the same with params=(16, 8), the banding ours uses at 0.8

Metrics (N documents, true clusters = same `cluster` field; a removal is the positive class):

  keep/drop  For each true cluster C with k kept members: if k >= 1, one kept member is a correct
             keep (TN), the other k-1 kept members are missed removals (FN) and every dropped
             member is a correct removal (TP); if k == 0, one member is a wrong removal (FP:
             the cluster's content is lost) and the other |C|-1 are correct removals (TP).
             This is exactly bib-dedupe's `compare_dedupe_id` scoring. A document is thus
             correctly dropped iff another member of its true cluster is kept.
             accuracy = (TP+TN)/N, removal precision = TP/(TP+FP), recall = TP/(TP+FN).
  pairwise   Predicted pairs = all pairs within one predicted cluster (ours: the connected
             components of the ledger's record -> duplicate_of edges, exact and near; datatrove:
             its cluster ids; datasketch: its connected components); true pairs = all pairs
             within one true cluster.
  lost       true clusters of which no member was kept (split: singletons / multi-member).
  misattributed  dropped documents whose predicted cluster keeps no member of their own true
             cluster (the drop was justified by an unrelated document).
  by edit    share of the copies of each edit kind that land in their original's predicted
             cluster, overall and split by the exact word-5-gram Jaccard with the original
             (our normalisation) being >= or < the threshold.

Every metric is given twice: against the generator's labels, and against labels in which true
clusters are joined when their originals' exact Jaccard is >= the threshold (pooled: only cluster
pairs that some tool merged are checked). With the generator's default sentence limits (60 words,
400 characters) no two originals are near each other and both agree; with the limits off
(--max-sentence-words 0 --max-sentence-chars 0, the corpus of runs before 2026-11-23) the random
"sentences" include 1-6 KB runs of verse or dialogue, some originals are near or fully identical,
and only the adjusted labels are meaningful. For ours, the copies
at J >= threshold that it did not link are diagnosed (no shared band / estimate below the
threshold / anti-chaining). `--survivor-experiment` re-runs our method outside the pipeline
from its own functions with other survivor orders (untimed what-if; the `longest` rule must
reproduce the pipeline's decisions, and the count of equal decisions is reported).

Usage::

    .venv/bin/python bench/neardup_quality.py --docs 10000 --survivor-experiment    # quick check (~2 min)
    .venv/bin/python bench/neardup_quality.py --docs 100000 --survivor-experiment   # the benchmark (~10 min)

Results: a markdown table on stdout and bench/results/neardup-quality-<date>.json (suffixed
-2, -3 when it exists). Peers run from a separate venv (--peers-python, default
/tmp/peers-quality/bin/python: `python3 -m venv /tmp/peers-quality &&
/tmp/peers-quality/bin/pip install 'datatrove[processing]' spacy datasketch==2.0.0 polars orjson`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MB = 1_000_000
LOCK = "/tmp/hygiene-bench.lock"


# ============================================================================================
# Child side: one tool, in a fresh interpreter. Writes decisions.parquet (record_id, kept,
# group: any key shared by the members of one predicted cluster, null for a singleton) and
# timing.json.


def _child_ours(args: argparse.Namespace, out: Path) -> dict:
    # --freeze-code: the parent's snapshot of the committed pipeline/ (so later edits of the
    # checkout cannot change a run), else the checkout
    sys.path.insert(0, os.environ.get("HYGIENE_BENCH_CODE") or str(REPO))
    import glob

    import polars as pl

    from pipeline.config import parse_config
    from pipeline.executor import run_local

    run_dir = out / "run"
    if args.ours_dedup is not None:  # a named variant: these dedup settings over the library defaults
        dedup = json.loads(args.ours_dedup)
    else:  # the threshold grid of earlier runs
        dedup = {"near": {"threshold": args.threshold, "verify": args.ours_verify, "second_hop": args.ours_second_hop},
                 "survivor": {"near_prefer": args.ours_prefer}}
    cfg = parse_config({
        "sources": [{"name": "g", "kind": "jsonl", "paths": [str(args.input)], "id_field": "id"}],
        "output": {"dir": str(run_dir)},
        **({"dedup": dedup} if dedup else {}),
    })
    t0 = time.perf_counter()
    manifest = run_local(cfg)
    work = time.perf_counter() - t0
    led = pl.concat([pl.read_parquet(p) for p in sorted(glob.glob(str(run_dir / "ledger" / "*.parquet")))])
    led = led.select("record_id", "decision", "duplicate_of", "cluster_id", "similarity", "text_bytes", "reason")
    # Predicted clusters: connected components of record -> duplicate_of (exact and near drops).
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in led.filter(pl.col("duplicate_of").is_not_null()).select("record_id", "duplicate_of").iter_rows():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    ids = led["record_id"].to_list()
    # A component's root (its lowest id) has no entry in `parent` but belongs to the group too.
    roots = {find(r) for r in list(parent)}
    groups = [find(r) if r in parent or r in roots else None for r in ids]
    dec = led.with_columns(pl.col("decision").is_in(["kept", "kept_redacted"]).alias("kept"),
                           pl.Series("group", groups, dtype=pl.String), pl.col("duplicate_of").alias("target"))
    dec.write_parquet(out / "decisions.parquet")
    near = manifest.get("near_dedup") or manifest.get("dedup", {}).get("near") or {}
    import pipeline
    return {"work_s": work, "manifest_near": near, "dedup_settings": cfg.dedup.model_dump(mode="json"),
            "pipeline_imported_from": str(Path(pipeline.__file__).parent),
            "manifest_conservation": manifest.get("conservation")}


def _child_datatrove(args: argparse.Namespace, out: Path) -> dict:
    import struct

    import orjson
    import polars as pl
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    parts = sorted(Path(args.input).glob("*.jsonl"))
    tasks = len(parts)
    cfg = MinhashConfig()  # defaults: 5-grams, 14 buckets x 8 hashes, 64-bit xxhash
    sigs, buckets, clusters, kept, logs = (out / d for d in ("sigs", "buckets", "clusters", "kept", "logs"))
    t0 = time.perf_counter()
    stage_s = {}
    stages = [
        ("signatures", [JsonlReader(str(args.input), glob_pattern="*.jsonl"), MinhashDedupSignature(str(sigs), config=cfg)], tasks, 2),
        ("buckets", [MinhashDedupBuckets(str(sigs), str(buckets), config=cfg)], cfg.num_buckets, 2),
        ("cluster", [MinhashDedupCluster(str(buckets), str(clusters), config=cfg, save_cluster_id=True)], 1, 1),
        ("filter", [JsonlReader(str(args.input), glob_pattern="*.jsonl"),
                    MinhashDedupFilter(str(clusters), load_cluster_ids=True),
                    JsonlWriter(str(kept))], tasks, 2),
    ]
    for name, pipe, t, w in stages:
        s = time.perf_counter()
        LocalPipelineExecutor(pipe, tasks=t, workers=w, logging_dir=str(logs / name)).run()
        stage_s[name] = time.perf_counter() - s
    work = time.perf_counter() - t0

    # Decisions from datatrove's own files: .remove (doc indexes to drop) and .clusters
    # ((doc index, cluster id) pairs) per rank; rank r read parts[r] in line order.
    rows = []
    for rank, part in enumerate(parts):
        with open(part, "rb") as f:
            ids = [orjson.loads(line)["id"] for line in f]
        rem_path = clusters / f"{rank:06d}.remove"
        removed = set()
        if rem_path.exists():
            data = rem_path.read_bytes()
            removed = set(struct.unpack(f"<{len(data) // 4}I", data))
        cl_path = clusters / f"{rank:06d}.clusters"
        cid = {}
        if cl_path.exists():
            data = cl_path.read_bytes()
            vals = struct.unpack(f"<{len(data) // 4}I", data)
            cid = dict(zip(vals[0::2], vals[1::2]))
        rows += [(rid, i not in removed, f"c{cid[i]}" if i in cid else None) for i, rid in enumerate(ids)]
    dec = pl.DataFrame(rows, schema={"record_id": pl.String, "kept": pl.Boolean, "group": pl.String}, orient="row")
    # Cross-check against the documents its filter stage actually wrote.
    written = pl.read_ndjson(sorted(kept.glob("*.jsonl.gz")), schema={"id": pl.String}) if list(kept.glob("*.jsonl.gz")) else None
    check = {"written_kept": None if written is None else written.height, "decoded_kept": int(dec["kept"].sum())}
    if written is not None and set(written["id"].to_list()) != set(dec.filter("kept")["record_id"].to_list()):
        check["mismatch"] = True
    dec.write_parquet(out / "decisions.parquet")
    import datatrove
    return {"work_s": work, "stage_s": stage_s, "check": check,
            "config": {"n_grams": cfg.n_grams, "bands": cfg.num_buckets, "rows": cfg.hashes_per_bucket,
                       "hash": str(cfg.hash_config), "tasks": tasks, "workers": 2,
                       "datatrove": getattr(datatrove, "__version__", None)}}


def _child_datasketch(args: argparse.Namespace, out: Path) -> dict:
    import re

    import numpy as np
    import orjson
    import polars as pl
    from datasketch import MinHash, MinHashLSH

    word = re.compile(r"\w+")
    t0 = time.perf_counter()
    params = tuple(args.params) if args.params else None
    lsh = MinHashLSH(threshold=args.threshold, num_perm=128, params=params)
    ids, mhs, t_shingle, t_minhash, chunk = [], [], 0.0, 0.0, []

    def flush(sess) -> None:
        nonlocal t_minhash
        s = time.perf_counter()
        for k, m in zip(range(len(ids) - len(chunk), len(ids)), MinHash.bulk(chunk, num_perm=128)):
            mhs.append(m if chunk[k - (len(ids) - len(chunk))] else None)
        t_minhash += time.perf_counter() - s
        chunk.clear()

    # MinHash.bulk over chunks of 20,000 documents (the same signatures as one call; bounded memory),
    # each inserted as soon as it is made.
    with lsh.insertion_session() as sess, open(args.input, "rb") as f:
        for line in f:
            s0 = time.perf_counter()
            rec = orjson.loads(line)
            ids.append(rec["id"])
            toks = word.findall(rec["text"].lower())
            chunk.append([" ".join(toks[i:i + 5]).encode() for i in range(len(toks) - 4)])
            t_shingle += time.perf_counter() - s0
            if len(chunk) == 20_000:
                first = len(mhs)
                flush(sess)
                for i in range(first, len(mhs)):
                    if mhs[i] is not None:
                        sess.insert(i, mhs[i], check_duplication=False)
        first = len(mhs)
        flush(sess)
        for i in range(first, len(mhs)):
            if mhs[i] is not None:
                sess.insert(i, mhs[i], check_duplication=False)
    t_sig = time.perf_counter()
    parent = np.arange(len(ids))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(mhs):
        if m is None:
            continue
        for j in lsh.query(m):
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the root is the lowest index = lowest id (ids ascend)
    roots = [find(i) for i in range(len(ids))]
    work = time.perf_counter() - t0
    sizes = np.bincount(roots, minlength=len(ids))
    dec = pl.DataFrame({"record_id": ids, "kept": [r == i for i, r in enumerate(roots)],
                        "group": [ids[r] if sizes[r] > 1 else None for r in roots]})
    dec.write_parquet(out / "decisions.parquet")
    return {"work_s": work, "stage_s": {"read_shingle": t_shingle, "minhash": t_minhash,
                                        "lsh_insert": t_sig - t0 - t_shingle - t_minhash, "query_cc": work - (t_sig - t0)},
            "config": {"threshold": args.threshold, "bands": lsh.b, "rows": lsh.r, "ngram": 5, "tokens": r"\w+ of lowercased text"}}


def _tree_rss_sampler(stop, result: dict, every: float = 0.25) -> None:
    """Peak of the summed RSS of this process and all its descendants, sampled from /proc.
    (`ru_maxrss` of the flock'ed subprocess is no use here: Linux carries the forking parent's
    high-water mark across exec, and datatrove's forkserver workers are never waited for.)"""
    me, page = os.getpid(), os.sysconf("SC_PAGE_SIZE")

    def shm_used() -> int:  # the pipeline's memory spill lives on /dev/shm, outside every RSS
        try:
            st = os.statvfs("/dev/shm")
            return (st.f_blocks - st.f_bfree) * st.f_frsize
        except OSError:
            return 0

    shm0 = shm_used()
    while True:
        procs = {}
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    with open(f"/proc/{p}/stat") as f:
                        rest = f.read().rsplit(")", 1)[1].split()
                    procs[int(p)] = (int(rest[1]), int(rest[21]))
                except (OSError, IndexError, ValueError):
                    continue
        tree, frontier = {me}, [me]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, _rss) in procs.items():
                if ppid == parent and pid not in tree:
                    tree.add(pid)
                    frontier.append(pid)
        total = sum(procs[p][1] for p in tree if p in procs) * page
        shm = max(0, shm_used() - shm0)
        result["peak"] = max(result.get("peak", 0), total)
        result["peak_shm"] = max(result.get("peak_shm", 0), shm)
        result["peak_total"] = max(result.get("peak_total", 0), total + shm)
        result["max_procs"] = max(result.get("max_procs", 0), len(tree))
        if stop.wait(every):
            return


def child_main(args: argparse.Namespace) -> None:
    import resource
    import threading

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fn = {"ours": _child_ours, "datatrove": _child_datatrove, "datasketch": _child_datasketch}[args.child]
    stop, rss = threading.Event(), {}
    sampler = threading.Thread(target=_tree_rss_sampler, args=(stop, rss), daemon=True)
    sampler.start()
    res = fn(args, out)
    stop.set()
    res["cpu_s_self_and_children"] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) + sum(
        resource.getrusage(resource.RUSAGE_CHILDREN)[:2])
    sampler.join()
    res["process_s"] = time.perf_counter() - T_START  # imports included, interpreter start-up excluded
    res["peak_tree_rss_mb"] = rss.get("peak", 0) / 2**20
    res["peak_shm_growth_mb"] = rss.get("peak_shm", 0) / 2**20
    res["peak_total_mb"] = rss.get("peak_total", 0) / 2**20  # RSS of the process tree + /dev/shm growth, same sample
    res["max_processes"] = rss.get("max_procs")
    res["self_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "timing.json").write_text(json.dumps(res, default=str))


# ============================================================================================
# Parent side.


def machine_info() -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "nproc": os.cpu_count(),
            "loadavg": os.getloadavg()}
    try:
        cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        info["cpu"] = cpu[0] if cpu else None
        mem = [line for line in open("/proc/meminfo") if line.startswith("MemTotal")]
        info["mem_total"] = mem[0].split(":", 1)[1].strip() if mem else None
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        info["git_status"] = subprocess.run(["git", "-C", str(REPO), "status", "--short"], capture_output=True, text=True).stdout.splitlines()
    except OSError:
        pass
    return info


def peer_versions(py: str) -> dict:
    code = ("import json, importlib.metadata as m\nout = {}\n"
            "for p in ['datatrove', 'datasketch', 'spacy', 'numpy', 'polars', 'xxhash', 'orjson']:\n"
            "    try: out[p] = m.version(p)\n    except Exception: out[p] = None\nprint(json.dumps(out))")
    try:
        return json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60).stdout)
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}


def fmt_timing(rows: list[dict], nbytes: int) -> str:
    hdr = ["tool", "thr", "work s", "MB/s", "process s (imports incl.)", "CPU s (waited procs)", "peak RSS MB (process tree)",
           "load1 before"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        t = r["timing"]
        lines.append("| " + " | ".join([r["tool"], str(r["threshold"]), f"{t['work_s']:.1f}", f"{nbytes / MB / t['work_s']:.2f}",
                                         f"{t['process_s']:.1f}",
                                         f"{t['cpu_s_waited']:.1f}" + (" (workers not counted)" if r["tool"] == "datatrove" else ""),
                                         f"{t['peak_tree_rss_mb']:.0f}",
                                         f"{t['load1_before']:.2f}"]) + " |")
    return "\n".join(lines)


def ensure_corpus(docs: int, work: Path, seed: int, max_words: int, max_chars: int, kind: str = "web") -> tuple[Path, Path, dict]:
    """The corpus (cached under a name that carries every generator setting), and a 2-file split
    of it for datatrove's file sharding."""
    if kind == "web":
        stem = f"web-{docs}-s{seed}"
        gen = [sys.executable, str(HERE / "neardup_webcorpus.py"), "--docs", str(docs), "--seed", str(seed)]
    else:
        stem = f"corpus-{docs}-s{seed}" + (f"-w{max_words}c{max_chars}" if max_words or max_chars else "")
        gen = [sys.executable, str(HERE / "neardup_corpus.py"), "--docs", str(docs), "--seed", str(seed),
               "--max-sentence-words", str(max_words), "--max-sentence-chars", str(max_chars)]
    path = work / f"{stem}.jsonl"
    meta_path = path.with_suffix(".counts.json")
    if not path.exists() or not meta_path.exists():
        out = subprocess.run(gen + ["--out", str(path)], check=True, capture_output=True, text=True).stdout
        meta_path.write_text(out.strip().splitlines()[-1])
    split = work / f"{stem}-2parts"
    if not split.exists():
        tmp = split.with_name(split.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        lines = path.read_bytes().splitlines(keepends=True)
        half = (len(lines) + 1) // 2
        (tmp / "part-0.jsonl").write_bytes(b"".join(lines[:half]))
        (tmp / "part-1.jsonl").write_bytes(b"".join(lines[half:]))
        tmp.rename(split)
    return path, split, json.loads(meta_path.read_text())


class Texts:
    """Normalised texts (our normalisation) of the corpus and exact word-5-gram Jaccard between any two docs."""

    def __init__(self, corpus: Path) -> None:
        import polars as pl

        sys.path.insert(0, str(REPO))
        from pipeline.dedup.minhash import normalize_for_shingles

        df = pl.read_ndjson(corpus, schema={"id": pl.String, "text": pl.String})
        self.raw = dict(zip(df["id"].to_list(), df["text"].to_list()))
        self.norm = dict(zip(df["id"].to_list(), pl.Series(normalize_for_shingles(df["text"].to_arrow())).to_list()))
        self._sets: dict[str, set] = {}

    def shingles(self, rid: str) -> set:
        s = self._sets.get(rid)
        if s is None:
            t = self.norm[rid]
            toks = t.split(" ") if t else []
            s = {t} if len(toks) < 5 else {" ".join(toks[i:i + 5]) for i in range(len(toks) - 4)}
            if len(self._sets) > 300_000:
                self._sets.clear()
            self._sets[rid] = s
        return s

    def jaccard(self, a: str, b: str) -> float:
        x, y = self.shingles(a), self.shingles(b)
        return len(x & y) / len(x | y) if x or y else 1.0


def copy_jaccard(corpus: Path, truth, texts: Texts):
    """Exact Jaccard of each copy with its original (cached next to the corpus)."""
    import polars as pl

    cache = corpus.with_suffix(".jaccard.parquet")
    if cache.exists():
        return pl.read_parquet(cache)
    need = truth.filter(pl.col("edit") != "original")
    res = pl.DataFrame({"id": need["id"], "jaccard": [texts.jaccard(a, b) for a, b in
                                                       zip(need["id"].to_list(), need["orig"].to_list())]})
    res.write_parquet(cache)
    return res


def merged_cluster_pairs(truth, dec) -> set:
    """(c1, c2) pairs of true clusters that share a predicted cluster."""
    import polars as pl

    df = truth.join(dec.select("record_id", "group"), left_on="id", right_on="record_id", how="left")
    cells = (df.filter(pl.col("group").is_not_null()).select("group", "cluster").unique()
             .group_by("group").agg(pl.col("cluster").sort()).filter(pl.col("cluster").list.len() > 1))
    out = set()
    for cl in cells["cluster"].to_list():
        for i in range(len(cl)):
            for j in range(i + 1, len(cl)):
                out.add((cl[i], cl[j]))
    return out


def adjusted_truth(truth, pairs: set, texts: Texts, threshold: float):
    """The labels with true clusters joined when their ORIGINALS are near duplicates by content
    (exact Jaccard >= threshold): the generator draws sentences at random, and a few very long
    'sentences' (verse, dialogue without full stops) make unrelated originals near-identical.
    Pooled: only cluster pairs that some tool merged are checked."""
    import polars as pl

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    confirmed = []
    for a, b in sorted(pairs):
        j = texts.jaccard(a, b)
        if j >= threshold:
            confirmed.append({"c1": a, "c2": b, "jaccard_originals": round(j, 4)})
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    mapping = {c: find(c) for c in parent}
    adj = truth.with_columns(pl.col("cluster").replace(mapping).alias("cluster"))
    return adj, {"checked_cluster_pairs": len(pairs), "confirmed_pairs": len(confirmed),
                 "clusters_joined": len(mapping), "examples": confirmed[:5]}


def diagnose_ours_misses(truth, dec, jac, texts: Texts, threshold: float, bands: int, rows: int) -> dict:
    """Why ours did not link a copy to its original although their exact Jaccard is >= threshold:
    no shared LSH band / estimated Jaccard below threshold / found, but anti-chaining put them
    in different clusters (the survivor was not similar enough to one of them)."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    sys.path.insert(0, str(REPO))
    from pipeline.dedup.lsh import band_keys, estimated_similarity
    from pipeline.dedup.minhash import MinHashParams, signatures

    g = dict(zip(dec["record_id"].to_list(), dec["group"].to_list()))
    c = truth.filter(pl.col("edit") != "original").join(jac, on="id").filter(pl.col("jaccard") >= threshold)
    missed = [(a, b, e) for a, b, e in zip(c["id"].to_list(), c["orig"].to_list(), c["edit"].to_list())
              if (g.get(a) or a) != (g.get(b) or b)]
    if not missed:
        return {"missed": 0}
    ids = sorted({x for a, b, _ in missed for x in (a, b)})
    sig, _ = signatures(pa.array([texts.norm[i] for i in ids], pa.large_string()), MinHashParams())
    keys = band_keys(sig, bands, rows)
    pos = {r: k for k, r in enumerate(ids)}
    out = {"missed": len(missed), "no_shared_band": 0, "estimate_below_threshold": 0, "anti_chaining": 0, "by_edit": {}}
    for a, b, e in missed:
        ia, ib = pos[a], pos[b]
        est = float(estimated_similarity(sig[ia:ia + 1], sig[ib:ib + 1])[0])
        why = ("no_shared_band" if not np.any(keys[ia] == keys[ib])
               else "estimate_below_threshold" if est < threshold else "anti_chaining")
        out[why] += 1
        out["by_edit"].setdefault(e, {}).setdefault(why, 0)
        out["by_edit"][e][why] += 1
    return out


def survivor_experiment(truth, texts: Texts, threshold: float) -> dict:
    """Untimed what-if, outside the pipeline: our stage's method re-run from its own building blocks
    (exact copies -> lowest id; signatures, the same banding, candidate pairs, verification,
    components, greedy anti-chaining) with other survivor orders in the anti-chaining step.
    Returns decisions per rule; `longest` is the pipeline's rule and should reproduce its ledger."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    sys.path.insert(0, str(REPO))
    from pipeline.dedup.lsh import band_keys, bucket_pairs, choose_bands, components, estimated_similarity, unique_pairs
    from pipeline.dedup.minhash import MinHashParams, signatures

    ids = truth["id"].to_list()
    exact_of: dict[str, str] = {}
    first: dict[str, str] = {}
    for rid in ids:  # ids ascend, so the first seen is the lowest
        key = " ".join(texts.raw[rid].split())
        exact_of[rid] = first.setdefault(key, rid)
    live = [r for r in ids if exact_of[r] == r]
    n = len(live)
    sig, _ = signatures(pa.array([texts.norm[r] for r in live], pa.large_string()), MinHashParams())
    bands, rows, _p = choose_bands(128, threshold, 0.9)
    keys = band_keys(sig, bands, rows)
    docs = np.arange(n, dtype=np.int64)
    pairs = unique_pairs([bucket_pairs(docs, keys[:, k], 64) for k in range(bands)])
    sims = estimated_similarity(sig[pairs[:, 0]], sig[pairs[:, 1]])
    ver = pairs[sims >= threshold]
    labels = components(n, ver)
    size = np.array([len(texts.raw[r].encode()) for r in live])
    degree = np.bincount(ver.ravel(), minlength=n)
    simsum = np.bincount(ver[:, 0], weights=sims[sims >= threshold], minlength=n) + np.bincount(
        ver[:, 1], weights=sims[sims >= threshold], minlength=n)
    rules = {
        "longest": lambda m: sorted(m, key=lambda d: (-size[d], live[d])),
        "most_neighbours": lambda m: sorted(m, key=lambda d: (-degree[d], -size[d], live[d])),
        "highest_similarity_sum": lambda m: sorted(m, key=lambda d: (-simsum[d], -size[d], live[d])),
    }
    comp: dict[int, list[int]] = {}
    for d in np.flatnonzero(np.bincount(labels, minlength=n)[labels] > 1):
        comp.setdefault(int(labels[d]), []).append(int(d))
    out = {}
    for name, order in rules.items():
        survivor = {r: r for r in live}
        for members in comp.values():
            remaining = np.array(order(members))
            while len(remaining) > 1:
                s_, rest = remaining[0], remaining[1:]
                hit = estimated_similarity(np.broadcast_to(sig[s_], (len(rest), sig.shape[1])), sig[rest]) >= threshold
                for d in rest[hit]:
                    survivor[live[d]] = live[s_]
                remaining = rest[~hit]
        final = {r: survivor[exact_of[r]] for r in ids}
        sizes: dict[str, int] = {}
        for v in final.values():
            sizes[v] = sizes.get(v, 0) + 1
        out[name] = pl.DataFrame({"record_id": ids, "kept": [final[r] == r for r in ids],
                                  "group": [final[r] if sizes[final[r]] > 1 else None for r in ids]})
    return out


def evaluate(truth, dec, jac, threshold: float) -> dict:
    import polars as pl

    df = truth.join(dec.select("record_id", "kept", "group"), left_on="id", right_on="record_id", how="left")
    missing = df.filter(pl.col("kept").is_null()).height
    df = df.with_columns(pl.col("kept").fill_null(False), pl.coalesce("group", "id").alias("group"))
    n = df.height

    per = df.group_by("cluster").agg(pl.len().alias("n"), pl.col("kept").sum().cast(pl.Int64).alias("k"))
    per = per.with_columns(
        pl.when(pl.col("k") >= 1).then(pl.col("n") - pl.col("k")).otherwise(pl.col("n") - 1).alias("tp"),
        pl.when(pl.col("k") >= 1).then(1).otherwise(0).alias("tn"),
        pl.when(pl.col("k") >= 1).then(pl.col("k") - 1).otherwise(0).alias("fn"),
        pl.when(pl.col("k") >= 1).then(0).otherwise(1).alias("fp"),
    )
    tp, tn, fn, fp = (int(per[c].sum()) for c in ("tp", "tn", "fn", "fp"))
    prec = tp / (tp + fp) if tp + fp else 1.0
    rec = tp / (tp + fn) if tp + fn else 1.0
    lost = per.filter(pl.col("k") == 0)

    def c2(col: str) -> pl.Expr:
        return (pl.col(col) * (pl.col(col) - 1) // 2).sum()

    pred_sizes = df.group_by("group").agg(pl.len().alias("n"))
    true_sizes = df.group_by("cluster").agg(pl.len().alias("n"))
    cell = df.group_by("group", "cluster").agg(pl.len().alias("n"))
    pp, tpairs, ptp = (int(x.select(c2("n")).item()) for x in (pred_sizes, true_sizes, cell))
    p_prec = ptp / pp if pp else 1.0
    p_rec = ptp / tpairs if tpairs else 1.0

    mixed = cell.group_by("group").agg(pl.len().alias("clusters"), pl.col("n").sum().alias("docs")).filter(pl.col("clusters") > 1)
    kept_pairs = df.filter("kept").select("group", "cluster").unique().with_columns(pl.lit(True).alias("ok"))
    dropped = df.filter(~pl.col("kept")).join(kept_pairs, on=["group", "cluster"], how="left")
    misattributed = dropped.filter(pl.col("ok").is_null())

    # Recall by edit kind: the copy lands in its original's predicted cluster.
    grp = df.select(pl.col("id").alias("orig"), pl.col("group").alias("orig_group"))
    copies = (df.filter(pl.col("edit") != "original").join(grp, on="orig", how="left")
              .join(jac, on="id", how="left")
              .with_columns((pl.col("group") == pl.col("orig_group")).alias("linked"),
                            (pl.col("jaccard") >= threshold).alias("above")))
    by_edit_out = {}
    for (kind,), g in sorted(copies.group_by("edit"), key=lambda kv: kv[0][0]):
        a, b = g.filter("above"), g.filter(~pl.col("above"))
        by_edit_out[kind] = {
            "copies": g.height, "recall": round(float(g["linked"].mean()), 4),
            "share_J_above": round(a.height / g.height, 4) if g["jaccard"].null_count() < g.height else None,
            "recall_J_above": round(float(a["linked"].mean()), 4) if a.height else None,
            "recall_J_below": round(float(b["linked"].mean()), 4) if b.height else None,
            "median_J": round(float(g["jaccard"].median()), 4) if g["jaccard"].null_count() < g.height else None,
        }
    a_all = copies.filter("above")
    return {
        "docs": n, "missing_decisions": missing, "kept": int(df["kept"].sum()),
        "ideal_kept": int(true_sizes.height),
        "keepdrop": {"TP": tp, "TN": tn, "FP": fp, "FN": fn, "accuracy": round((tp + tn) / n, 6),
                     "precision": round(prec, 6), "recall": round(rec, 6),
                     "f1": round(2 * prec * rec / (prec + rec), 6) if prec + rec else 0.0},
        "pairwise": {"pred_pairs": pp, "true_pairs": tpairs, "tp_pairs": ptp, "precision": round(p_prec, 6),
                     "recall": round(p_rec, 6), "f1": round(2 * p_prec * p_rec / (p_prec + p_rec), 6) if p_prec + p_rec else 0.0},
        "lost_clusters": {"total": lost.height, "singletons": lost.filter(pl.col("n") == 1).height,
                          "multi_member": lost.filter(pl.col("n") > 1).height,
                          "docs_in_lost": int(lost["n"].sum()),
                          "examples": lost.sort("cluster").head(5)["cluster"].to_list()},
        "over_merged_groups": {"groups": mixed.height, "docs": int(mixed["docs"].sum()) if mixed.height else 0,
                               "largest": int(pred_sizes["n"].max())},
        "misattributed_drops": {"docs": misattributed.height,
                                "examples": misattributed.sort("id").head(5)["id"].to_list()},
        "copy_recall": {"all": round(float(copies["linked"].mean()), 4),
                        "J_above_threshold": round(float(a_all["linked"].mean()), 4) if a_all.height else None,
                        "copies_J_above": a_all.height, "copies": copies.height},
        "by_edit": by_edit_out,
    }


def task_metrics(truth, dec) -> dict:
    """Issue #16's definitions. A removable copy is every member of a true cluster but one.
    A removal is correct when the removed record is a true copy of a (kept or removed) member of
    its own true cluster: the record its drop names (`target`: ours' ledger `duplicate_of`) is in
    its true cluster, or, for tools that name no record, its predicted cluster holds another
    member of its true cluster. removal recall = correct removals, at most n-1 per true cluster of
    n, / removable copies; precision = correct removals / removals; lost = true clusters
    (singletons included) with no kept member."""
    import polars as pl

    cols = ["record_id", "kept", "group"] + (["target"] if "target" in dec.columns else [])
    df = truth.select("id", "cluster").join(dec.select(cols), left_on="id", right_on="record_id", how="left")
    df = df.with_columns(pl.col("kept").fill_null(False), pl.coalesce("group", "id").alias("group"))
    if "target" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("target"))
    cl = truth.select(pl.col("id").alias("target"), pl.col("cluster").alias("target_cluster"))
    df = df.join(cl, on="target", how="left")
    mates = df.group_by("group", "cluster").agg(pl.len().alias("mates_in_group"))
    df = df.join(mates, on=["group", "cluster"], how="left")
    removed = df.filter(~pl.col("kept"))
    removed = removed.with_columns(
        pl.when(pl.col("target").is_not_null()).then(pl.col("target_cluster") == pl.col("cluster"))
        .otherwise(pl.col("mates_in_group") > 1).fill_null(False).alias("correct"))
    per = (df.group_by("cluster").agg(pl.len().alias("n"), pl.col("kept").sum().cast(pl.Int64).alias("k"))
           .join(removed.group_by("cluster").agg(pl.col("correct").sum().cast(pl.Int64).alias("c")), on="cluster", how="left")
           .with_columns(pl.col("c").fill_null(0)))
    removable = int((per["n"] - 1).sum())
    correct = int(removed["correct"].sum())
    credited = int(per.select(pl.min_horizontal(pl.col("c"), pl.col("n") - 1).sum()).item())
    lost = per.filter(pl.col("k") == 0)
    wrong = removed.filter(~pl.col("correct"))
    return {
        "docs": df.height, "true_clusters": per.height, "removable_copies": removable, "removed": removed.height,
        "correct_removals": correct, "removal_recall": round(credited / removable, 6) if removable else 1.0,
        "precision": round(correct / removed.height, 6) if removed.height else 1.0,
        "wrong_removals": wrong.height, "wrong_examples": wrong.sort("id").head(8).select("id", "cluster", "target", "group").to_dicts(),
        "lost_clusters": lost.height, "lost_singletons": lost.filter(pl.col("n") == 1).height,
        "lost_docs": int(lost["n"].sum()) if lost.height else 0,
        "lost_examples": lost.sort("cluster").head(8)["cluster"].to_list(),
        "kept": int(df["kept"].sum()), "ideal_kept": per.height,
    }


def ledger_checks(out: Path, threshold: float, truth) -> dict:
    """Consistency of our ledger: survivors kept, chains, similarity >= threshold, false merges."""
    import polars as pl

    led = pl.read_parquet(out / "decisions.parquet")
    status = dict(zip(led["record_id"].to_list(), led["decision"].to_list()))
    drops = led.filter(pl.col("duplicate_of").is_not_null())
    target_status = drops["duplicate_of"].map_elements(lambda r: status.get(r, "missing"), return_dtype=pl.String)
    near = led.filter(pl.col("decision") == "dropped_near_duplicate")
    t = truth.select("id", "cluster")
    pairs = (near.select("record_id", "duplicate_of", "similarity")
             .join(t.rename({"id": "record_id", "cluster": "c1"}), on="record_id")
             .join(t.rename({"id": "duplicate_of", "cluster": "c2"}), on="duplicate_of"))
    wrong = pairs.filter(pl.col("c1") != pl.col("c2"))
    return {
        "decisions": dict(led.group_by("decision").len().sort("decision").iter_rows()),
        "drop_targets_by_status": dict(target_status.value_counts().sort(target_status.name).iter_rows()),
        "near_drops_below_threshold": near.filter(pl.col("similarity") < threshold).height,
        "near_drops": near.height,
        "near_drops_without_similarity": near.filter(pl.col("similarity").is_null()).height,
        "near_drops_without_reason": near.filter(pl.col("reason").is_null()).height,
        "drops_naming_a_record_not_kept": drops.filter(~target_status.is_in(["kept", "kept_redacted"])).height,
        "near_drops_second_hop": near.filter(pl.col("reason").str.contains("via")).height,
        "reason_examples": near.filter(pl.col("reason").str.contains("via")).head(3).select("record_id", "duplicate_of", "similarity", "reason").to_dicts(),
        "near_drops_to_other_true_cluster": wrong.height,
        "wrong_examples": wrong.sort("similarity", descending=True).head(5).to_dicts(),
        "cluster_ids_with_several_survivors": led.filter(pl.col("cluster_id").is_not_null() & pl.col("duplicate_of").is_not_null())
        .group_by("cluster_id").agg(pl.col("duplicate_of").n_unique().alias("u")).filter(pl.col("u") > 1).height,
    }


def run_tool(name: str, cmd: list[str], out: Path, env: dict, lock: str = LOCK) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    full = ["flock", lock] + cmd
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(out / "stdout.log", "wb") as so, open(out / "stderr.log", "wb") as se:
        proc = subprocess.Popen(full, stdout=so, stderr=se, env=env, cwd=str(REPO))
        _pid, status, ru = os.wait4(proc.pid, 0)
    outer = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        err = (out / "stderr.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} failed ({code}): {err}")
    timing = json.loads((out / "timing.json").read_text())
    timing.update({"outer_s_incl_lock_wait": outer, "load1_before": load, "command": shlex.join(full),
                   "cpu_s_waited": ru.ru_utime + ru.ru_stime})
    return timing


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def fmt_task_table(rows: list[dict], nbytes: int) -> str:
    hdr = ["tool", "thr", "bands x rows", "removal recall", "precision", "lost clusters (singletons)", "wrong removals",
           "kept / ideal", "wall s", "MB/s", "peak RSS MiB", "+ /dev/shm MiB", "peak total MiB", "CPU s"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        t, tm = r["timing"], r["task"]
        lines.append("| " + " | ".join([
            r["tool"], str(r["threshold"]), r.get("banding", ""), f"{tm['removal_recall']:.4f}", f"{tm['precision']:.4f}",
            f"{tm['lost_clusters']} ({tm['lost_singletons']})", str(tm["wrong_removals"]),
            f"{tm['kept']:,} / {tm['ideal_kept']:,}", f"{t['work_s']:.1f}", f"{nbytes / MB / t['work_s']:.2f}",
            f"{t.get('peak_tree_rss_mb', 0):.0f}", f"{t.get('peak_shm_growth_mb', 0):.0f}", f"{t.get('peak_total_mb', 0):.0f}",
            f"{t.get('cpu_s_self_and_children', 0):.0f}",
        ]) + " |")
    return "\n".join(lines)


def fmt_table(rows: list[dict], key: str = "eval") -> str:
    hdr = ["tool", "thr", "bands x rows", "kept", "acc", "rm P", "rm R", "rm F1", "pair P", "pair R", "pair F1",
           "lost (multi)", "misattr.", "over-merged", "copy R (J>=thr)", "work s", "MB/s"]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        e = r[key]
        kd, pw = e["keepdrop"], e["pairwise"]
        lines.append("| " + " | ".join([
            r["tool"], str(r["threshold"]), r.get("banding", ""), f"{e['kept']:,} / {e['ideal_kept']:,}",
            f"{kd['accuracy']:.4f}", f"{kd['precision']:.4f}", f"{kd['recall']:.4f}", f"{kd['f1']:.4f}",
            f"{pw['precision']:.4f}", f"{pw['recall']:.4f}", f"{pw['f1']:.4f}",
            f"{e['lost_clusters']['total']} ({e['lost_clusters']['multi_member']})",
            str(e["misattributed_drops"]["docs"]), f"{e['over_merged_groups']['groups']}",
            f"{e['copy_recall']['all']:.4f} ({e['copy_recall']['J_above_threshold'] or 0:.4f})",
            f"{r['timing']['work_s']:.1f}", f"{r['mb_s']:.2f}",
        ]) + " |")
    return "\n".join(lines)


def fmt_edit_table(rows: list[dict]) -> str:
    kinds = sorted({k for r in rows for k in r["eval"]["by_edit"]})
    first = rows[0]["eval"]["by_edit"]
    hdr = ["tool", "thr"] + [f"{k} ({first[k]['share_J_above'] or 0:.0%} J>=thr)" for k in kinds]
    lines = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in rows:
        be = r["eval"]["by_edit"]
        cells = [f"{be[k]['recall']:.3f} / {be[k]['recall_J_above'] if be[k]['recall_J_above'] is not None else '-'}" for k in kinds]
        lines.append("| " + " | ".join([r["tool"], str(r["threshold"])] + cells) + " |")
    return "\n".join(lines)


def parent_main(args: argparse.Namespace) -> int:
    import polars as pl

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus, split, counts = ensure_corpus(args.docs, work, args.seed, args.max_sentence_words, args.max_sentence_chars,
                                          args.corpus)
    nbytes = corpus.stat().st_size
    truth = pl.read_ndjson(corpus, schema={"id": pl.String, "cluster": pl.String, "edit": pl.String}).with_columns(
        pl.col("cluster").alias("orig"),
        pl.when(pl.col("edit").str.contains("+", literal=True)).then(pl.lit("two_edits")).otherwise(pl.col("edit")).alias("edit"))
    with_texts = not args.no_jaccard and args.docs <= 200_000
    texts = Texts(corpus) if with_texts else None
    jac = (copy_jaccard(corpus, truth, texts) if with_texts
           else pl.DataFrame({"id": truth["id"], "jaccard": pl.Series([None] * truth.height, dtype=pl.Float64)}))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", DO_NOT_TRACK="1",
               PYTHONHASHSEED="0")
    frozen = None
    if args.freeze_code:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        frozen = work / f"code-{commit[:12]}"
        if not (frozen / "pipeline").exists():
            tmp = frozen.with_name(frozen.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            arch = subprocess.run(["git", "-C", str(REPO), "archive", commit, "pipeline"], capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=arch, check=True)
            tmp.rename(frozen)
        env["HYGIENE_BENCH_CODE"] = str(frozen)
        print(f"ours runs the committed pipeline/ of {commit} from {frozen}", file=sys.stderr)
    me = str(Path(__file__).resolve())
    jobs = []
    tools, depth, cur = [], 0, ""
    for ch in args.tools + ",":  # commas inside {...} belong to a JSON value
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            tools.append(cur)
            cur = ""
        else:
            cur += ch
    thr = args.threshold
    ours_cmd = [sys.executable, me, "--child", "ours", "--input", str(corpus)]
    for tool in tools:
        if tool == "ours":  # the library defaults
            jobs.append(("ours", None, ours_cmd + ["--ours-dedup", "{}"]))
        elif tool.startswith("ours-config:"):  # the dedup section of a config file, e.g. ours-config:configs/dedup-conservative.yaml
            import yaml
            path = REPO / tool.split(":", 1)[1]
            dedup = (yaml.safe_load(path.read_text()) or {}).get("dedup") or {}
            jobs.append((f"ours ({path.name})", None, ours_cmd + ["--ours-dedup", json.dumps(dedup)]))
        elif tool.startswith("ours-json:"):  # an experiment: NAME=JSON of dedup settings
            name, js = tool.split(":", 1)[1].split("=", 1)
            jobs.append((f"ours ({name})", None, ours_cmd + ["--ours-dedup", js]))
        elif tool == "ours-grid":  # the threshold grid of earlier runs
            for t in sorted({thr, *[float(x) for x in args.ours_thresholds.split(",") if x]}, key=lambda x: (x != thr, x)):
                jobs.append(("ours", t, ours_cmd + ["--threshold", str(t), "--ours-prefer", args.ours_prefer,
                                                    "--ours-verify", args.ours_verify]
                             + (["--ours-second-hop", str(args.ours_second_hop)] if args.ours_second_hop is not None else [])))
        elif tool == "datatrove":
            jobs.append(("datatrove", thr, [args.peers_python, me, "--child", "datatrove", "--input", str(split)]))
        elif tool == "datasketch":
            jobs.append(("datasketch", thr, [args.peers_python, me, "--child", "datasketch", "--input", str(corpus), "--threshold", str(thr)]))
        elif tool == "datasketch-16x8":
            jobs.append(("datasketch-16x8", thr, [args.peers_python, me, "--child", "datasketch", "--input", str(corpus),
                                                  "--threshold", str(thr), "--params", "16", "8"]))
        else:
            raise SystemExit(f"unknown tool {tool}")
    if args.ours_last:  # the peers first (they take longest), ours on the final code at the end
        jobs.sort(key=lambda j: j[0].startswith("ours"))
    rows, decisions = [], []
    for rep in range(args.repeats):
        for tool, t, cmd in jobs:
            slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tool)
            out = work / f"out-{args.corpus}-{args.docs}-s{args.seed}" / f"{slug}-{t}"
            print(f"[{dt.datetime.now():%H:%M:%S}] {tool} thr={t} rep={rep + 1} ...", file=sys.stderr, flush=True)
            commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--short", "pipeline"], capture_output=True, text=True).stdout.split("\n")
            timing = run_tool(tool, cmd + ["--out", str(out)], out, env, args.lock)
            dec = pl.read_parquet(out / "decisions.parquet")
            is_ours = tool.startswith("ours")
            if is_ours and t is None:
                t = (timing.get("manifest_near") or {}).get("threshold")
            ev = evaluate(truth, dec, jac, t or thr)
            row = {"tool": tool, "threshold": t, "repeat": rep + 1, "timing": timing, "mb_s": nbytes / MB / timing["work_s"],
                   "eval": ev, "task": task_metrics(truth, dec), "git_commit_at_start": commit,
                   "pipeline_uncommitted_at_start": [x for x in dirty if x]}
            if is_ours:
                near = timing.get("manifest_near") or {}
                row["banding"] = f"{near.get('bands')} x {near.get('rows')}" if near.get("bands") else ""
                row["ledger_checks"] = ledger_checks(out, t, truth)
            else:
                c = timing.get("config", {})
                row["banding"] = f"{c.get('bands')} x {c.get('rows')}"
            tm = row["task"]
            print(f"    removal R {tm['removal_recall']:.4f} P {tm['precision']:.4f} lost {tm['lost_clusters']} "
                  f"kept {tm['kept']} work {timing['work_s']:.1f}s peak {timing.get('peak_total_mb', 0):.0f} MB",
                  file=sys.stderr, flush=True)
            rows.append(row)
            decisions.append(dec)
            if not args.keep_outputs and is_ours:
                shutil.rmtree(out / "run", ignore_errors=True)

    for extra in args.merge_results or []:  # runs of an earlier invocation on the same corpus file
        other = json.loads(Path(extra).read_text())
        if other["corpus"].get("sha256") != file_sha256(corpus):
            raise SystemExit(f"{extra}: another corpus")
        for r in other["runs"]:
            r["from_results_file"] = str(extra)
            r["tool"] = r["tool"] + " *"
            rows.append(r)
            decisions.append(None)

    # Label audit: clusters that a tool merged and whose originals are near duplicates by content.
    audit = None
    if texts is not None:
        pairs = set()
        for dec in decisions:
            if dec is not None:
                pairs |= merged_cluster_pairs(truth, dec)
        truth_adj, audit = adjusted_truth(truth, pairs, texts, thr)
        for row, dec in zip(rows, decisions):
            if dec is None:
                continue
            row["eval_adjusted"] = evaluate(truth_adj, dec, jac, row["threshold"] or thr)
            if row["tool"].startswith("ours") and row.get("banding"):
                b, r_ = (int(x) for x in row["banding"].split(" x "))
                row["ours_missed_copy_diagnosis"] = diagnose_ours_misses(truth, dec, jac, texts, row["threshold"], b, r_)
    else:
        for row in rows:
            row["eval_adjusted"] = row["eval"]

    experiment, exp_md = None, None
    if args.survivor_experiment:
        experiment = {}
        ours_dec = next((d for r, d in zip(rows, decisions) if r["tool"] == "ours" and r["threshold"] == thr), None)
        for name, dec in survivor_experiment(truth, texts, thr).items():
            ev, eva = evaluate(truth, dec, jac, thr), evaluate(truth_adj, dec, jac, thr)
            same = None
            if ours_dec is not None:
                j = ours_dec.select("record_id", pl.col("kept").alias("k0")).join(dec.select("record_id", "kept"), on="record_id")
                same = int((j["k0"] == j["kept"]).sum())
            experiment[name] = {"eval": ev, "eval_adjusted": eva, "same_keep_decision_as_pipeline": same}
        exp_lines = ["| survivor rule | kept | pair P | pair R | pair F1 | rm P | rm R | copy R (J>=thr) | same keep/drop as pipeline |",
                     "|---|---|---|---|---|---|---|---|---|"]
        for name, e in experiment.items():
            a = e["eval_adjusted"]
            exp_lines.append(f"| {name} | {a['kept']:,} | {a['pairwise']['precision']:.4f} | {a['pairwise']['recall']:.4f} | "
                             f"{a['pairwise']['f1']:.4f} | {a['keepdrop']['precision']:.4f} | {a['keepdrop']['recall']:.4f} | "
                             f"{a['copy_recall']['J_above_threshold']:.4f} | {e['same_keep_decision_as_pipeline']} |")
        exp_md = "\n".join(exp_lines)

    task_table = fmt_task_table(rows, nbytes)
    table = fmt_table(rows)
    table_adj = fmt_table(rows, key="eval_adjusted")
    edits = fmt_edit_table(rows)
    print(f"\n## Near-duplicate quality, {args.corpus} corpus, seed {args.seed}, {args.docs:,} docs ({nbytes / MB:.1f} MB)\n")
    print(task_table)
    print("\nbib-dedupe's keep/drop scoring and pairwise scores:\n")
    print(table)
    if audit:
        print(f"\nThe same scored against labels with {audit['clusters_joined']} true clusters joined whose originals have exact "
          f"Jaccard >= {thr} ({audit['confirmed_pairs']} of {audit['checked_cluster_pairs']} merged cluster pairs checked):\n")
        print(table_adj)
    timing_table = fmt_timing(rows, nbytes)
    print("\nTiming (each run a fresh subprocess under flock; work = after imports):\n")
    print(timing_table)
    print("\nCopy recall by edit kind: all copies / copies whose exact word-5-gram Jaccard with the original is >= thr\n")
    print(edits)
    for r in rows:
        if "ours_missed_copy_diagnosis" in r:
            print(f"\nours thr={r['threshold']}: copies with exact J >= thr not linked to their original: "
                  f"{json.dumps(r['ours_missed_copy_diagnosis'])}")
    if exp_md:
        print(f"\nSurvivor-order what-if at {thr} (our method re-run outside the pipeline from its own functions, untimed; "
              "adjusted labels):\n")
        print(exp_md)
    ours = [r for r in rows if r["tool"] == "ours"]
    dtv = [r for r in rows if r["tool"].startswith("datatrove")]
    verdict = None
    if ours and dtv:
        o, d = ours[0]["eval"]["pairwise"], dtv[0]["eval"]["pairwise"]
        oa, da = ours[0]["eval_adjusted"]["pairwise"], dtv[0]["eval_adjusted"]["pairwise"]
        verdict = {"adjusted_labels": {"ours_pair_recall": oa["recall"], "datatrove_pair_recall": da["recall"],
                                       "ours_pair_precision": oa["precision"],
                                       "met": oa["recall"] >= da["recall"] and oa["precision"] >= 0.99},
                   "ours_pair_recall": o["recall"], "datatrove_pair_recall": d["recall"], "ours_pair_precision": o["precision"],
                   "met": o["recall"] >= d["recall"] and o["precision"] >= 0.99,
                   "ours_removal_recall": ours[0]["eval"]["keepdrop"]["recall"],
                   "datatrove_removal_recall": dtv[0]["eval"]["keepdrop"]["recall"],
                   "ours_removal_precision": ours[0]["eval"]["keepdrop"]["precision"]}
        print(f"\nTarget (pairwise recall >= datatrove's at pairwise precision >= 0.99): {'MET' if verdict['met'] else 'NOT MET'} {verdict}")
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    base = results_dir / f"neardup-quality-{dt.date.today().isoformat()}"
    path, k = base.with_suffix(".json"), 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}.json")
    doc = {"command": shlex.join([sys.executable, *sys.argv]), "when": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": machine_info(), "peer_versions": peer_versions(args.peers_python),
           "corpus": {"kind": args.corpus, "path": str(corpus), "docs": args.docs, "seed": args.seed, "bytes": nbytes,
                      "sha256": file_sha256(corpus), "counts": counts,
                      "datatrove_input": str(split)},
           "threshold": thr, "metric_definitions": __doc__.split("Metrics", 1)[1].split("Usage::")[0].strip(),
           "task_table_markdown": task_table, "label_audit": audit, "frozen_code": str(frozen) if frozen else None, "survivor_experiment": experiment, "survivor_experiment_markdown": exp_md, "runs": rows, "target": verdict, "table_markdown": table,
           "table_adjusted_markdown": table_adj, "timing_markdown": timing_table, "by_edit_markdown": edits}
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20261202,
                    help="corpus seed: 20261202 reports, 20261201 is the tuning seed (plain corpus: 20261122)")
    ap.add_argument("--max-sentence-words", type=int, default=60, help="generator limit (0: off, the corpus of earlier runs)")
    ap.add_argument("--max-sentence-chars", type=int, default=400, help="generator limit (0: off, the corpus of earlier runs)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--ours-thresholds", default="0.7,0.75,0.8,0.9")
    ap.add_argument("--ours-prefer", default="longest", choices=["longest", "central"],
                    help="our near-dup survivor rule (dedup.survivor.near_prefer)")
    ap.add_argument("--ours-verify", default="borderline", choices=["signature", "borderline", "exact"],
                    help="our verification (dedup.near.verify)")
    ap.add_argument("--ours-second-hop", type=float, default=None,
                    help="our dedup.near.second_hop (one indirect anti-chaining step at this bar; default off)")
    ap.add_argument("--corpus", default="web", choices=["web", "plain"],
                    help="web: neardup_webcorpus.py (the harder one); plain: neardup_corpus.py (earlier runs)")
    ap.add_argument("--tools", default="ours,ours-config:configs/dedup-conservative.yaml,datatrove,datasketch",
                    help="comma list: ours (library defaults), ours-config:FILE (its dedup section), "
                         "ours-json:NAME={...} (dedup settings), ours-grid (--ours-thresholds), datatrove, datasketch, "
                         "datasketch-16x8")
    ap.add_argument("--lock", default=LOCK, help="the flock every measured run holds (default: the machine's bench lock)")
    ap.add_argument("--ours-last", action="store_true", help="run the peers first and ours at the end")
    ap.add_argument("--no-jaccard", action="store_true", help="skip exact copy Jaccard, label audit and miss diagnosis "
                    "(always skipped above 200k documents: they hold every text in Python)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep our run directories")
    ap.add_argument("--freeze-code", action="store_true", help="ours runs a snapshot of the committed pipeline/ (git archive HEAD)")
    ap.add_argument("--merge-results", action="append", help="add the runs of an earlier results JSON of the same corpus "
                    "(marked with *)")
    ap.add_argument("--ours-dedup", help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", default="/tmp/neardup-quality")
    ap.add_argument("--peers-python", default="/tmp/peers-quality/bin/python")
    ap.add_argument("--results-dir", default=str(HERE / "results"))
    ap.add_argument("--survivor-experiment", action="store_true",
                    help="also re-run our method outside the pipeline with other survivor orders (untimed what-if)")
    # child-only
    ap.add_argument("--child", choices=["ours", "datatrove", "datasketch"])
    ap.add_argument("--input")
    ap.add_argument("--out")
    ap.add_argument("--params", type=int, nargs=2)
    args = ap.parse_args()
    if args.child:
        child_main(args)
        return 0
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
