#!/usr/bin/env python
"""The whole near-duplicate stage at 10k, 100k and 1M documents: ours against datasketch and rensa.

"The stage" is what the pipeline does for near dedup, up to and including the barrier: in a
fresh subprocess per measurement,

  ours        pipeline.config.parse_config({"sources": [{"name": "g", "kind": "jsonl",
              "paths": [FILE], "id_field": "id"}], "output": {"dir": OUT}})  (defaults: exact dedup
              on, near dedup on, threshold 0.8, 128 permutations, 16 x 8 bands),
              make_plan(cfg), pass1 on every unit in a ThreadPoolExecutor(2), then barrier.
              Phases timed: plan, pass1, barrier (and, by wrapping without changing any pipeline
              file, the time inside SignatureWriter.add summed over both threads and the time of
              near-duplicate resolution: its groups' plan, group tasks and merge).

  datasketch  a straightforward datasketch pipeline: read the JSONL line by line (json.loads),
              per document MinHash(num_perm=128, seed=1) updated with each word 5-gram shingle
              (lowercase, split on whitespace), MinHashLSH(threshold=0.8, num_perm=128) (its
              optimal 9 x 13 bands): insert every signature, query every signature, union-find
              over the (doc, candidate) pairs; one document kept per connected component.

  rensa_lsh   the same with rensa: RMinHash(num_perm=128, seed=1).update(shingle strings) per
              document, RMinHashLSH(threshold=0.8, num_perm=128, num_bands=16) insert_many +
              query_all, union-find, one kept per component.

  rensa_dedup rensa's own RMinHashDeduplicator(threshold=0.8, num_perm=128, use_lsh=True,
              seed=1) fed (key, shingles) with add_pairs (streaming; it verifies candidates
              against the kept documents only).

Every subprocess runs under `flock /tmp/hygiene-bench.lock` so timed runs never overlap the
other benchmarks of the machine, and, holding the lock, waits (up to --quiet-max-wait s) until
the rest of the machine is nearly idle before its clock starts. Peak RSS: `ru_maxrss` from
`os.wait4` on the subprocess (the kernel's high-water mark of the process and its reaped
children), a psutil poll of the summed RSS of the process tree every 0.1 s, and the worker's
own `getrusage(RUSAGE_SELF).ru_maxrss` read when its stage ends.

The corpora come from bench/neardup_corpus.py (generated once into --work and reused). The
input file is read once before the runs, so all runs start from a warm page cache. After each
run (untimed) the kept/dropped documents are scored against the corpus ground truth:
duplicates removed (per true cluster of k documents at most k-1 can go) and true clusters
lost entirely (content wrongly dropped).

A peer run at a size whose estimate (the previous size's median scaled linearly by document
count) exceeds --peer-max-seconds is not run: the extrapolation is reported and marked as such.

Usage::

    .venv/bin/python bench/neardup_scale.py                             # 10k, 100k, 1M
    .venv/bin/python bench/neardup_scale.py --sizes 10000 --repeats 1   # quick check

Targets: ours at 1M documents under 2 minutes wall (plan + pass1 + barrier) and under 4 GiB
peak RSS. Results: bench/results/neardup-scale-<date>.json (suffixed -2, -3 when it exists).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from neardup_corpus import MAX_SENTENCE_CHARS, MAX_SENTENCE_WORDS  # noqa: E402
from neardup_speed import (  # noqa: E402
    LOCK, MB, MiB, REPO, RESULT_TAG, cmd_out, fmt, machine_info, median, pipeline_digest, results_path,
    wait_for_quiet, word_shingles,
)

METHODS = ["ours", "datasketch", "rensa_lsh", "rensa_dedup"]
CORPUS_LIMITS = f"w{MAX_SENTENCE_WORDS}c{MAX_SENTENCE_CHARS}"
TARGET_WALL_S = 120.0
TARGET_RSS_GIB = 4.0
THRESHOLD, NUM_PERM, SEED = 0.8, 128, 1


# ============================================================================================
# Worker side


def _self_peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _started(marker: str | None) -> None:
    if marker:
        Path(marker).write_text(str(time.time()))


def w_ours(inp: str, out: str, quiet: tuple[float, float], marker: str | None) -> dict:
    t_imp = time.perf_counter()
    from concurrent.futures import ThreadPoolExecutor

    import pipeline.dedup.near as near_mod
    import pipeline.stages.near as near_stage
    from pipeline.run.barrier import barrier
    from pipeline.run.pass1 import pass1
    from pipeline.config import parse_config
    from pipeline.plan import make_plan

    imports = time.perf_counter() - t_imp
    # Clock wrappers only (no pipeline file changes): time inside SignatureWriter.add, summed
    # over the threads, and inside near-duplicate resolution (summed over its tasks).
    lock = threading.Lock()
    acc = {"signature_add_s": 0.0, "resolve_near_s": 0.0}
    orig_add = near_mod.SignatureWriter.add

    def add(self, text, rows):
        t0 = time.perf_counter()
        try:
            return orig_add(self, text, rows)
        finally:
            with lock:
                acc["signature_add_s"] += time.perf_counter() - t0

    near_mod.SignatureWriter.add = add
    import pipeline.run.near_groups as near_groups

    def timed(module, name: str) -> None:
        """Add the time inside `module.name` to `resolve_near_s` (the group tasks run on threads)."""
        orig = getattr(module, name)

        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                with lock:
                    acc["resolve_near_s"] += time.perf_counter() - t0

        setattr(module, name, wrapper)

    # resolution: the groups' plan, each group task, the merge in the barrier
    for module, name in ((near_groups, "plan_near_groups"), (near_groups, "run_near_group"), (near_stage, "merge_groups")):
        timed(module, name)

    # HYGIENE_BENCH_OURS_DEDUP (JSON, e.g. '{"near": {"threshold": 0.7}, "survivor": {"near_prefer": "central"}}')
    # runs ours with other dedup settings than the defaults.
    dedup = json.loads(os.environ.get("HYGIENE_BENCH_OURS_DEDUP", "{}"))
    cfg = parse_config({"sources": [{"name": "g", "kind": "jsonl", "paths": [inp], "id_field": "id"}],
                        "output": {"dir": out}, **({"dedup": dedup} if dedup else {})})
    qw = wait_for_quiet(*quiet)
    _started(marker)
    load = [round(x, 2) for x in os.getloadavg()]
    c0, t0 = time.process_time(), time.perf_counter()
    plan = make_plan(cfg)
    t1 = time.perf_counter()
    work = str(plan.work_dir)
    ids = [u.unit_id for u in plan.units]
    with ThreadPoolExecutor(max_workers=2) as pool:
        p1 = list(pool.map(lambda i: pass1(work, i), ids))
    t2 = time.perf_counter()
    b = barrier(work)
    t3 = time.perf_counter()
    cpu = time.process_time() - c0
    return {
        "imports_s": round(imports, 3), "quiet_wait": qw, "loadavg_at_start": load,
        "phases_s": {"plan": round(t1 - t0, 3), "pass1": round(t2 - t1, 3), "barrier": round(t3 - t2, 3)},
        "inner_s": {k: round(v, 3) for k, v in acc.items()},
        "wall_s": round(t3 - t0, 3), "cpu_s": round(cpu, 2), "peak_rss_self_mib": _self_peak_mib(),
        "units": len(ids), "records": sum(r["records"] for r in p1),
        "barrier": {"exact_dropped": b["exact_dropped"], "near_dedup": b["near_dedup"]},
    }


class _UF:
    def __init__(self, n: int) -> None:
        self.p = list(range(n))

    def find(self, x: int) -> int:
        p = self.p
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.p[rb] = ra
            else:
                self.p[ra] = rb


def _dropped_from_uf(uf: _UF, n: int) -> list[int]:
    """One kept per component (its lowest index, i.e. the first in input order); the rest dropped."""
    return [i for i in range(n) if uf.find(i) != i]


def _read_texts(inp: str):
    with open(inp, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)["text"]


def w_datasketch(inp: str, out: str, quiet: tuple[float, float], marker: str | None) -> dict:
    t_imp = time.perf_counter()
    from datasketch import MinHash, MinHashLSH

    imports = time.perf_counter() - t_imp
    qw = wait_for_quiet(*quiet)
    _started(marker)
    load = [round(x, 2) for x in os.getloadavg()]
    c0, t0 = time.process_time(), time.perf_counter()
    mhs = []
    for text in _read_texts(inp):
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        for s in word_shingles(text):
            m.update(s.encode("utf-8"))
        mhs.append(m)
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    for i, m in enumerate(mhs):
        lsh.insert(i, m)
    t2 = time.perf_counter()
    n = len(mhs)
    uf = _UF(n)
    cand = 0
    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            if j != i:
                cand += 1
                uf.union(i, j)
    t3 = time.perf_counter()
    dropped = _dropped_from_uf(uf, n)
    t4 = time.perf_counter()
    cpu = time.process_time() - c0
    peak = _self_peak_mib()
    _write_dropped(out, dropped)
    return {
        "imports_s": round(imports, 3), "quiet_wait": qw, "loadavg_at_start": load,
        "phases_s": {"read+signatures": round(t1 - t0, 3), "lsh_insert": round(t2 - t1, 3),
                     "lsh_query+union": round(t3 - t2, 3), "components": round(t4 - t3, 3)},
        "wall_s": round(t4 - t0, 3), "cpu_s": round(cpu, 2), "peak_rss_self_mib": peak,
        "records": n, "bands_rows": [lsh.b, lsh.r], "candidate_links": cand, "dropped": len(dropped),
    }


def w_rensa_lsh(inp: str, out: str, quiet: tuple[float, float], marker: str | None) -> dict:
    t_imp = time.perf_counter()
    from rensa import RMinHash, RMinHashLSH

    imports = time.perf_counter() - t_imp
    qw = wait_for_quiet(*quiet)
    _started(marker)
    load = [round(x, 2) for x in os.getloadavg()]
    c0, t0 = time.process_time(), time.perf_counter()
    mhs = []
    for text in _read_texts(inp):
        m = RMinHash(num_perm=NUM_PERM, seed=SEED)
        m.update(word_shingles(text))
        mhs.append(m)
    t1 = time.perf_counter()
    lsh = RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=16)
    lsh.insert_many(mhs)
    t2 = time.perf_counter()
    n = len(mhs)
    uf = _UF(n)
    cand = 0
    for i, js in enumerate(lsh.query_all(mhs)):
        for j in js:
            if j != i:
                cand += 1
                uf.union(i, j)
    t3 = time.perf_counter()
    dropped = _dropped_from_uf(uf, n)
    t4 = time.perf_counter()
    cpu = time.process_time() - c0
    peak = _self_peak_mib()
    _write_dropped(out, dropped)
    return {
        "imports_s": round(imports, 3), "quiet_wait": qw, "loadavg_at_start": load,
        "phases_s": {"read+signatures": round(t1 - t0, 3), "lsh_insert": round(t2 - t1, 3),
                     "lsh_query+union": round(t3 - t2, 3), "components": round(t4 - t3, 3)},
        "wall_s": round(t4 - t0, 3), "cpu_s": round(cpu, 2), "peak_rss_self_mib": peak,
        "records": n, "bands": lsh.get_num_bands(), "candidate_links": cand, "dropped": len(dropped),
    }


def w_rensa_dedup(inp: str, out: str, quiet: tuple[float, float], marker: str | None) -> dict:
    t_imp = time.perf_counter()
    from rensa import RMinHashDeduplicator

    imports = time.perf_counter() - t_imp
    qw = wait_for_quiet(*quiet)
    _started(marker)
    load = [round(x, 2) for x in os.getloadavg()]
    c0, t0 = time.process_time(), time.perf_counter()
    dedup = RMinHashDeduplicator(threshold=THRESHOLD, num_perm=NUM_PERM, use_lsh=True, seed=SEED)
    keep = dedup.add_pairs((str(i), word_shingles(t)) for i, t in enumerate(_read_texts(inp)))
    dropped = [i for i, k in enumerate(keep) if not k]
    t1 = time.perf_counter()
    cpu = time.process_time() - c0
    peak = _self_peak_mib()
    _write_dropped(out, dropped)
    return {
        "imports_s": round(imports, 3), "quiet_wait": qw, "loadavg_at_start": load,
        "phases_s": {"read+signatures+dedup": round(t1 - t0, 3)},
        "wall_s": round(t1 - t0, 3), "cpu_s": round(cpu, 2), "peak_rss_self_mib": peak,
        "records": len(keep), "dropped": len(dropped),
    }


def _write_dropped(out: str, dropped: list[int]) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "dropped.json").write_text(json.dumps(dropped))


def worker(method: str, inp: str, out: str, quiet: tuple[float, float], marker: str | None) -> int:
    res = globals()[f"w_{method}"](inp, out, quiet, marker)
    res["method"] = method
    print(RESULT_TAG + json.dumps(res), flush=True)
    return 0


# ============================================================================================
# Parent side


class TreeRssSampler(threading.Thread):
    """Polls the summed RSS of a process and its descendants every `interval` s; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            try:
                total = 0
                for p in [root] + root.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
                self.samples += 1
            except psutil.Error:
                return
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def run_one(method: str, inp: Path, out: Path, args, log: Path, tag: str, timeout: float | None) -> dict:
    python = sys.executable if method == "ours" else args.peers_python
    env = dict(os.environ)
    if method == "ours":
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if out.exists():
        shutil.rmtree(out)
    marker = log / f"{tag}.started"
    marker.unlink(missing_ok=True)
    cmd = ["flock", LOCK, python, str(Path(__file__).resolve()), "--worker", method, "--input", str(inp),
           "--out", str(out), "--quiet-threshold", str(args.quiet_threshold), "--quiet-max-wait",
           str(args.quiet_max_wait), "--marker", str(marker)]
    rec = {"method": method, "command": shlex.join(cmd), "uptime_before": cmd_out(["uptime"]),
           "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    os.sync()
    with open(log / f"{tag}.stdout", "wb") as so, open(log / f"{tag}.stderr", "wb") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, cwd=str(REPO), env=env, start_new_session=True)
        sampler = TreeRssSampler(proc.pid, 0.1)
        sampler.start()
        killed = {"v": False}
        exited = threading.Event()
        busy0 = {"v": None, "t": None}

        def watchdog():
            while not exited.is_set():  # never poll()/waitpid here: wait4 must reap the child for its rusage
                if marker.exists():
                    if busy0["v"] is None:
                        busy0["v"], busy0["t"] = _busy(), time.perf_counter()
                    if timeout is not None and time.perf_counter() - busy0["t"] > timeout:
                        killed["v"] = True
                        os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group only
                        return
                exited.wait(0.2)

        wd = threading.Thread(target=watchdog, daemon=True)
        wd.start()
        _, status, ru = os.wait4(proc.pid, 0)
        exited.set()
        outer = time.perf_counter() - t0
        busy1, t_end = _busy(), time.perf_counter()
        sampler.stop()
        wd.join()
    code = os.waitstatus_to_exitcode(status)
    own_cpu = ru.ru_utime + ru.ru_stime
    rec.update({
        "returncode": code, "outer_wall_incl_lock_and_quiet_wait_s": round(outer, 2),
        "peak_rss_wait4_mib": round(ru.ru_maxrss / 1024, 1),
        "peak_tree_rss_sampled_mib": round(sampler.peak / MiB, 1), "rss_samples": sampler.samples,
        "cpu_user_s": round(ru.ru_utime, 2), "cpu_sys_s": round(ru.ru_stime, 2),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    })
    if busy0["v"] is not None:
        span = t_end - busy0["t"]
        # everything the machine did from our clock start to exit, minus our whole process (imports are before)
        rec["other_cores_busy_approx"] = round(max(0.0, (busy1 - busy0["v"]) - own_cpu) / span, 2) if span > 0 else None
    if killed["v"]:
        rec["error"] = f"timeout after {timeout:.0f} s of work: killed"
        rec["timed_out"] = True
        return rec
    lines = [ln for ln in (log / f"{tag}.stdout").read_text(errors="replace").splitlines() if ln.startswith(RESULT_TAG)]
    if code != 0 or not lines:
        rec["error"] = (log / f"{tag}.stderr").read_text(errors="replace")[-3000:]
        return rec
    rec.update(json.loads(lines[-1][len(RESULT_TAG):]))
    rec["cpu_per_wall"] = round(rec["cpu_s"] / rec["wall_s"], 2) if rec.get("wall_s") else None
    return rec


def truth(inp: Path, work: Path):
    """(cluster index per doc) from the corpus, cached as .npy next to it."""
    import numpy as np
    import polars as pl

    cache = work / f"{inp.stem}.truth.npz"
    if cache.exists():
        z = np.load(cache)
        return z["cluster"], z["is_copy"]
    df = pl.scan_ndjson(inp).select("id", "cluster", "edit").collect()
    idx = df["id"].str.slice(1).cast(pl.Int64).to_numpy()
    assert (idx == np.arange(len(idx))).all()
    cluster = df["cluster"].str.slice(1).cast(pl.Int64).to_numpy()
    is_copy = (df["edit"] != "original").to_numpy()
    np.savez(cache, cluster=cluster, is_copy=is_copy)
    return cluster, is_copy


def dropped_of(method: str, out: Path, n: int):
    import numpy as np
    import polars as pl

    mask = np.zeros(n, dtype=bool)
    if method == "ours":
        d = pl.read_parquet(out / "_work" / "decisions" / "*.parquet", columns=["record_id", "decision"])
        ids = d.filter(pl.col("decision").is_in(["dropped_duplicate", "dropped_near_duplicate"]))["record_id"]
        mask[ids.str.slice(1).cast(pl.Int64).to_numpy()] = True
        decisions = d["decision"].value_counts().sort("decision").to_dicts()
        return mask, decisions
    mask[np.array(json.loads((out / "dropped.json").read_text()), dtype=np.int64)] = True
    return mask, None


def score(mask, cluster, is_copy) -> dict:
    import numpy as np

    n = len(cluster)
    k = np.bincount(cluster, minlength=n)
    dropped_c = np.bincount(cluster[mask], minlength=n)
    members = k > 0
    redundant = int(np.sum(k[members] - 1))
    removed_ok = int(np.sum(np.minimum(dropped_c[members], k[members] - 1)))
    lost = int(np.sum(members & (dropped_c == k)))
    return {
        "dropped": int(mask.sum()),
        "true_redundant_docs": redundant,
        "duplicates_removed": removed_ok,
        "duplicates_removed_share": round(removed_ok / redundant, 4) if redundant else None,
        "true_clusters_lost_entirely": lost,
        "injected_copies": int(is_copy.sum()),
    }


def _peak(r: dict) -> float:
    """Peak RSS of a run: the worker's own ru_maxrss (kernel high-water mark, read when its stage
    ends) or the psutil-sampled tree peak, whichever is larger. Not wait4's ru_maxrss: a forked
    child starts with its parent's high-water mark (the kernel carries it across fork and exec),
    so for small workers wait4 reports this script's own RSS."""
    return max(r["peak_rss_self_mib"], r["peak_tree_rss_sampled_mib"])


def is_valid(rec: dict, args) -> bool:
    """Was the run free of heavy interference from work outside the lock? Ours uses both cores:
    the rest of the machine must have used at most --max-other-cores on average during its clock.
    A peer is (mostly) single-threaded: it must have had a whole core (CPU/wall >= --min-cpu-per-wall)."""
    if rec["method"] == "ours":
        o = rec.get("other_cores_busy_approx")
        return o is not None and o <= args.max_other_cores
    return (rec.get("cpu_per_wall") or 0) >= args.min_cpu_per_wall


def summarize(runs: list[dict], sizes: list[int], methods: list[str]) -> dict:
    out = {}
    for n in sizes:
        per = {}
        for m in methods:
            allr = [r for r in runs if r["size"] == n and r["method"] == m and "error" not in r]
            rs = [r for r in allr if r.get("valid")] or allr  # all attempts only when none was valid (flagged)
            skipped = [r for r in runs if r["size"] == n and r["method"] == m and r.get("skipped")]
            if not rs:
                if skipped:
                    per[m] = {"runs": 0, "skipped": skipped[0]["skipped"],
                              "extrapolated_wall_s": skipped[0].get("extrapolated_wall_s"),
                              "extrapolated_peak_rss_mib": skipped[0].get("extrapolated_peak_rss_mib")}
                failed = [r for r in runs if r["size"] == n and r["method"] == m and "error" in r and not r.get("skipped")]
                if failed:
                    per[m] = {"runs": 0, "error": failed[0]["error"][-300:]}
                continue
            v = {
                "runs": len(rs),
                "invalid_attempts": sum(1 for r in allr if not r.get("valid")),
                "only_invalid_runs": not any(r.get("valid") for r in allr),
                "wall_s": median([r["wall_s"] for r in rs]),
                "docs_per_s": round(n / median([r["wall_s"] for r in rs]), 1),
                "peak_rss_mib": median([_peak(r) for r in rs]),
                "peak_rss_self_mib": median([r["peak_rss_self_mib"] for r in rs]),
                "peak_rss_wait4_mib": median([r["peak_rss_wait4_mib"] for r in rs]),
                "peak_tree_rss_sampled_mib": median([r["peak_tree_rss_sampled_mib"] for r in rs]),
                "cpu_per_wall": median([r.get("cpu_per_wall") for r in rs]),
                "phases_s": {k: median([r["phases_s"][k] for r in rs]) for k in rs[0]["phases_s"]},
                "load1_at_start": [r["loadavg_at_start"][0] for r in rs],
                "other_cores_busy": [r.get("other_cores_busy_approx") for r in rs],
                "quality": rs[0].get("quality"),
            }
            if m == "ours":
                v["inner_s"] = {k: median([r["inner_s"][k] for r in rs]) for k in rs[0]["inner_s"]}
                v["near_dedup"] = {k: rs[0]["barrier"]["near_dedup"].get(k) for k in
                                   ("bands", "rows", "candidate_pairs", "verified_pairs", "clusters", "dropped")}
                v["exact_dropped"] = rs[0]["barrier"]["exact_dropped"]
                v["units"] = rs[0]["units"]
            per[m] = v
        out[str(n)] = per
    # growth 10x steps
    growth = {}
    for m in methods:
        g = []
        for a, b in zip(sizes, sizes[1:]):
            va, vb = out[str(a)].get(m, {}), out[str(b)].get(m, {})
            ta = va.get("wall_s") or va.get("extrapolated_wall_s")
            tb = vb.get("wall_s") or vb.get("extrapolated_wall_s")
            ra = va.get("peak_rss_mib") or va.get("extrapolated_peak_rss_mib")
            rb = vb.get("peak_rss_mib") or vb.get("extrapolated_peak_rss_mib")
            g.append({"from": a, "to": b, "time_x": round(tb / ta, 2) if ta and tb else None,
                      "peak_rss_x": round(rb / ra, 2) if ra and rb else None,
                      "extrapolated": bool(vb.get("skipped"))})
        growth[m] = g
    return {"by_size": out, "growth": growth}


def markdown(summary: dict, sizes: list[int], methods: list[str], tgt: dict) -> str:
    L = ["| docs | method | runs | wall s | docs/s | peak RSS MiB | CPU/wall | phases (median s) | dropped | dup removed | clusters lost | load1 at start | other cores busy | invalid attempts |",
         "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|"]
    for n in sizes:
        for m in methods:
            v = summary["by_size"][str(n)].get(m)
            if v is None:
                continue
            if v.get("runs", 0) == 0:
                what = (f"not run ({v['skipped']}); extrapolated ≈ {fmt(v.get('extrapolated_wall_s'), 0)} s, "
                        f"≈ {fmt(v.get('extrapolated_peak_rss_mib'), 0)} MiB") if v.get("skipped") else f"failed: {v.get('error', '')[:120]}"
                L.append(f"| {n:,} | {m} | 0 | {what} | | | | | | | | | | |")
                continue
            ph = ", ".join(f"{k} {x:.1f}" for k, x in v["phases_s"].items())
            if "inner_s" in v:
                ph += " (" + ", ".join(f"{k} {x:.1f}" for k, x in v["inner_s"].items()) + ")"
            q = v.get("quality") or {}
            L.append(f"| {n:,} | {m} | {v['runs']} | {fmt(v['wall_s'], 2)} | {fmt(v['docs_per_s'], 0)} | "
                     f"{fmt(v['peak_rss_mib'], 0)} | {fmt(v['cpu_per_wall'], 2)} | {ph} | {fmt(q.get('dropped'))} | "
                     f"{fmt(q.get('duplicates_removed_share'), 3)} | {fmt(q.get('true_clusters_lost_entirely'))} | "
                     f"{', '.join(f'{x:.2f}' for x in v['load1_at_start'])} | "
                     f"{', '.join('-' if x is None else f'{x:.2f}' for x in v['other_cores_busy'])} | "
                     f"{v['invalid_attempts']}{' (no valid run!)' if v['only_invalid_runs'] else ''} |")
    L.append("\nGrowth per 10× documents (time ×, peak RSS ×; * = from an extrapolation):\n")
    L.append("| method | " + " | ".join(f"{a:,} → {b:,}" for a, b in zip(sizes, sizes[1:])) + " |")
    L.append("|---|" + "---|" * (len(sizes) - 1))
    for m in methods:
        cells = [f"{fmt(g['time_x'], 2)} / {fmt(g['peak_rss_x'], 2)}{' *' if g['extrapolated'] else ''}" for g in summary["growth"][m]]
        L.append(f"| {m} | " + " | ".join(cells) + " |")
    if tgt:
        L.append("")
        for k, t in tgt.items():
            verdict = "n/a (the target is for 1,000,000 docs)" if t["met"] is None else ("met" if t["met"] else "MISSED")
            L.append(f"- target {k}: {t['value']} vs {t['target']} → **{verdict}**")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--marker", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=3, help="runs of ours per size")
    ap.add_argument("--peer-repeats", type=int, default=3, help="runs of each peer per size (1 when 3 would exceed --peer-budget-s)")
    ap.add_argument("--peer-budget-s", type=float, default=900.0)
    ap.add_argument("--peer-max-seconds", type=float, default=600.0,
                    help="skip (and extrapolate) a peer run whose estimate exceeds this; also its kill timeout x1.5")
    ap.add_argument("--work", type=Path, default=Path("/tmp/neardup-bench"))
    ap.add_argument("--peers-python", default="/tmp/peers-speed/bin/python")
    ap.add_argument("--quiet-threshold", type=float, default=0.3)
    ap.add_argument("--quiet-max-wait", type=float, default=90.0)
    ap.add_argument("--max-other-cores", type=float, default=0.5,
                    help="ours: a run during which the rest of the machine used more cores than this is retried")
    ap.add_argument("--min-cpu-per-wall", type=float, default=0.85,
                    help="peers: a run with a lower CPU/wall did not get a whole core and is retried")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--retry-max-wall-s", type=float, default=300.0, help="runs longer than this are not retried")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of ours")
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--results", default=None)
    args = ap.parse_args(argv)

    if args.worker:
        return worker(args.worker, args.input, args.out, (args.quiet_threshold, args.quiet_max_wait), args.marker)

    sizes = [int(x) for x in args.sizes.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    info = machine_info(args.peers_python)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / f"scale-logs-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    log.mkdir()
    corpora = {}
    for n in sizes:
        path = args.work / f"corpus-{n}-{CORPUS_LIMITS}.jsonl"  # the generator's settings in the name: no stale cache
        if not path.exists():
            subprocess.run(["flock", LOCK, sys.executable, str(HERE / "neardup_corpus.py"), "--docs", str(n),
                            "--out", str(path)], check=True)
        corpora[n] = {"path": str(path), "bytes": path.stat().st_size}
    runs: list[dict] = []
    warmup = None
    if "ours" in methods and not args.no_warmup:
        # One untimed run first: numba compiles (and caches) any kernel whose cache is stale, which
        # would otherwise land on the first timed run's clock.
        wout = args.work / "scale-out" / "warmup"
        warmup = run_one("ours", Path(corpora[min(sizes)]["path"]), wout, args, log, "warmup-ours", None)
        shutil.rmtree(wout, ignore_errors=True)
        print(f"[warm-up] wall {warmup.get('wall_s')} s {warmup.get('error', '')[-300:]}", file=sys.stderr, flush=True)
    for n in sizes:
        inp = Path(corpora[n]["path"])
        cluster, is_copy = truth(inp, args.work)
        with open(inp, "rb") as f:  # warm the page cache (all runs start warm)
            while f.read(64 * MiB):
                pass
        corpora[n]["docs"] = int(len(cluster))
        for m in methods:
            reps = args.repeats if m == "ours" else args.peer_repeats
            timeout = None
            if m != "ours":
                prev = [r for r in runs if r["method"] == m and "error" not in r and not r.get("skipped")]
                prev = [r for r in prev if r.get("valid")] or prev
                if prev:
                    pn = max(r["size"] for r in prev)
                    pr = [r for r in prev if r["size"] == pn]
                    est = median([r["wall_s"] for r in pr]) * n / pn
                    est_rss = median([_peak(r) for r in pr])
                    base = 60.0  # interpreter + libraries, roughly, does not grow with n
                    est_rss = base + (est_rss - base) * n / pn
                    if est > args.peer_max_seconds:
                        runs.append({"size": n, "method": m, "skipped": f"estimate {est:.0f} s > {args.peer_max_seconds:.0f} s",
                                     "extrapolated_wall_s": round(est, 1), "extrapolated_peak_rss_mib": round(est_rss, 0),
                                     "extrapolated_from": pn, "error": "skipped"})
                        print(f"[{n} {m}] skipped: estimate {est:.0f} s", file=sys.stderr, flush=True)
                        continue
                    if est * reps > args.peer_budget_s:
                        reps = 1
                    timeout = max(args.peer_max_seconds, est * 2) * 1.5
                else:
                    timeout = args.peer_max_seconds * 1.5
            for rep in range(reps):
                for attempt in range(args.retries + 1):
                    tag = f"{n}-{m}-r{rep}-a{attempt}"
                    out = args.work / "scale-out" / tag
                    rec = run_one(m, inp, out, args, log, tag, timeout)
                    rec.update({"size": n, "repeat": rep, "attempt": attempt, "input_bytes": corpora[n]["bytes"]})
                    if "error" not in rec:
                        mask, dec = dropped_of(m, out, len(cluster))
                        rec["quality"] = score(mask, cluster, is_copy)
                        if dec is not None:
                            rec["decision_counts"] = dec
                        rec["valid"] = is_valid(rec, args)
                    if not args.keep_outputs and out.exists():
                        shutil.rmtree(out)
                    runs.append(rec)
                    if "error" in rec:
                        msg = "ERROR " + rec["error"][-400:]
                    else:
                        msg = (f"wall {rec['wall_s']} s {rec['phases_s']} {rec.get('inner_s', '')} rss self/tree/wait4 "
                               f"{rec['peak_rss_self_mib']}/{rec['peak_tree_rss_sampled_mib']}/{rec['peak_rss_wait4_mib']} MiB "
                               f"cpu/wall {rec['cpu_per_wall']} other {rec.get('other_cores_busy_approx')} "
                               f"quiet {rec['quiet_wait']} q {rec['quality']}" + ("" if rec["valid"] else " INVALID"))
                    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)
                    # retry a contended run unless it was long (then it is kept, flagged)
                    if "error" in rec or rec["valid"] or rec["wall_s"] > args.retry_max_wall_s:
                        break
                if rec.get("timed_out"):
                    break

    summary = summarize(runs, sizes, methods)
    tgt = {}
    top = str(max(sizes))
    o = summary["by_size"][top].get("ours")
    if o and o.get("runs"):
        tgt[f"ours wall at {int(top):,} docs"] = {"value": f"{o['wall_s']:.1f} s", "target": f"< {TARGET_WALL_S:.0f} s",
                                                  "met": (o["wall_s"] < TARGET_WALL_S) if int(top) >= 1_000_000 else None}
        tgt[f"ours peak RSS at {int(top):,} docs"] = {"value": f"{o['peak_rss_mib'] / 1024:.2f} GiB",
                                                      "target": f"< {TARGET_RSS_GIB:.0f} GiB",
                                                      "met": (o["peak_rss_mib"] / 1024 < TARGET_RSS_GIB) if int(top) >= 1_000_000 else None}
    info["uptime_after"] = cmd_out(["uptime"])
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    info["pipeline_sha256_after"] = pipeline_digest()
    result = {
        "benchmark": "neardup-scale",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command_line": shlex.join([sys.executable, *sys.argv]),
        "machine": info,
        "settings": {"threshold": THRESHOLD, "num_perm": NUM_PERM, "seed": SEED, "lock": LOCK,
                     "ours_dedup_overrides": json.loads(os.environ.get("HYGIENE_BENCH_OURS_DEDUP", "{}")),
                     "repeats_ours": args.repeats, "peer_repeats": args.peer_repeats,
                     "peer_budget_s": args.peer_budget_s, "peer_max_seconds": args.peer_max_seconds,
                     "quiet_threshold_cores": args.quiet_threshold, "quiet_max_wait_s": args.quiet_max_wait,
                     "max_other_cores_ours": args.max_other_cores, "min_cpu_per_wall_peers": args.min_cpu_per_wall,
                     "retries": args.retries, "retry_max_wall_s": args.retry_max_wall_s,
                     "page_cache": "warm (input read once before the runs of each size)",
                     "timing": "in the worker after imports and the quiet wait; ours = plan + pass1 + barrier"},
        "corpora": corpora,
        "warmup_run_untimed": warmup,
        "runs": runs,
        "summary": summary,
        "targets": tgt,
    }
    out = results_path("neardup-scale", args.results)
    out.write_text(json.dumps(result, indent=2))
    print(markdown(summary, sizes, methods, tgt))
    print(f"\nresults: {out}")
    return 1 if any("error" in r and not r.get("skipped") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
