#!/usr/bin/env python
"""Prefect's fixed cost per `hygiene run`: the same 20k-document run with and without Prefect,
through each Prefect API, in one invocation (issue #19 part 5).

    .venv/bin/python bench/prefect_overhead.py                         # 3 rounds
    .venv/bin/python bench/prefect_overhead.py --before /tmp/hygiene-main   # also the code before this work

Corpus: `gen_corpus.py` (Gutenberg prose, about 5% exact copies), --size-mb 59 in 8 files:
20,116 documents. Config: configs/dedup-only.yaml (exact + near dedup) without its corpus index,
so that every run does the same work. Each run is `python -m pipeline.cli run CONFIG --input
CORPUS --output DIR` in its own process, timed from start to exit (what a user waits for):

  no-prefect        --no-prefect: the plain local executor (the reference of every ratio)
  ephemeral         --prefect-api ephemeral: Prefect's temporary API started inside the run
  local-cold        --prefect-api local with no server running (stopped before, untimed): the
                    run starts the persistent server (its database exists: not the first start)
  local-warm        --prefect-api local again: the server of local-cold is reused
  local-warm-hb     the same with PREFECT_FLOWS_HEARTBEAT_FREQUENCY=180: flow-run heartbeats on,
                    as before this work (shows what turning them off saves)
  before-ephemeral  with --before DIR: that checkout's code (e.g. `git archive main`), its
                    default (ephemeral, heartbeats on)

Every round runs every mode once, in an order rotated per round (the local modes keep their
cold, warm, warm-hb order); reported per mode: the median wall, the median of the per-round
differences and ratios against no-prefect of the same round, and the pipeline's own time from
the manifest. Every run's shards and ledger must equal the no-prefect run's byte for byte
(checked; the script stops if not). An untimed --no-prefect run of each code tree comes first
(numba compiles its kernels into a tree's caches on its first run). Also measured once: the server's very first start (fresh
database, `--prefect-api local` in an empty home), and Prefect's cost per task against the warm
server (a flow of N no-op tasks on the thread runner, as `flows/clean.py` submits them).

The server lives in --work/prefect-home (never the user's) and is stopped at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine_info, median, results_path  # noqa: E402
from gen_corpus import ensure_corpus  # noqa: E402
from throughput import wait_for_quiet  # noqa: E402

LOCAL_BLOCK = ("local-cold", "local-warm", "local-warm-hb")

TASKS_CHILD = r"""
import json, sys, time
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

@task(retries=2, retry_delay_seconds=1)
def noop(i: int) -> int:
    return i

@flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
def tasks(n: int) -> int:
    return sum(f.result() for f in [noop.submit(i) for i in range(n)])

tasks(1)  # the process's first flow also sets up its clients: not a per-task cost
out = {}
for n in [int(x) for x in sys.argv[1:]]:
    t0 = time.perf_counter()
    tasks(n)
    out[n] = time.perf_counter() - t0
print(json.dumps(out))
"""


def bench_config(work: Path) -> Path:
    """configs/dedup-only.yaml without `state` (a corpus index would make later runs skip their input)."""
    cfg = yaml.safe_load((REPO / "configs" / "dedup-only.yaml").read_text())
    cfg.pop("state", None)
    path = work / "prefect-overhead.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


def hygiene(code: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=str(code), env={**env, "PYTHONPATH": str(code)},
                         capture_output=True, text=True)
    if check and run.returncode != 0:
        raise SystemExit(f"hygiene {' '.join(args[:2])} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return run


def timed_run(code: Path, env: dict, config: Path, corpus: str, out: Path, extra: list[str]) -> dict:
    """One `hygiene run` in its own process: wall from start to exit, the pipeline's own time, the digests."""
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    hygiene(code, env, "run", str(config), "--input", corpus, "--output", str(out), *extra)
    wall = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    d = digests(out)
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": round(wall, 3), "pipeline_s": manifest["timings"]["total_wall_s"], "loadavg_1m": round(load, 2),
            "records": manifest["conservation"]["overall"]["input"], "digests": d}


def mode_args(mode: str, base_env: dict) -> tuple[list[str], dict]:
    if mode == "no-prefect":
        return ["--no-prefect"], base_env
    if mode == "ephemeral":
        return ["--prefect-api", "ephemeral"], base_env
    if mode == "before-ephemeral":
        return [], base_env
    env = {**base_env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "180"} if mode == "local-warm-hb" else base_env
    return ["--prefect-api", "local"], env


def round_order(modes: list[str], r: int) -> list[str]:
    """`modes` rotated by `r`, the local modes kept together in cold, warm, warm-hb order."""
    units = [m for m in modes if m not in LOCAL_BLOCK] + ["LOCAL"]
    units = units[r % len(units):] + units[:r % len(units)]
    return [m for u in units for m in (LOCAL_BLOCK if u == "LOCAL" else (u,))]


def task_overhead(code: Path, env: dict, url: str, counts: list[int], repeats: int) -> dict:
    """Seconds of a flow of N no-op tasks against the warm server (one process, flows in a row)."""
    child_env = {**env, "PYTHONPATH": str(code), "PREFECT_API_URL": url}
    runs = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", TASKS_CHILD, *map(str, counts)], env=child_env, capture_output=True,
                           text=True, check=True)
        runs.append({int(k): v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()})
    med = {n: median([r[n] for r in runs]) for n in counts}
    lo, hi = min(counts), max(counts)
    return {"flow_s_by_tasks": {str(n): round(v, 3) for n, v in med.items()},
            "ms_per_task": round((med[hi] - med[lo]) / (hi - lo) * 1000, 2), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=59, help="corpus size (default 59: 20,116 documents)")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--work", default="/tmp/hygiene-bench")
    ap.add_argument("--repeats", type=int, default=3, help="rounds (every mode once per round; default 3)")
    ap.add_argument("--before", type=Path, help="a checkout of the code before this work: adds before-ephemeral")
    ap.add_argument("--tasks", default="0,400", help="task counts of the per-task measurement ('' to skip)")
    ap.add_argument("--quiet-below", type=float, default=0.5, help="wait for machine CPU use below this before a run")
    ap.add_argument("--max-wait", type=float, default=60)
    ap.add_argument("--results")
    args = ap.parse_args()

    info = machine_info(("prefect", "polars", "pyarrow"))
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(args.size_mb, args.files, work)
    config = bench_config(work)
    home = work / "prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "HYGIENE_PREFECT_API")}
    env.update({"HYGIENE_PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"})
    modes = ["no-prefect", "ephemeral"] + (["before-ephemeral"] if args.before else []) + list(LOCAL_BLOCK)
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    out = work / "prefect-overhead-out"
    result = {"machine": info, "corpus": {k: corpus[k] for k in ("dir", "total_bytes", "total_records")},
              "config": "configs/dedup-only.yaml without state", "modes": modes, "before": str(args.before) if args.before else None}
    try:
        for code in {REPO, *([args.before] if args.before else [])}:  # compiled kernels cached, files in the page cache
            print(f"warm-up run ({code}) ...", flush=True)
            timed_run(code, env, config, corpus["dir"], out, ["--no-prefect"])
        print("first start of the local server (empty home) ...", flush=True)
        first = timed_run(REPO, env, config, corpus["dir"], out, ["--prefect-api", "local"])
        reference = None
        for r in range(args.repeats):
            for mode in round_order(modes, r):
                if mode == "local-cold":
                    hygiene(REPO, env, "prefect-server", "stop")
                quiet = wait_for_quiet(args.quiet_below, args.max_wait)
                extra, mode_env = mode_args(mode, env)
                code = args.before if mode == "before-ephemeral" else REPO
                rec = {**timed_run(code, mode_env, config, corpus["dir"], out, extra), "round": r, "quiet": quiet}
                if reference is None:
                    reference = rec["digests"]
                if rec["digests"] != reference:
                    raise SystemExit(f"{mode}: shards or ledger differ from the first run's: not byte-identical")
                runs[mode].append({k: v for k, v in rec.items() if k != "digests"})
                print(f"round {r + 1}/{args.repeats} {mode:<17} {rec['wall_s']:7.2f} s (pipeline {rec['pipeline_s']:.2f} s, "
                      f"load {rec['loadavg_1m']})", flush=True)
        if reference != first["digests"]:
            raise SystemExit("the first local run's shards or ledger differ from the others'")
        status = json.loads(hygiene(REPO, env, "prefect-server", "status", "--json", check=False).stdout)
        tasks = ([int(x) for x in args.tasks.split(",")] if args.tasks else [])
        if tasks and status.get("healthy"):
            result["task_overhead"] = task_overhead(REPO, env, status["url"], tasks, args.repeats)
    finally:
        hygiene(REPO, env, "prefect-server", "stop", check=False)

    result["first_start"] = {k: v for k, v in first.items() if k != "digests"}
    result["byte_identical"] = True
    result["runs"] = runs
    summary = {}
    for mode in modes:
        by_round = {x["round"]: x for x in runs[mode]}
        base = {x["round"]: x["wall_s"] for x in runs["no-prefect"]}
        summary[mode] = {
            "median_wall_s": round(median([x["wall_s"] for x in runs[mode]]), 2),
            "median_pipeline_s": round(median([x["pipeline_s"] for x in runs[mode]]), 2),
            "median_extra_s_vs_no_prefect": round(median([by_round[k]["wall_s"] - base[k] for k in by_round]), 2),
            "median_ratio_vs_no_prefect": round(median([by_round[k]["wall_s"] / base[k] for k in by_round]), 3),
        }
    result["summary"] = summary
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    path = results_path("prefect-overhead", args.results)
    path.write_text(json.dumps(result, indent=2))
    print(f"\n{corpus['total_records']:,} documents, {info['cpu_model']}, {args.repeats} rounds; results {path}")
    print(f"first start of the server (fresh database): {first['wall_s']:.2f} s")
    print(f"{'mode':<17} {'wall':>8} {'extra':>8} {'ratio':>7} {'pipeline':>9}")
    for mode, s in summary.items():
        print(f"{mode:<17} {s['median_wall_s']:>7.2f}s {s['median_extra_s_vs_no_prefect']:>+7.2f}s "
              f"{s['median_ratio_vs_no_prefect']:>6.2f}x {s['median_pipeline_s']:>8.2f}s")
    if "task_overhead" in result:
        t = result["task_overhead"]
        print(f"per task against the warm server: {t['ms_per_task']} ms ({t['flow_s_by_tasks']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
