#!/usr/bin/env python
"""End-to-end throughput benchmark: the pipeline (read -> exact dedup -> write) against a raw ceiling.

On a generated JSONL corpus (bench/gen_corpus.py, cached under --work), two jobs are timed,
each in a fresh Python subprocess, alternating, --repeats times:

  ceiling    polars `read_ndjson` of each file + `write_parquet(compression="zstd", level 3)`
  pipeline   `pipeline.executor.run_local` on the same files (no Prefect), --workers threads

For each run: the wall seconds of the work itself (measured in the child after its imports),
MB/s = input bytes / that wall (MB = 10^6 bytes), the peak RSS of the whole subprocess
(`ru_maxrss` from `os.wait4`, i.e. the kernel's high-water mark over all its threads, plus
a psutil-sampled peak of the summed RSS of its process tree as a cross-check, and the sampled
peak growth of the machine's shared/tmpfs memory, where the pipeline's memory spill lives
outside any RSS), its CPU
seconds, and the outer wall (interpreter start-up and imports included). The medians and the
ratio pipeline/ceiling (target: >= 0.50) are printed as a markdown table and written with the
machine info, the command line and every individual run to bench/results/throughput-<date>.json.

Usage::

    .venv/bin/python bench/throughput.py                      # 1100 MB, 1 file, 3 repeats
    .venv/bin/python bench/throughput.py --size-mb 100 --repeats 1
    .venv/bin/python bench/throughput.py --files 8            # the same volume in 8 files

Exit status: 0 when every run finished and every output count matched the corpus's known
duplicates; 1 when a run failed; 2 when a count check failed. Missing the 50% target is
reported, not an error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import cmd_out  # noqa: E402

MB = 1_000_000
MiB = 1024 * 1024
TARGET_RATIO = 0.5
RESULT_TAG = "BENCH_RESULT "
LIBRARIES = ("polars", "pyarrow", "numpy", "orjson", "zstandard", "pydantic", "psutil", "hygiene-pipeline")


# ============================================================================================
# Child side: runs in a fresh interpreter, prints one result line.


def _child_ceiling(spec: dict) -> dict:
    import polars as pl

    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = 0
    for i, path in enumerate(spec["paths"]):
        df = pl.read_ndjson(path)
        df.write_parquet(out / f"part-{i:05d}.parquet", compression="zstd", compression_level=3)
        rows += df.height
        del df
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "rows_out": rows,
        "output_bytes": sum(p.stat().st_size for p in out.glob("*.parquet")),
        "polars_threads": pl.thread_pool_size(),
    }


def _child_pipeline(spec: dict) -> dict:
    import polars as pl

    import pipeline.executor as ex
    from pipeline.config import parse_config

    from pipeline.config import DedupConfig

    config = json.loads(json.dumps(spec["config"]))
    # The measured path is read -> exact dedup -> write. Stages the code has beyond that (near
    # dedup) are switched off unless asked for, when the config model knows them.
    if "near" in DedupConfig.model_fields:
        config.setdefault("dedup", {})["near"] = {"enabled": bool(spec.get("near_dedup"))}
    cfg = parse_config(config)
    marks: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            marks[f"{name}_start"] = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                marks[f"{name}_end"] = time.perf_counter()

        return wrapper

    # Phase timers: run_local looks these names up in its module at call time. Nothing in
    # pipeline/ is changed; the wrappers only read the clock.
    ex.make_plan = timed("plan", ex.make_plan)
    if hasattr(ex, "barrier"):  # code before the stage contract
        ex.barrier = timed("barrier", ex.barrier)
    else:  # the step builder imports the barrier from its module at call time
        import pipeline.run.barrier as barrier_mod

        barrier_mod.barrier = timed("barrier", barrier_mod.barrier)
    ex.finalize = timed("finalize", ex.finalize)
    unit_seconds = {"pass1": 0.0, "pass2": 0.0}
    step_names = {"read": "pass1", "write": "pass2"}  # the builder's step names

    def on_unit(step: str, r: dict) -> None:
        step = step_names.get(step, step)
        unit_seconds[step] = unit_seconds.get(step, 0.0) + r.get("seconds", 0.0)

    t0 = time.perf_counter()
    manifest = ex.run_local(cfg, workers=spec["workers"], on_unit=on_unit)
    t1 = time.perf_counter()
    phases = {
        "plan_s": marks["plan_end"] - t0,
        "pass1_s": marks["barrier_start"] - marks["plan_end"],
        "barrier_s": marks["barrier_end"] - marks["barrier_start"],
        "pass2_s": marks["finalize_start"] - marks["barrier_end"],
        "finalize_s": t1 - marks["finalize_start"],
        "pass1_unit_seconds_sum": unit_seconds["pass1"],
        "pass2_unit_seconds_sum": unit_seconds["pass2"],
    }
    overall = manifest["conservation"]["overall"]
    return {
        "wall_s": t1 - t0,
        "phases": {k: round(v, 3) for k, v in phases.items()},
        "units": manifest["units"],
        "stages": manifest["stages"],
        "conservation": {k: overall[k] for k in ("input", "kept", "dropped", "rejected", "balanced")},
        "rows_out": sum(f["rows"] for f in manifest["outputs"]["shards"]),
        "output_bytes": sum(f["bytes"] for f in manifest["outputs"]["shards"]),
        "ledger_bytes": sum(f["bytes"] for f in manifest["outputs"]["ledger"]),
        "polars_threads": pl.thread_pool_size(),
        "pipeline_module": ex.__file__,
        "effective_dedup_config": cfg.dedup.model_dump(mode="json"),
    }


def child_main(kind: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = _child_ceiling(spec) if kind == "ceiling" else _child_pipeline(spec)
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# ============================================================================================
# Parent side


def _busy_cpu_seconds(t) -> float:
    """Non-idle CPU seconds of the whole machine from psutil.cpu_times()."""
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)


def wait_for_quiet(threshold: float, max_wait: float) -> dict:
    """Wait until the machine's CPU use over 2 consecutive seconds is below `threshold` (fraction of all cores)."""
    import psutil

    t0 = time.perf_counter()
    quiet = 0
    last = None
    while True:
        last = psutil.cpu_percent(interval=1.0) / 100.0
        quiet = quiet + 1 if last < threshold else 0
        waited = time.perf_counter() - t0
        if quiet >= 2 or threshold >= 1.0:
            return {"waited_s": round(waited, 1), "quiet": True, "cpu_busy_last_s": round(last, 3)}
        if waited >= max_wait:
            return {"waited_s": round(waited, 1), "quiet": False, "cpu_busy_last_s": round(last, 3)}


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.samples = 0
        self.shm_peak_growth = 0  # tmpfs/shared memory (the pipeline's memory spill is there, not in RSS)
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        shm0 = psutil.virtual_memory().shared
        while not self._halt.is_set():
            self.shm_peak_growth = max(self.shm_peak_growth, psutil.virtual_memory().shared - shm0)
            try:
                procs = [root] + root.children(recursive=True)
                total = 0
                for p in procs:
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


def run_child(kind: str, spec: dict, log_dir: Path, run_no: int, prefix: list[str], env: dict | None = None) -> dict:
    """Run one measured job in a fresh interpreter; return its result plus rusage and timings."""
    spec_path = log_dir / f"spec-{kind}.json"
    spec_path.write_text(json.dumps(spec))
    out_log = log_dir / f"run{run_no:02d}-{kind}.stdout"
    err_log = log_dir / f"run{run_no:02d}-{kind}.stderr"
    cmd = prefix + [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--spec", str(spec_path)]
    import psutil

    load_before = os.getloadavg()
    cpu_before = _busy_cpu_seconds(psutil.cpu_times())
    with open(out_log, "wb") as out, open(err_log, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=str(REPO), env=env)
        sampler = TreeRssSampler(proc.pid)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        outer = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu_after = _busy_cpu_seconds(psutil.cpu_times())
        sampler.stop()
    # CPU time the whole machine spent during the run minus the child's own: other work's share.
    foreign = max(0.0, (cpu_after - cpu_before) - (ru.ru_utime + ru.ru_stime))
    text = out_log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.startswith(RESULT_TAG)]
    rec = {
        "kind": kind,
        "run": run_no,
        "returncode": proc.returncode,
        "outer_wall_s": round(outer, 3),
        "peak_rss_mib": round(ru.ru_maxrss * 1024 / MiB, 1),          # ru_maxrss is KiB on Linux
        "peak_tree_rss_sampled_mib": round(sampler.peak / MiB, 1),
        "peak_shmem_growth_mib": round(sampler.shm_peak_growth / MiB, 1),
        "rss_samples": sampler.samples,
        "cpu_user_s": round(ru.ru_utime, 2),
        "cpu_sys_s": round(ru.ru_stime, 2),
        "other_cpu_s": round(foreign, 2),
        "other_cores_busy": round(foreign / outer, 2),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "stderr_log": str(err_log),
    }
    if proc.returncode != 0 or not lines:
        rec["error"] = err_log.read_text(errors="replace")[-3000:]
        return rec
    res = json.loads(lines[-1][len(RESULT_TAG):])
    rec.update(res)
    rec["wall_s"] = round(res["wall_s"], 3)
    rec["mb_per_s"] = round(spec["input_bytes"] / MB / res["wall_s"], 2)
    rec["cpu_util"] = round((ru.ru_utime + ru.ru_stime) / outer, 2)
    return rec


def _versions() -> dict:
    out = {"python": platform.python_version(), "implementation": platform.python_implementation()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def snapshot_code(work: Path, git_ref: str | None) -> dict:
    """Freeze the `pipeline` package the children import, so every repeat runs the same code.

    Without `git_ref`: a copy of the working tree's pipeline/ (uncommitted edits included, and
    listed). With it: `git archive <ref> pipeline`. The children get the copy first on
    PYTHONPATH, ahead of the editable install.
    """
    root = work / "code"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".snap-", dir=root))
    try:
        if git_ref:
            commit = cmd_out(["git", "rev-parse", "--verify", f"{git_ref}^{{commit}}"])
            if not commit:
                raise SystemExit(f"--git-ref {git_ref}: not a commit of {REPO}")
            arch = subprocess.run(["git", "archive", "--format=tar", commit, "pipeline"], cwd=str(REPO),
                                  capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(tmp)], input=arch, check=True)
            info = {"from": f"git archive {git_ref}", "commit": commit, "uncommitted_changes": []}
        else:
            shutil.copytree(REPO / "pipeline", tmp / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            info = {"from": "working tree", "commit": cmd_out(["git", "rev-parse", "HEAD"]),
                    "uncommitted_changes": (cmd_out(["git", "status", "--porcelain", "--", "pipeline"]) or "").splitlines()}
        digest = _tree_digest(tmp / "pipeline")
        dest = root / f"pipeline-{digest[:12]}"
        if dest.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "tree_sha256": digest, "dir": str(dest)}


def machine_info(work: Path) -> dict:
    import psutil

    vm = psutil.virtual_memory()
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usage = shutil.disk_usage(work)
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "nproc": os.cpu_count(),
        "nproc_affinity": len(os.sched_getaffinity(0)),
        "memory_total_gib": round(vm.total / 2**30, 2),
        "memory_available_gib_before": round(vm.available / 2**30, 2),
        "disk_free_gib_before": round(usage.free / 2**30, 1),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "uptime_before": cmd_out(["uptime"]),
        "versions": _versions(),
        "git_commit": cmd_out(["git", "rev-parse", "HEAD"]),
        "git_status_porcelain": (cmd_out(["git", "status", "--porcelain"]) or "").splitlines(),
        "env": {k: os.environ[k] for k in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ},
    }


def _median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def summarize(runs: list[dict]) -> dict:
    keys = ("wall_s", "mb_per_s", "peak_rss_mib", "peak_tree_rss_sampled_mib", "peak_shmem_growth_mib", "cpu_user_s", "cpu_sys_s",
            "cpu_util", "outer_wall_s", "output_bytes", "other_cores_busy")
    out = {}
    for kind in ("ceiling", "pipeline"):
        ok = [r for r in runs if r["kind"] == kind and "error" not in r]
        out[kind] = {"runs": len(ok), **{k: _median(ok, k) for k in keys}}
        if kind == "pipeline" and ok:
            out[kind]["phases"] = {p: _median([r["phases"] for r in ok], p) for p in ok[0]["phases"]}
    c, p = out["ceiling"].get("mb_per_s"), out["pipeline"].get("mb_per_s")
    out["ratio_pipeline_over_ceiling"] = round(p / c, 3) if c and p else None
    paired = []
    for n in sorted({r["run"] for r in runs}):
        pair = {r["kind"]: r for r in runs if r["run"] == n and "error" not in r}
        if "ceiling" in pair and "pipeline" in pair:
            paired.append(pair["pipeline"]["mb_per_s"] / pair["ceiling"]["mb_per_s"])
    out["paired_ratios"] = [round(x, 3) for x in paired]
    out["median_paired_ratio"] = round(statistics.median(paired), 3) if paired else None
    out["target_ratio"] = TARGET_RATIO
    ratio = out["ratio_pipeline_over_ceiling"]
    out["target_met"] = None if ratio is None else ratio >= TARGET_RATIO
    return out


def check_counts(runs: list[dict], corpus: dict) -> list[str]:
    """Every run must have written the right number of rows; the pipeline must find exactly the planted duplicates."""
    problems = []
    n = corpus["total_records"]
    exp = corpus["expected_default_dedup"]
    for r in runs:
        if "error" in r:
            problems.append(f"run {r['run']} {r['kind']}: failed (exit {r['returncode']}), see {r['stderr_log']}")
            continue
        if r["kind"] == "ceiling" and r["rows_out"] != n:
            problems.append(f"run {r['run']} ceiling: wrote {r['rows_out']} rows, corpus has {n}")
        if r["kind"] == "pipeline":
            c, st = r["conservation"], r["stages"]
            # Stages other than exact dedup (near dedup, when switched on) have no labels here:
            # their drops are only required to balance.
            other = c["dropped"] - st["exact_dedup"]["dropped"]
            got = {"input": c["input"], "exact_dropped": st["exact_dedup"]["dropped"], "rejected": c["rejected"],
                   "kept + other drops": c["kept"] + other, "balanced": c["balanced"], "rows out": r["rows_out"]}
            want = {"input": n, "exact_dropped": exp["dropped"], "rejected": 0,
                    "kept + other drops": exp["kept"], "balanced": True, "rows out": c["kept"]}
            if got != want:
                problems.append(f"run {r['run']} pipeline: got {got}; expected {want}")
    return problems


def _fmt(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def markdown(summary: dict, runs: list[dict], corpus: dict, info_before: dict, uptime_after: str | None,
             code: dict) -> str:
    L = []
    L.append(f"Corpus: {corpus['total_bytes'] / MB:,.1f} MB in {len(corpus['files'])} file(s), "
             f"{corpus['total_records']:,} records ({corpus['counts']['exact_copies']:,} exact copies, "
             f"{corpus['counts']['whitespace_variants']:,} whitespace variants, "
             f"{corpus['counts']['case_variants']:,} case variants); page cache warm.")
    L.append(f"Machine: {info_before['nproc']} CPUs, {info_before['memory_total_gib']} GiB; "
             f"load before: {info_before['uptime_before']}; after: {uptime_after}")
    L.append(f"Pipeline code: {code['from']} at {code['commit']}"
             + (f" plus uncommitted changes to {len(code['uncommitted_changes'])} file(s)" if code["uncommitted_changes"] else "")
             + f" (tree sha256 {code['tree_sha256'][:12]}).")
    L.append("")
    L.append("| job | runs | wall s (median) | MB/s | peak RSS MiB (ru_maxrss) | peak tree RSS MiB (sampled) "
             "| tmpfs growth MiB (sampled) | CPU user+sys s | CPU / wall | process wall s (incl. start-up) | other work, cores busy |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in ("ceiling", "pipeline"):
        s = summary[kind]
        cpu = None if s["cpu_user_s"] is None else s["cpu_user_s"] + s["cpu_sys_s"]
        L.append(f"| {kind} | {s['runs']} | {_fmt(s['wall_s'], 2)} | {_fmt(s['mb_per_s'])} | {_fmt(s['peak_rss_mib'], 0)} "
                 f"| {_fmt(s['peak_tree_rss_sampled_mib'], 0)} | {_fmt(s['peak_shmem_growth_mib'], 0)} | {_fmt(cpu)} | {_fmt(s['cpu_util'], 2)} "
                 f"| {_fmt(s['outer_wall_s'], 2)} | {_fmt(s['other_cores_busy'], 2)} |")
    L.append("")
    ratio = summary["ratio_pipeline_over_ceiling"]
    verdict = "n/a" if ratio is None else ("MET" if ratio >= TARGET_RATIO else "NOT MET")
    L.append(f"**pipeline / ceiling (median MB/s): {_fmt(ratio, 3)}** — target ≥ {TARGET_RATIO:.2f}: {verdict}; "
             f"paired per-repeat ratios: {summary['paired_ratios']} (median {summary['median_paired_ratio']})")
    last = next((r for r in reversed(runs) if r["kind"] == "pipeline" and "error" not in r), None)
    if last:
        L.append("")
        L.append("Pipeline stages (dropped): " + ", ".join(f"{k} {v['dropped']:,}" for k, v in last["stages"].items())
                 + f"; near dedup {'on' if last['effective_dedup_config'].get('near', {}).get('enabled') else 'off/absent'}.")
    ph = summary["pipeline"].get("phases")
    if ph:
        L.append("")
        L.append("Pipeline phases (median wall s): " + ", ".join(
            f"{k.removesuffix('_s')} {v}" for k, v in ph.items() if k.endswith("_s")))
    L.append("")
    L.append("| run | job | wall s | MB/s | peak RSS MiB | tree RSS MiB | CPU s | load 1-min before | other work, cores busy |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        if "error" in r:
            L.append(f"| {r['run']} | {r['kind']} | FAILED (exit {r['returncode']}) | | | | | {r['load_before'][0]} | |")
            continue
        L.append(f"| {r['run']} | {r['kind']} | {r['wall_s']:.2f} | {r['mb_per_s']:.1f} | {r['peak_rss_mib']:.0f} "
                 f"| {r['peak_tree_rss_sampled_mib']:.0f} | {r['cpu_user_s'] + r['cpu_sys_s']:.1f} | {r['load_before'][0]} "
                 f"| {r['other_cores_busy']:.2f} |")
    return "\n".join(L)


def results_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    d = HERE / "results"
    base = f"throughput-{dt.date.today().isoformat()}"
    p = d / f"{base}.json"
    n = 2
    while p.exists():
        p = d / f"{base}-{n}.json"
        n += 1
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="End-to-end throughput: pipeline vs. polars read_ndjson + write_parquet.")
    ap.add_argument("--size-mb", type=int, default=1100, help="corpus size in MB of JSONL (10^6 bytes; default 1100)")
    ap.add_argument("--files", type=int, default=1, help="number of JSONL files the corpus is split into (default 1)")
    ap.add_argument("--work", default="/tmp/hygiene-bench", help="corpus cache and scratch outputs (default /tmp/hygiene-bench)")
    ap.add_argument("--repeats", type=int, default=3, help="measured runs of each job, alternating (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="pipeline worker threads (default 2)")
    ap.add_argument("--unit-mb", type=float, default=64, help="pipeline unit target in MiB (default 64)")
    ap.add_argument("--seed", type=int, default=None, help="corpus seed (default: gen_corpus's)")
    ap.add_argument("--near-dedup", action="store_true",
                    help="also run the near-duplicate stage, when the code has one (default: off; the measured path is "
                         "read -> exact dedup -> write)")
    ap.add_argument("--git-ref", help="benchmark the pipeline package of this commit (default: a snapshot of the working tree)")
    ap.add_argument("--only", choices=("ceiling", "pipeline"), help="run one job only (e.g. under a profiler)")
    ap.add_argument("--child-prefix", default="", help="command put before each child, e.g. 'py-spy record -o x.txt -f raw --'")
    ap.add_argument("--pause", type=float, default=2.0, help="seconds to idle before each run (default 2)")
    ap.add_argument("--quiet-below", type=float, default=0.25,
                    help="before each run, wait until machine CPU use is below this fraction of all cores for 2 s "
                         "(default 0.25; 1 disables)")
    ap.add_argument("--max-wait", type=float, default=300, help="longest wait for quiet before a run, seconds (default 300)")
    ap.add_argument("--results", help="result JSON path (default bench/results/throughput-<date>.json)")
    ap.add_argument("--keep-outputs", action="store_true", help="keep the last run's Parquet outputs under --work/runs")
    ap.add_argument("--child", choices=("ceiling", "pipeline"), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, args.spec)
    if args.size_mb < 1 or args.files < 1 or args.repeats < 1 or args.workers < 1:
        ap.error("--size-mb, --files, --repeats and --workers must be at least 1")

    sys.path.insert(0, str(HERE))
    from gen_corpus import CorpusParams, ensure_corpus

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable] + sys.argv if argv is None else [sys.executable, __file__] + argv
    info = machine_info(work)
    print(f"load before: {info['uptime_before']}", file=sys.stderr)

    t_gen = time.perf_counter()
    seed = args.seed if args.seed is not None else CorpusParams.seed
    corpus = ensure_corpus(args.size_mb, args.files, work, seed, log=lambda m: print(m, file=sys.stderr))
    gen_s = time.perf_counter() - t_gen
    input_bytes = corpus["total_bytes"]
    # Read every input once so both jobs start from a warm page cache.
    for p in corpus["paths"]:
        with open(p, "rb") as f:
            while f.read(64 * MiB):
                pass

    runs_dir = work / "runs"
    log_dir = Path(tempfile.mkdtemp(prefix="logs-", dir=work))
    outs = {"ceiling": runs_dir / "ceiling", "pipeline": runs_dir / "pipeline"}
    config = {
        "name": "throughput-bench",
        "sources": [{"name": "web", "kind": "jsonl", "paths": corpus["paths"], "text_field": "text", "id_field": None}],
        "output": {"dir": str(outs["pipeline"])},
        "units": {"target_bytes": int(args.unit_mb * MiB)},
        "runner": {"max_workers": args.workers},
    }
    specs = {
        "ceiling": {"paths": corpus["paths"], "out": str(outs["ceiling"]), "input_bytes": input_bytes},
        "pipeline": {"config": config, "workers": args.workers, "input_bytes": input_bytes, "near_dedup": args.near_dedup},
    }
    code = snapshot_code(work, args.git_ref)
    print(f"pipeline code: {code['from']} {code['commit']}, snapshot {code['dir']}"
          + (f" (uncommitted: {len(code['uncommitted_changes'])} file(s))" if code["uncommitted_changes"] else ""),
          file=sys.stderr)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([code["dir"]] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    prefix = shlex.split(args.child_prefix)
    jobs = [args.only] if args.only else ["ceiling", "pipeline"]

    runs: list[dict] = []
    for n in range(1, args.repeats + 1):
        order = jobs if n % 2 == 1 else list(reversed(jobs))
        for kind in order:
            shutil.rmtree(outs[kind], ignore_errors=True)
            os.sync()  # the previous run's dirty pages must not be flushed on this run's clock
            time.sleep(args.pause)
            quiet = wait_for_quiet(args.quiet_below, args.max_wait)
            print(f"run {n}/{args.repeats}: {kind} (waited {quiet['waited_s']} s for quiet: {quiet['quiet']}) ...",
                  file=sys.stderr, flush=True)
            rec = run_child(kind, specs[kind], log_dir, n, prefix, env)
            rec["wait_for_quiet"] = quiet
            runs.append(rec)
            if "error" in rec:
                print(f"  FAILED (exit {rec['returncode']}):\n{rec['error']}", file=sys.stderr)
            else:
                print(f"  {rec['wall_s']:.2f} s, {rec['mb_per_s']:.1f} MB/s, peak RSS {rec['peak_rss_mib']:.0f} MiB",
                      file=sys.stderr, flush=True)
    if not args.keep_outputs:
        shutil.rmtree(runs_dir, ignore_errors=True)

    uptime_after = cmd_out(["uptime"])
    summary = summarize(runs)
    problems = check_counts(runs, corpus)
    for r in runs:
        if r["kind"] == "pipeline" and "error" not in r and not r["pipeline_module"].startswith(code["dir"] + os.sep):
            problems.append(f"run {r['run']} pipeline imported {r['pipeline_module']}, not the snapshot {code['dir']}")
    table = markdown(summary, runs, corpus, info, uptime_after, code)
    print(table)
    if problems:
        print("\nCOUNT CHECKS FAILED:\n" + "\n".join(f"- {p}" for p in problems))

    result = {
        "kind": "hygiene-throughput-bench",
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "command_line": shlex.join(command),
        "cwd": os.getcwd(),
        "machine": {**info, "loadavg_after": [round(x, 2) for x in os.getloadavg()], "uptime_after": uptime_after},
        "corpus": {k: corpus[k] for k in ("dir", "paths", "params", "books_sha256", "files", "total_bytes",
                                          "total_records", "counts", "expected_default_dedup", "cached")},
        "corpus_prepare_seconds": round(gen_s, 2),
        "settings": {"repeats": args.repeats, "workers": args.workers, "unit_mb": args.unit_mb, "only": args.only,
                     "near_dedup": args.near_dedup, "child_prefix": args.child_prefix, "pause_s": args.pause, "quiet_below": args.quiet_below,
                     "max_wait_s": args.max_wait, "page_cache": "warm",
                     "mb": "10^6 bytes", "rss_unit": "MiB"},
        "pipeline_code": code,
        "pipeline_config": config,
        "ceiling_definition": "polars.read_ndjson(file) then DataFrame.write_parquet(compression='zstd', compression_level=3), per file, sequentially",
        "runs": runs,
        "medians": summary,
        "ratio_pipeline_over_ceiling": summary["ratio_pipeline_over_ceiling"],
        "count_checks": {"ok": not problems, "problems": problems},
        "markdown": table,
    }
    out = results_path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out}")
    if any("error" in r for r in runs):
        return 1
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
