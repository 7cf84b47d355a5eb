#!/usr/bin/env python
"""The barrier at 100k / 1M / 10M documents: the single-task barrier of the code before issue #19
part 3 against the partitioned one (ids-part, exact-part, lsh-band tasks, then the global step,
which decides unit by unit when every barrier stage decides from the partition outputs).

The key files are generated at the signature level (no JSONL, no pass 1): per unit of
--unit-docs documents, `pass1/uNNNNN.parquet` (the key rows pass 1 writes: row, record id,
location, random content digest and exact key, text bytes, order columns), its done-marker and
schema, `minhash/uNNNNN.sig` (128 uint32 per document) and `minhash/uNNNNN.parquet` (unit, row,
shingles, the default config's band keys (`near.banding`) from `pipeline.dedup.lsh.band_keys`). The plan is a real `make_plan`
over one tiny JSONL file per unit, so every step from the key files on is the pipeline's own code.
Documents: originals with random signatures; --exact-share exact copies (same key, same signature)
and --near-share near copies (the signature of an earlier document with 10% of its positions
redrawn: estimated Jaccard about 0.9) of a random earlier document, anywhere in the corpus (so
clusters cross units and partitions).

Every measured piece runs in a fresh subprocess (`--python`, one after the other):

  old   the single-task barrier from a `git archive` of --old-commit (default: the commit before
        this work), `barrier(work)`
  new   `plan_parts`, then each task of ids-part, exact-part, lsh-band and boilerplate-part (the
        code's that have it) in its own process, then
        the near-duplicate groups' plan (`near-groups`), each `near-group` task, the numbering
        (`near-number`), each `near-relabel` task and each `near-repoint` task (the exact copies
        re-pointed past a near-dropped survivor), then the global
        `barrier(work)` step (unit by unit: the default config has exact and near dedup; it merges
        the groups' verdicts)
  whole (--whole-frame-up-to) after `new`, on the same partition outputs: the global step forced onto
        the whole-frame path (`barrier(work, whole_frame=True)`, one key row per record), whose
        decisions and shard plan are compared byte for byte with the unit-by-unit step's

Per process: the wall time of the call (imports excluded, measured inside) and its peak RSS
(`VmHWM` of /proc/self/status at its end: the high-water mark of the process's own memory since
its exec, the interpreter and its imports included; a process that only imports is measured too as
the baseline). Not `getrusage().ru_maxrss`: Linux carries the parent's high-water mark at fork
across the exec, so every child would report at least the generator's footprint. After both, the decisions files
(`decisions/uNNNNN.parquet`) of old and new are compared byte for byte.

Usage::

    .venv/bin/python bench/barrier_scale.py --sizes 100000 1000000
    .venv/bin/python bench/barrier_scale.py --sizes 10000000 --skip-old --parts-only   # the tasks only
    .venv/bin/python bench/barrier_scale.py --sizes 1000000 10000000 --skip-old --whole-frame-up-to 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_info, results_path  # noqa: E402

OLD_COMMIT = "dcaac3a"

CHILD = r"""
import importlib, json, os, sys, time
what, work = sys.argv[1], sys.argv[2]
for name, value in json.loads(os.environ.get("BENCH_CONSTANTS", "{}")).items():  # --constant
    module, attr = name.rsplit(".", 1)
    setattr(importlib.import_module(module), attr, value)
t0 = time.perf_counter()
if what == "imports":
    from pipeline.run.barrier import barrier  # noqa: F401
    result = None
elif what in ("barrier", "barrier-whole"):
    from pipeline.run.barrier import barrier
    t0 = time.perf_counter()
    result = barrier(work, whole_frame=True) if what == "barrier-whole" else barrier(work)
    result = {"near_dedup": {k: (result.get("near_dedup") or {}).get(k) for k in ("candidate_pairs", "verified_pairs", "clusters", "dropped", "groups")},
              "exact_dropped": result.get("exact_dropped"), "rejected": result.get("rejected")}
elif what == "plan_parts":
    from pipeline.run.barrier_parts import plan_parts
    t0 = time.perf_counter()
    p = plan_parts(work)
    result = {k: p.get(k, 0) for k in ("ids-part", "exact-part", "lsh-band", "boilerplate-part", "near-repoint",
                                         "key_ranges")} | {"band_groups": len(p["band_groups"])}
elif what == "near-groups":
    from pipeline.run.near_groups import plan_near_groups
    t0 = time.perf_counter()
    p = plan_near_groups(work)
    result = {"groups": p["groups"], "grouping": p.get("grouping")}
elif what == "near-group":
    from pipeline.run.near_groups import run_near_group
    t0 = time.perf_counter()
    result = run_near_group(work, int(sys.argv[3]))
elif what in ("near-number", "near-relabel"):
    from pipeline.run.near_groups import run_near_step
    t0 = time.perf_counter()
    result = run_near_step(work, what, int(sys.argv[3]) if len(sys.argv) > 3 else None)
elif what == "near-repoint":
    from pipeline.run.near_groups import run_near_repoint
    t0 = time.perf_counter()
    result = run_near_repoint(work, int(sys.argv[3]))
else:
    from pipeline.run.barrier_parts import run_part
    t0 = time.perf_counter()
    result = run_part(work, what, int(sys.argv[3]))
wall = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print("RESULT " + json.dumps({"wall_s": round(wall, 3), "peak_rss_mib": round(hwm / 1024, 1), "result": result}))
"""


# Module constants every measured process sets before it runs (`--constant`), e.g. fewer records
# per partition, to see how a step's memory goes with the number of partitions at a smaller size.
CONSTANTS: dict[str, int] = {}


def child(python: str, tree: Path, args: list[str]) -> dict:
    """Run one measured piece in a fresh process with `tree` first on the path."""
    t0 = time.perf_counter()
    r = subprocess.run([python, "-c", CHILD, *args], capture_output=True, text=True, cwd=str(tree),
                       env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": "/tmp",
                            "BENCH_CONSTANTS": json.dumps(CONSTANTS)})
    if r.returncode != 0:
        raise RuntimeError(f"{args}: {r.stderr[-3000:]}")
    out = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
    out["process_wall_s"] = round(time.perf_counter() - t0, 3)
    return out


def generate(root: Path, n: int, unit_docs: int, exact_share: float, near_share: float, seed: int) -> Path:
    """A planned run whose pass 1 is replaced by generated key files; returns its scratch space."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.config import parse_config
    from pipeline.dedup.lsh import band_keys
    from pipeline.dedup.near import banding
    from pipeline.plan import make_plan
    from pipeline.run.pass1 import KEYS_SCHEMA
    from pipeline.run.workdir import unit_name, write_schema

    rng = np.random.default_rng(seed)
    units = math.ceil(n / unit_docs)
    inputs = root / "in"
    inputs.mkdir(parents=True)
    for u in range(units):
        (inputs / f"f{u:05d}.jsonl").write_text('{"text": "x"}\n')
    cfg = parse_config({"sources": [{"name": "g", "kind": "jsonl", "paths": [str(inputs)]}],
                        "output": {"dir": str(root / "out")},
                        # the generated runs have signatures but no texts to re-check borderline pairs on
                        "dedup": {"near": {"verify": "signature"}}}, "bench")
    plan = make_plan(cfg)
    work = plan.work_dir
    bd = banding(cfg.dedup.near)
    (work / "pass1").mkdir(exist_ok=True)
    (work / "minhash").mkdir(exist_ok=True)
    kind = rng.random(n)
    exact = kind < exact_share
    near = (kind >= exact_share) & (kind < exact_share + near_share)
    exact[0] = near[0] = False
    source = np.where(exact | near, (rng.random(n) * np.arange(n)).astype(np.int64), -1)  # an earlier document
    keys = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    text_bytes = rng.integers(200, 5000, n)
    # Signatures per document (in a file-backed array: 5 GB at 10M), copies resolved in order (a
    # copy of a copy copies the copy).
    sig = np.lib.format.open_memmap(root / "sig.npy", mode="w+", dtype=np.uint32, shape=(n, 128))
    for a in range(0, n, 1_000_000):
        sig[a : a + 1_000_000] = rng.integers(0, 2**32, size=(min(n, a + 1_000_000) - a, 128), dtype=np.uint32)
    for i in np.flatnonzero(exact | near):
        s = source[i]
        sig[i] = sig[s]
        if exact[i]:
            keys[i] = keys[s]
            text_bytes[i] = text_bytes[s]
        else:
            redraw = rng.random(128) < 0.1
            sig[i, redraw] = rng.integers(0, 2**32, int(redraw.sum()), dtype=np.uint32)
    schema = pa.schema([("unit", pa.int64()), ("row", pa.int64()), ("shingles", pa.int64())]
                       + [(f"b{k:02d}", pa.uint64()) for k in range(bd.bands)])
    for unit in plan.units:
        a, b = unit.unit_id * unit_docs, min(n, (unit.unit_id + 1) * unit_docs)
        m = b - a
        rows = np.arange(m, dtype=np.int64)
        prefix = f"g/{unit.relpath}"
        rid = [f"{prefix}:{r}" for r in range(m)]
        cols = {f.name: pa.nulls(m, f.type) for f in KEYS_SCHEMA}
        cols.update({"row": pa.array(rows), "record_id": pa.array(rid), "location": pa.array(rid),
                     "content_sha256": pa.array(list(map(bytes, keys[a:b])), pa.binary(32)),
                     "key": pa.array(list(map(bytes, keys[a:b])), pa.binary(32)),
                     "text_bytes": pa.array(text_bytes[a:b]), "order_str": pa.array([prefix] * m),
                     "order_int": pa.array(rows)})
        pq.write_table(pa.table(cols, schema=KEYS_SCHEMA), work / "pass1" / f"{unit_name(unit.unit_id)}.parquet",
                       compression="lz4", use_dictionary=False, write_statistics=False)
        (work / "pass1" / f"{unit_name(unit.unit_id)}.json").write_text(json.dumps({"unit_id": unit.unit_id, "records": m}))
        write_schema(work / "pass1" / f"{unit_name(unit.unit_id)}.schema", pa.schema([("text", pa.string())]))
        s = np.ascontiguousarray(sig[a:b])
        s.tofile(work / "minhash" / f"{unit_name(unit.unit_id)}.sig")
        bk = band_keys(s, bd.bands, bd.rows)
        t = {"unit": np.full(m, unit.unit_id, np.int64), "row": rows, "shingles": np.full(m, 300, np.int64)}
        t.update({f"b{k:02d}": bk[:, k] for k in range(bd.bands)})
        pq.write_table(pa.table(t, schema=schema), work / "minhash" / f"{unit_name(unit.unit_id)}.parquet", compression="zstd")
    del sig
    (root / "sig.npy").unlink()
    return work


def clear_barrier(work: Path) -> None:
    """Remove what a barrier (old or new) wrote, keeping the key files."""
    for name in ("barrier", "barrier.json", "decisions", "shards.json", "output.schema", "near"):
        p = work / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def clear_global(work: Path) -> None:
    """Remove what the global step wrote, keeping the partition outputs."""
    for name in ("barrier.json", "decisions", "shards.json", "output.schema", "near"):
        p = work / name
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def digests(work: Path) -> dict[str, str]:
    files = sorted((work / "decisions").glob("*.parquet")) + [work / "shards.json"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_new(python: str, work: Path, with_global: bool = True) -> dict:
    plan = child(python, REPO, ["plan_parts", str(work)])
    tasks = []
    for name in ("ids-part", "exact-part", "lsh-band", "boilerplate-part"):
        for item in range(plan["result"].get(name, 0)):
            r = child(python, REPO, [name, str(work), str(item)])
            tasks.append({"step": name, "item": item, "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"],
                          "process_wall_s": r["process_wall_s"]})
    if with_global:  # the near-duplicate groups: the plan (one task), then a task per group
        groups = child(python, REPO, ["near-groups", str(work)])
        tasks.append({"step": "near-groups", "item": 0, "wall_s": groups["wall_s"], "peak_rss_mib": groups["peak_rss_mib"],
                      "process_wall_s": groups["process_wall_s"]})
        numbered = "near-number" in (REPO / "pipeline" / "run" / "near_groups.py").read_text()  # (code before: none)
        for step in ("near-group", "near-number", "near-relabel") if numbered else ("near-group",):
            for item in range(groups["result"]["groups"]) if step != "near-number" else [None]:
                r = child(python, REPO, [step, str(work)] + ([] if item is None else [str(item)]))
                tasks.append({"step": step, "item": item or 0, "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"],
                              "process_wall_s": r["process_wall_s"]})
        for item in range(plan["result"].get("near-repoint", 0)):  # the exact copies re-pointed (code before: none)
            r = child(python, REPO, ["near-repoint", str(work), str(item)])
            tasks.append({"step": "near-repoint", "item": item, "wall_s": r["wall_s"], "peak_rss_mib": r["peak_rss_mib"],
                          "process_wall_s": r["process_wall_s"]})
    glob = child(python, REPO, ["barrier", str(work)]) if with_global else None
    steps = {}
    for t in tasks:
        s = steps.setdefault(t["step"], {"tasks": 0, "wall_s_sum": 0.0, "wall_s_max": 0.0, "peak_rss_mib_max": 0.0})
        s["tasks"] += 1
        s["wall_s_sum"] = round(s["wall_s_sum"] + t["wall_s"], 3)
        s["wall_s_max"] = max(s["wall_s_max"], t["wall_s"])
        s["peak_rss_mib_max"] = max(s["peak_rss_mib_max"], t["peak_rss_mib"])
    if glob is not None:
        steps["barrier (global)"] = {"tasks": 1, "wall_s_sum": glob["wall_s"], "wall_s_max": glob["wall_s"],
                                     "peak_rss_mib_max": glob["peak_rss_mib"]}
    return {"plan": plan["result"], "tasks": tasks, "steps": steps, "global": glob,
            "wall_s_one_worker": round(sum(t["wall_s"] for t in tasks) + (glob["wall_s"] if glob else 0), 3),
            "largest_task_peak_rss_mib": max([t["peak_rss_mib"] for t in tasks] + ([glob["peak_rss_mib"]] if glob else [])),
            "largest_part_task_peak_rss_mib": max(t["peak_rss_mib"] for t in tasks
                                             if t["step"] in ("ids-part", "exact-part", "lsh-band", "boilerplate-part"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--unit-docs", type=int, default=100_000)
    ap.add_argument("--exact-share", type=float, default=0.1)
    ap.add_argument("--near-share", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--work", default="/tmp/barrier-scale")
    ap.add_argument("--old-commit", default=OLD_COMMIT)
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--parts-only", action="store_true",
                    help="run the partitioned tasks but not the global step (whose memory still grows with the corpus)")
    ap.add_argument("--whole-frame-up-to", type=int, default=0, metavar="DOCS",
                    help="at sizes up to DOCS, run the global step on its whole-frame path too (after the new "
                         "steps) and compare (it holds about 1.3 KiB per record)")
    ap.add_argument("--constant", nargs=2, action="append", default=[], metavar=("MODULE.NAME", "INT"),
                    help="set an int constant in every measured process, e.g. "
                         "pipeline.run.barrier_parts.PART_RECORDS 50000 (more partitions at this size)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--out")
    args = ap.parse_args()
    CONSTANTS.update({name: int(value) for name, value in args.constant})
    base = Path(args.work)
    old_tree = base / f"old-{args.old_commit}"
    if not args.skip_old and not old_tree.exists():
        old_tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.old_commit, "pipeline"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
    info = machine_info(("polars", "pyarrow", "numpy", "numba"))
    results = {"benchmark": "barrier-scale", "machine": info, "args": vars(args), "runs": []}
    out = results_path("barrier-scale", args.out)
    for n in args.sizes:
        root = base / f"n{n}"
        if root.exists():
            shutil.rmtree(root)
        t0 = time.perf_counter()
        work = generate(root, n, args.unit_docs, args.exact_share, args.near_share, args.seed)
        run = {"docs": n, "units": math.ceil(n / args.unit_docs), "generate_s": round(time.perf_counter() - t0, 1),
               "baseline_imports": child(args.python, REPO, ["imports", str(work)])}
        if not args.skip_old:
            run["old"] = child(args.python, old_tree, ["barrier", str(work)])
            old_digests = digests(work)
            clear_barrier(work)
        run["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        run["new"] = run_new(args.python, work, not args.parts_only)
        if n <= args.whole_frame_up_to and not args.parts_only:
            new_digests = digests(work)
            clear_global(work)
            run["whole_frame"] = child(args.python, REPO, ["barrier-whole", str(work)])
            run["whole_frame_byte_identical"] = digests(work) == new_digests
            run["whole_frame_same_counts"] = run["whole_frame"]["result"] == run["new"]["global"]["result"]
        if not args.skip_old:
            run["decisions_byte_identical"] = digests(work) == old_digests
            run["same_counts"] = run["old"]["result"] == run["new"]["global"]["result"]
        run["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        results["runs"].append(run)
        out.write_text(json.dumps(results, indent=1))
        print(json.dumps({k: v for k, v in run.items() if k != "new"} | {"new": {k: run["new"][k] for k in (
            "plan", "steps", "wall_s_one_worker", "largest_task_peak_rss_mib")}}, indent=1), flush=True)
        shutil.rmtree(root)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
