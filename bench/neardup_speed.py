#!/usr/bin/env python
"""MinHash signature speed, end to end from raw text, per core: ours against datasketch and rensa.

Every method starts from a Python list of raw document strings (loading the file is not timed)
and ends with one 128-permutation MinHash signature per document; normalisation/tokenisation
and shingling are inside the timing. Each measurement runs in a fresh subprocess, single
threaded (NUMBA_NUM_THREADS, POLARS_MAX_THREADS, RAYON_NUM_THREADS, OMP_NUM_THREADS = 1), under
`flock /tmp/hygiene-bench.lock` so timed runs never overlap other benchmarks on the machine.
One untimed warm-up call on 100 documents precedes the timing (numba cache load, regex
compilation, imports). Then, holding the lock, the worker waits (up to --quiet-max-wait s) until
the rest of the machine uses fewer than --quiet-threshold cores, since not every process on a
shared machine takes the lock. A run whose CPU/wall is below --min-cpu-per-wall (0.9) did not
get a whole core: it stays in the JSON with "valid": false, is not counted, and is retried (up to
--retries times). Medians are over valid runs; the tables also give paired ratios (ours against
each method in the same repeat).

Methods (word 5-gram shingles, 128 permutations, seed 1):

  ours                 pipeline.dedup.minhash: pa.array(texts) -> normalize_for_shingles ->
                       signatures, in batches of about 16 MiB (the pipeline's batch size)
  datasketch_update    per document: text.lower().split() -> 5-gram shingles (bytes) ->
                       MinHash(num_perm=128, seed=1) and .update(shingle) per shingle
  datasketch_bulk      the same shingles through MinHash.bulk(generator, num_perm=128, seed=1)
  rensa_update         per document: RMinHash(num_perm=128, seed=1).update(list of shingle
                       strings) then .digest() (rensa's documented per-document path)
  rensa_update_words   informational: RMinHash.update(text.lower().split()) - rensa's README
                       example, word unigrams (a different feature set: no shingling cost)
  rensa_matrix         informational: RMinHash.digest_matrix_from_token_sets over the shingle
                       lists (rensa's batch API, one call)

Peers run in a separate venv (--peers-python, default /tmp/peers-speed/bin/python); ours in
this interpreter's venv.

Datasets:

  gen          the first --docs documents of bench/neardup_corpus.py's corpus (default 50,000;
               about 1.4 KB each, 30% injected near copies)
  gut-lines    every non-empty line of the Gutenberg selection in
               /work/shared/data/dedup/nltk_gutenberg_throughput/ (the files hold one sentence
               or verse line per line: about 68k documents of about 110 bytes)
  gut-chunks   consecutive lines of each book joined with newlines into chunks of >= 2,000 bytes

Also checks, on 200 random documents of each dataset, that our hashvalues equal
datasketch MinHash(num_perm=128, seed=1, hashfunc=pipeline.dedup.minhash.shingle_hash32)
updated with pipeline.dedup.minhash.shingles(normalised_text, MinHashParams()).

Usage::

    .venv/bin/python bench/neardup_speed.py                          # 3 repeats, all datasets
    .venv/bin/python bench/neardup_speed.py --repeats 1 --docs 5000  # quick check

Targets (per core): ours >= 10x datasketch_update and >= 2x rensa_update, in docs/s.
Results: bench/results/neardup-speed-<date>.json (suffixed -2, -3, ... when it exists).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import cmd_out, median, results_path  # noqa: E402

MB = 1_000_000
MiB = 1024 * 1024
LOCK = "/tmp/hygiene-bench.lock"
RESULT_TAG = "BENCH_RESULT "
GUTENBERG = REPO.parent / "shared" / "data" / "dedup" / "nltk_gutenberg_throughput"
NUM_PERM, SEED, NGRAM = 128, 1, 5
SINGLE_THREAD_ENV = {
    "NUMBA_NUM_THREADS": "1", "POLARS_MAX_THREADS": "1", "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
}
METHODS = ["ours", "datasketch_update", "datasketch_bulk", "rensa_update", "rensa_update_words", "rensa_matrix"]
PEER_LIBS = ("datasketch", "rensa", "numpy", "polars", "psutil")
OUR_LIBS = ("numba", "numpy", "polars", "pyarrow", "psutil", "datasketch", "hygiene-pipeline")


# ============================================================================================
# Shared helpers (also imported by neardup_scale.py; cmd_out, median, results_path come from common.py)


STAGE_FILES = ("pipeline/dedup/*.py", "pipeline/run/*.py", "pipeline/core/*.py", "pipeline/stages/*.py", "pipeline/plan.py", "pipeline/executor.py",
               "pipeline/config.py", "pipeline/fileio.py", "pipeline/sources/*.py")


def pipeline_digest() -> dict:
    """sha256 (names + contents) of the near-dup stage's files and of all of pipeline/*.py: shows
    whether the code under test changed during the run (other sessions edit this tree)."""
    def digest(files):
        h = hashlib.sha256()
        for f in sorted(set(files)):
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()

    stage = [f for pat in STAGE_FILES for f in REPO.glob(pat)]
    return {"stage_files": digest(stage), "all_pipeline": digest((REPO / "pipeline").rglob("*.py"))}


def lib_versions(python: str, libs: tuple[str, ...]) -> dict:
    code = ("import json,platform,sys\nfrom importlib import metadata\nd={'python':platform.python_version()}\n"
            f"for l in {list(libs)!r}:\n    try: d[l]=metadata.version(l)\n    except Exception: d[l]=None\n"
            "print(json.dumps(d))")
    out = cmd_out([python, "-c", code])
    return json.loads(out) if out else {}


def machine_info(peers_python: str) -> dict:
    import psutil

    vm = psutil.virtual_memory()
    cpu_model = None
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "nproc": os.cpu_count(),
        "nproc_affinity": len(os.sched_getaffinity(0)),
        "memory_total_gib": round(vm.total / 2**30, 2),
        "memory_available_gib_before": round(vm.available / 2**30, 2),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "uptime_before": cmd_out(["uptime"]),
        "versions_ours": lib_versions(sys.executable, OUR_LIBS),
        "versions_peers": lib_versions(peers_python, PEER_LIBS),
        "ours_python": sys.executable,
        "peers_python": peers_python,
        "git_commit": cmd_out(["git", "rev-parse", "HEAD"]),
        "git_status_porcelain": (cmd_out(["git", "status", "--porcelain"]) or "").splitlines(),
        "pipeline_sha256_before": pipeline_digest(),
    }


def fmt(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def word_shingles(text: str, n: int = NGRAM) -> list[str]:
    """Peers' tokenisation: lowercase, split on whitespace, word n-grams joined by one space;
    a text of fewer than n tokens is one shingle of all of them (as ours with short_docs=whole)."""
    toks = text.lower().split()
    if len(toks) < n:
        return [" ".join(toks)] if toks else []
    return [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def load_texts(path: str | Path, limit: int | None = None) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(out) >= limit:
                break
            out.append(json.loads(line)["text"])
    return out


# ============================================================================================
# Worker side: one method on one dataset, in a fresh interpreter; prints one result line.


def _batches_by_bytes(texts: list[str], target: int = 16 * MiB) -> list[tuple[int, int]]:
    out, start, size = [], 0, 0
    for i, t in enumerate(texts):
        size += len(t)
        if size >= target:
            out.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(texts):
        out.append((start, len(texts)))
    return out


def m_ours(texts: list[str], state: dict) -> dict:
    import numpy as np
    import pyarrow as pa

    from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, signatures

    params = MinHashParams(num_perm=NUM_PERM, seed=SEED, ngram=NGRAM)
    bounds = state.get("bounds") or _batches_by_bytes(texts)
    t_arrow = t_norm = t_sig = 0.0
    shingles = 0
    checksum = 0
    for s, e in bounds:
        t0 = time.perf_counter()
        arr = pa.array(texts[s:e], type=pa.large_string())
        t1 = time.perf_counter()
        norm = normalize_for_shingles(arr)
        t2 = time.perf_counter()
        sig, counts = signatures(norm, params)
        t3 = time.perf_counter()
        t_arrow += t1 - t0
        t_norm += t2 - t1
        t_sig += t3 - t2
        shingles += int(counts.sum())
        checksum ^= int(np.bitwise_xor.reduce(sig[:, 0])) if len(sig) else 0
    return {"shingles": shingles, "checksum": checksum,
            "phases_s": {"to_arrow": round(t_arrow, 4), "normalize": round(t_norm, 4), "signatures": round(t_sig, 4)}}


def m_datasketch_update(texts: list[str], state: dict) -> dict:
    from datasketch import MinHash

    shingles = 0
    sigs = []
    for t in texts:
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        for s in word_shingles(t):
            m.update(s.encode("utf-8"))
            shingles += 1
        sigs.append(m.hashvalues)
    return {"shingles": shingles, "checksum": _xor_first([int(h[0]) for h in sigs])}


def m_datasketch_bulk(texts: list[str], state: dict) -> dict:
    from datasketch import MinHash

    counter = [0]

    def gen():
        for t in texts:
            sh = [s.encode("utf-8") for s in word_shingles(t)]
            counter[0] += len(sh)
            yield sh

    mhs = MinHash.bulk(gen(), num_perm=NUM_PERM, seed=SEED)
    return {"shingles": counter[0], "checksum": _xor_first([int(m.hashvalues[0]) for m in mhs])}


def m_rensa_update(texts: list[str], state: dict) -> dict:
    from rensa import RMinHash

    shingles = 0
    sigs = []
    for t in texts:
        sh = word_shingles(t)
        shingles += len(sh)
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(sh)
        sigs.append(m.digest())
    return {"shingles": shingles, "checksum": _xor_first([d[0] for d in sigs])}


def m_rensa_update_words(texts: list[str], state: dict) -> dict:
    from rensa import RMinHash

    tokens = 0
    sigs = []
    for t in texts:
        toks = t.lower().split()
        tokens += len(toks)
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(toks)
        sigs.append(m.digest())
    return {"shingles": tokens, "checksum": _xor_first([d[0] for d in sigs]), "note": "word unigrams, not 5-grams"}


def m_rensa_matrix(texts: list[str], state: dict) -> dict:
    from rensa import RMinHash

    counter = [0]

    def gen():
        for t in texts:
            sh = word_shingles(t)
            counter[0] += len(sh)
            yield sh

    mat = RMinHash.digest_matrix_from_token_sets(gen(), NUM_PERM, SEED)
    return {"shingles": counter[0], "rows": len(mat) if hasattr(mat, "__len__") else None}


def _xor_first(vals: list[int]) -> int:
    x = 0
    for v in vals:
        x ^= int(v)
    return x


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot, from /proc/stat (all cores summed)."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [int(x) for x in parts]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest is already in user
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + (vals[7] if len(vals) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(threshold: float, max_wait: float, need: int = 2) -> dict:
    """Wait (holding the lock) until the rest of the machine used less than `threshold` cores for
    `need` consecutive 1-second samples, or `max_wait` seconds passed: work of other sessions that
    does not take the shared lock would otherwise run on our clock."""
    t0 = time.perf_counter()
    quiet, last = 0, None
    while True:
        m0, c0 = machine_busy_seconds(), time.process_time()
        time.sleep(1.0)
        last = max(0.0, machine_busy_seconds() - m0 - (time.process_time() - c0))
        quiet = quiet + 1 if last < threshold else 0
        waited = time.perf_counter() - t0
        if quiet >= need or threshold <= 0:
            return {"waited_s": round(waited, 1), "quiet": True, "other_cores_busy_last_s": round(last, 2)}
        if waited >= max_wait:
            return {"waited_s": round(waited, 1), "quiet": False, "other_cores_busy_last_s": round(last, 2)}


def worker(method: str, data: str, limit: int | None, quiet_threshold: float = 0.3, quiet_max_wait: float = 90.0) -> int:
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    t_imp = time.perf_counter()
    fn = globals()[f"m_{method}"]
    texts = load_texts(data, limit)
    in_bytes = sum(len(t.encode("utf-8")) for t in texts)
    state = {}
    if method == "ours":
        state["bounds"] = _batches_by_bytes(texts)
    t_load = time.perf_counter() - t_imp
    tw = time.perf_counter()
    fn(texts[:100], {})  # warm-up: imports, numba cache load, regex compilation
    warm = time.perf_counter() - tw
    quiet = wait_for_quiet(quiet_threshold, quiet_max_wait)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    m0, c0, t0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    res = fn(texts, state)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    other = max(0.0, machine_busy_seconds() - m0 - cpu)
    out = {
        "method": method, "docs": len(texts), "bytes": in_bytes, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
        "cpu_per_wall": round(cpu / wall, 3), "other_cores_busy": round(other / wall, 2), "docs_per_s": round(len(texts) / wall, 1),
        "mb_per_s": round(in_bytes / MB / wall, 3), "warmup_s": round(warm, 3), "load_s": round(t_load, 3), "quiet_wait": quiet,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_at_start": load_at_start, "threads_env": {k: os.environ.get(k) for k in SINGLE_THREAD_ENV},
        **res,
    }
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


# ============================================================================================
# Parity check (untimed): our hashvalues against datasketch with our hashfunc and shingles.


def parity(datasets: dict[str, str], n: int, seed: int) -> dict:
    import numpy as np
    import pyarrow as pa
    from datasketch import MinHash

    from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, shingle_hash32, shingles, signatures

    params = MinHashParams()
    report = {"params": {"num_perm": params.num_perm, "seed": params.seed, "ngram": params.ngram,
                         "short_docs": params.short_docs}, "datasets": {}}
    for name, path in datasets.items():
        texts = load_texts(path)
        rng = random.Random(seed)
        idx = sorted(rng.sample(range(len(texts)), min(n, len(texts))))
        sample = [texts[i] for i in idx]
        norm = normalize_for_shingles(pa.array(sample, type=pa.large_string()))
        sig, counts = signatures(norm, params)
        equal = count_equal = 0
        bad = []
        for k, t in enumerate(norm.to_pylist()):
            sh = shingles(t, params)
            m = MinHash(num_perm=128, seed=1, hashfunc=shingle_hash32)
            for s in sh:
                m.update(s)
            ok = bool(np.array_equal(m.hashvalues.astype(np.uint32), sig[k]))
            equal += ok
            count_equal += int(counts[k]) == len(sh)
            if not ok and len(bad) < 5:
                bad.append(idx[k])
        report["datasets"][name] = {"docs_checked": len(sample), "hashvalues_equal": equal,
                                    "shingle_counts_equal": count_equal, "mismatched_doc_indexes": bad,
                                    "non_ascii_docs": sum(any(ord(c) > 127 for c in t) for t in sample)}
    report["all_equal"] = all(d["hashvalues_equal"] == d["docs_checked"] for d in report["datasets"].values())
    return report


# ============================================================================================
# Parent side


def prepare_datasets(work: Path, docs: int, which: list[str]) -> dict[str, dict]:
    sys.path.insert(0, str(HERE))
    out = {}
    work.mkdir(parents=True, exist_ok=True)
    if "gen" in which:
        from neardup_corpus import MAX_SENTENCE_CHARS, MAX_SENTENCE_WORDS, generate

        path = work / f"corpus-{docs}-w{MAX_SENTENCE_WORDS}c{MAX_SENTENCE_CHARS}.jsonl"  # settings in the name: no stale cache
        if not path.exists():

            tmp = path.with_suffix(".tmp")
            generate(docs, tmp)
            tmp.replace(path)
        out["gen"] = {"path": str(path), "desc": f"bench/neardup_corpus.py --docs {docs} (seed 20261122)"}
    books = sorted(GUTENBERG.glob("*.txt"))
    if "gut-lines" in which:
        path = work / "gutenberg-lines.jsonl"
        if not path.exists():
            with open(path, "w", encoding="utf-8") as f:
                for b in books:
                    for line in b.read_text(encoding="utf-8").split("\n"):
                        if line.strip():
                            f.write(json.dumps({"text": line}) + "\n")
        out["gut-lines"] = {"path": str(path), "desc": "non-empty lines of the Gutenberg selection"}
    if "gut-chunks" in which:
        path = work / "gutenberg-chunks.jsonl"
        if not path.exists():
            with open(path, "w", encoding="utf-8") as f:
                for b in books:
                    cur, size = [], 0
                    for line in b.read_text(encoding="utf-8").split("\n"):
                        if not line.strip():
                            continue
                        cur.append(line)
                        size += len(line.encode()) + 1
                        if size >= 2000:
                            f.write(json.dumps({"text": "\n".join(cur)}) + "\n")
                            cur, size = [], 0
                    if cur:
                        f.write(json.dumps({"text": "\n".join(cur)}) + "\n")
        out["gut-chunks"] = {"path": str(path), "desc": "consecutive Gutenberg lines joined into >= 2,000-byte chunks"}
    for d in out.values():
        n = b = 0
        with open(d["path"], encoding="utf-8") as f:
            for line in f:
                n += 1
                b += len(json.loads(line)["text"].encode("utf-8"))
        d.update({"docs": n, "text_bytes": b, "mean_doc_bytes": round(b / n, 1)})
    return out


def run_worker(method: str, data: str, peers_python: str, log: Path, tag: str, quiet: tuple[float, float]) -> dict:
    python = sys.executable if method == "ours" else peers_python
    env = {**os.environ, **SINGLE_THREAD_ENV}
    if method == "ours":
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = ["flock", LOCK, python, str(Path(__file__).resolve()), "--worker", method, "--data", data,
           "--quiet-threshold", str(quiet[0]), "--quiet-max-wait", str(quiet[1])]
    uptime = cmd_out(["uptime"])
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), env=env)
    outer = time.perf_counter() - t0
    (log / f"{tag}.stderr").write_text(r.stderr)
    rec = {"uptime_before": uptime, "loadavg_before": load, "outer_wall_incl_lock_wait_s": round(outer, 2),
           "returncode": r.returncode, "command": shlex.join(cmd)}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if r.returncode != 0 or not lines:
        rec["error"] = r.stderr[-3000:]
        rec["method"] = method
        return rec
    rec.update(json.loads(lines[-1][len(RESULT_TAG):]))
    return rec


def summarize(runs: list[dict], datasets: dict, methods: list[str]) -> dict:
    summary = {}
    for ds in datasets:
        per = {}
        for m in methods:
            allr = [r for r in runs if r.get("dataset") == ds and r.get("method") == m and "error" not in r]
            rs = [r for r in allr if r.get("valid")] or allr  # all attempts only when none was valid (flagged)
            if not rs:
                continue
            per[m] = {
                "runs": len(rs),
                "invalid_attempts": sum(1 for r in allr if not r.get("valid")),
                "only_invalid_runs": not any(r.get("valid") for r in allr),
                "docs_per_s": median([r["docs_per_s"] for r in rs]),
                "mb_per_s": median([r["mb_per_s"] for r in rs]),
                "wall_s": median([r["wall_s"] for r in rs]),
                "cpu_per_wall": median([r["cpu_per_wall"] for r in rs]),
                "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
                "min_docs_per_s": min(r["docs_per_s"] for r in rs),
                "max_docs_per_s": max(r["docs_per_s"] for r in rs),
                "shingles": rs[0].get("shingles"),
                "load1_at_start": [r["loadavg_at_start"][0] for r in rs],
                "other_cores_busy": [r["other_cores_busy"] for r in rs],
            }
            if m == "ours":
                per[m]["phases_s_median"] = {k: median([r["phases_s"][k] for r in rs]) for k in rs[0]["phases_s"]}
        ours = per.get("ours")
        for m, v in per.items():
            v["ours_speedup"] = round(ours["docs_per_s"] / v["docs_per_s"], 2) if ours else None
            # paired per-repeat ratios (same repeat, adjacent in time)
            pairs = []
            for rep in sorted({r["repeat"] for r in runs if r.get("dataset") == ds}):
                a = [r for r in runs if r.get("dataset") == ds and r.get("method") == "ours" and r.get("repeat") == rep and r.get("valid")]
                b = [r for r in runs if r.get("dataset") == ds and r.get("method") == m and r.get("repeat") == rep and r.get("valid")]
                if a and b:
                    pairs.append(a[0]["docs_per_s"] / b[0]["docs_per_s"])
            v["ours_speedup_paired_median"] = round(median(pairs), 2) if pairs else None
        summary[ds] = per
    return summary


def targets(summary: dict) -> dict:
    out = {}
    for ds, per in summary.items():
        d = {}
        if "ours" in per and "datasketch_update" in per:
            x = per["datasketch_update"]["ours_speedup"]
            d["vs_datasketch_update"] = {"speedup": x, "target": 10.0, "met": x >= 10.0}
        if "ours" in per and "rensa_update" in per:
            x = per["rensa_update"]["ours_speedup"]
            d["vs_rensa_update"] = {"speedup": x, "target": 2.0, "met": x >= 2.0}
        out[ds] = d
    return out


def markdown(summary: dict, datasets: dict, tgt: dict, par: dict | None) -> str:
    lines = []
    for ds, per in summary.items():
        d = datasets[ds]
        lines.append(f"\n### {ds}: {d['docs']:,} docs, {d['text_bytes'] / MB:.1f} MB, mean {d['mean_doc_bytes']:.0f} B/doc\n")
        lines.append("| method | runs | docs/s | MB/s | wall s | CPU/wall | peak RSS MiB | ours is ×faster (medians / paired) | load1 at start | other cores busy | invalid attempts |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
        for m, v in per.items():
            lines.append(f"| {m} | {v['runs']} | {fmt(v['docs_per_s'], 0)} | {fmt(v['mb_per_s'], 2)} | {fmt(v['wall_s'], 2)} | "
                         f"{fmt(v['cpu_per_wall'], 2)} | {fmt(v['peak_rss_mib'], 0)} | "
                         f"{fmt(v['ours_speedup'], 2)} / {fmt(v['ours_speedup_paired_median'], 2)} | "
                         f"{', '.join(f'{x:.2f}' for x in v['load1_at_start'])} | "
                         f"{', '.join(f'{x:.2f}' for x in v['other_cores_busy'])} | "
                         f"{v['invalid_attempts']}{' (no valid run!)' if v['only_invalid_runs'] else ''} |")
        if "ours" in per:
            ph = per["ours"]["phases_s_median"]
            lines.append(f"\nours, median phase seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in ph.items()))
        for name, t in tgt.get(ds, {}).items():
            lines.append(f"- target {name}: ≥ {t['target']}× → {t['speedup']}× **{'met' if t['met'] else 'MISSED'}**")
    if par:
        lines.append("\n### Parity with datasketch (hashfunc=shingle_hash32, our shingles)\n")
        lines.append("| dataset | docs checked | hashvalues equal | shingle counts equal | non-ASCII docs |")
        lines.append("|---|---:|---:|---:|---:|")
        for ds, v in par["datasets"].items():
            lines.append(f"| {ds} | {v['docs_checked']} | {v['hashvalues_equal']} | {v['shingle_counts_equal']} | {v['non_ascii_docs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--parity-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--docs", type=int, default=50_000, help="documents of the generated corpus (default 50000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--datasets", default="gut-lines,gut-chunks,gen")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/neardup-bench"))
    ap.add_argument("--peers-python", default="/tmp/peers-speed/bin/python")
    ap.add_argument("--parity-docs", type=int, default=200)
    ap.add_argument("--quiet-threshold", type=float, default=0.3,
                    help="before timing, wait until other processes use fewer cores than this (0: do not wait)")
    ap.add_argument("--quiet-max-wait", type=float, default=90.0, help="seconds; then time anyway (recorded)")
    ap.add_argument("--min-cpu-per-wall", type=float, default=0.9,
                    help="a run whose CPU/wall is lower did not get a whole core: recorded, not counted, retried")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--results", default=None)
    args = ap.parse_args(argv)

    if args.worker:
        return worker(args.worker, args.data, args.limit, args.quiet_threshold, args.quiet_max_wait)
    if args.parity_worker:
        spec = json.loads(Path(args.data).read_text())
        print(RESULT_TAG + json.dumps(parity(spec["datasets"], spec["n"], spec["seed"])), flush=True)
        return 0

    methods = [m for m in args.methods.split(",") if m]
    which = [d for d in args.datasets.split(",") if d]
    info = machine_info(args.peers_python)
    datasets = prepare_datasets(args.work, args.docs, which)
    log = args.work / f"speed-logs-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    log.mkdir(parents=True)
    print(f"datasets: {json.dumps(datasets)}", file=sys.stderr)

    # Parity (untimed, but still under the lock: it uses a core for a few seconds).
    spec = log / "parity.json"
    spec.write_text(json.dumps({"datasets": {k: v["path"] for k, v in datasets.items()}, "n": args.parity_docs, "seed": 7}))
    env = {**os.environ, **SINGLE_THREAD_ENV, "PYTHONPATH": str(REPO)}
    r = subprocess.run(["flock", LOCK, sys.executable, str(Path(__file__).resolve()), "--parity-worker", "--data", str(spec)],
                       capture_output=True, text=True, cwd=str(REPO), env=env)
    pl_ = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    par = json.loads(pl_[-1][len(RESULT_TAG):]) if pl_ else {"error": r.stderr[-3000:]}
    print(f"parity: {json.dumps(par)}", file=sys.stderr)

    runs = []
    for rep in range(args.repeats):
        for ds in which:
            # rotate the method order each repeat so slow drifts in machine load spread evenly
            order = methods[rep % len(methods):] + methods[: rep % len(methods)]
            for m in order:
                for attempt in range(args.retries + 1):
                    rec = run_worker(m, datasets[ds]["path"], args.peers_python, log, f"r{rep}-{ds}-{m}-a{attempt}",
                                     (args.quiet_threshold, args.quiet_max_wait))
                    rec.update({"dataset": ds, "repeat": rep, "attempt": attempt})
                    # A single-threaded run that did not get a whole core was slowed by other work on the
                    # machine (work that does not take the lock): kept in the record, not counted, retried.
                    rec["valid"] = "error" not in rec and rec["cpu_per_wall"] >= args.min_cpu_per_wall
                    runs.append(rec)
                    if "error" in rec:
                        msg = "ERROR " + rec["error"][-500:]
                    else:
                        msg = (f"{rec['docs_per_s']} docs/s, {rec['mb_per_s']} MB/s, cpu/wall {rec['cpu_per_wall']}, "
                               f"other busy {rec['other_cores_busy']}, quiet-wait {rec['quiet_wait']}, "
                               f"load {rec['loadavg_at_start']}" + ("" if rec["valid"] else " INVALID"))
                    print(f"[rep {rep} {ds} {m} a{attempt}] {msg}", file=sys.stderr, flush=True)
                    if rec["valid"] or "error" in rec:
                        break

    summary = summarize(runs, datasets, methods)
    tgt = targets(summary)
    info["uptime_after"] = cmd_out(["uptime"])
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    info["pipeline_sha256_after"] = pipeline_digest()
    result = {
        "benchmark": "neardup-speed",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "machine": info,
        "settings": {"num_perm": NUM_PERM, "seed": SEED, "ngram": NGRAM, "single_thread_env": SINGLE_THREAD_ENV,
                     "lock": LOCK, "repeats": args.repeats,
                     "quiet_threshold_cores": args.quiet_threshold, "quiet_max_wait_s": args.quiet_max_wait,
                     "min_cpu_per_wall": args.min_cpu_per_wall, "retries": args.retries, "methods": methods,
                     "timing": "in the worker, after loading the texts, one warm-up call on 100 docs and the quiet wait; "
                               "MB = 10^6 bytes of UTF-8 text"},
        "datasets": datasets,
        "parity": par,
        "runs": runs,
        "summary": summary,
        "targets": tgt,
    }
    out = results_path("neardup-speed", args.results)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(summary, datasets, tgt, par if "datasets" in par else None))
    print(f"\nresults: {out}")
    failed = [r for r in runs if "error" in r]
    return 1 if failed or not par.get("all_equal", False) else 0


if __name__ == "__main__":
    sys.exit(main())
