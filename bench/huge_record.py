#!/usr/bin/env python
"""A whole cleaning run over a corpus of one huge document (issue #20, bad input): does PII use
every core, and what memory does it take?

    .venv/bin/python bench/huge_record.py --mb 30                      # this checkout
    .venv/bin/python bench/huge_record.py --mb 30 --code /tmp/before   # another checkout, same corpus
    .venv/bin/python bench/huge_record.py --mb 30 --one-task           # this checkout, the record not split

Corpus: one JSON Lines record (`id`, `text`) of about --mb MB of prose built like
`whole_run.py`'s documents (runs of Gutenberg sentences, 0-3 synthetic PII sentences per
paragraph of 700-1,600 characters), the paragraphs joined by blank lines.

Measured: `hygiene run CONFIG --input corpus.jsonl --no-prefect` in a subprocess (configs/sample.yaml
of --code unless --config): wall, CPU/wall of the process tree, its peak resident memory (summed
over the tree, and the largest single process; sampled every 0.2 s), and from the manifest's
timings the PII phases (`pii` and, where the record is split, `pii-round2`, `pii-round3`,
`pii-join`): their wall, CPU and CPU/wall together (target >= 1.7 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from common import finished_run, machine_info, results_path  # noqa: E402
from gen_corpus import Prose  # noqa: E402
from pii_speed import pii_sentence  # noqa: E402

PII_PHASES = ("pii", "pii-round2", "pii-round3", "pii-join")


def make_record(folder: Path, mb: float, seed: int) -> dict:
    """corpus.jsonl with one record of about `mb` MB of text; reused when present and equal."""
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("mb") == mb:
        return json.loads(meta_path.read_text())
    rng = random.Random(seed)
    prose = Prose()
    paragraphs, n = [], 0
    while n < mb * 1e6:
        text, _ = prose.paragraph(rng, rng.randint(700, 1600))
        parts = [text]
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            parts.insert(rng.randint(0, len(parts)), pii_sentence(rng)[0])
        paragraphs.append(" ".join(parts))
        n += len(paragraphs[-1].encode("utf-8")) + 2
    text = "\n\n".join(paragraphs)
    (folder / "corpus.jsonl").write_text(json.dumps({"id": "huge", "text": text}) + "\n", encoding="utf-8")
    meta = {"mb": mb, "seed": seed, "records": 1, "text_bytes": len(text.encode("utf-8")), "chars": len(text)}
    meta_path.write_text(json.dumps(meta))
    return meta


# `hygiene run` with PII tasks of unbounded size: the record is planned as one task, as before the
# split existed, with the rest of this checkout's code (the split's own effect, beside --code runs).
ONE_TASK = ("import sys, pipeline.run.tasks as t; t.TASK_MIN_BYTES = t.TASK_MAX_BYTES = 1 << 40; "
            "from pipeline.cli import main; sys.exit(main())")


def run(corpus: Path, out_dir: Path, config: Path, code: Path, one_task: bool = False) -> dict:
    """One `hygiene run` in a subprocess, its process tree's CPU and resident memory sampled."""
    import psutil

    cmd = [sys.executable, *(["-c", ONE_TASK] if one_task else ["-m", "pipeline.cli"]), "run", str(config),
           "--input", str(corpus), "--output", str(out_dir), "--no-prefect"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    cpu: dict[int, float] = {}
    peak_sum = peak_one = 0
    while proc.poll() is None:
        rss = []
        for p in [me, *me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system
                rss.append(p.memory_info().rss)
            except psutil.Error:
                pass
        peak_sum, peak_one = max(peak_sum, sum(rss)), max([peak_one, *rss])
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    _, manifest = finished_run(proc, out_dir)
    phases = [p for p in manifest["timings"]["phases"] if p["name"] in PII_PHASES]
    pii_wall = sum(p["wall_s"] for p in phases)
    pii_cpu = sum(p["cpu_s"] or 0 for p in phases)
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(cpu.values()), 2),
            "cpu_per_wall": round(sum(cpu.values()) / wall, 3),
            "peak_rss_tree_mib": round(peak_sum / 2**20), "peak_rss_process_mib": round(peak_one / 2**20),
            "pii_wall_s": round(pii_wall, 2), "pii_cpu_s": round(pii_cpu, 2),
            "pii_cpu_per_wall": round(pii_cpu / pii_wall, 3) if pii_wall else None,
            "phases": manifest["timings"]["phases"], "by_action": manifest["pii"]["records_by_action"],
            "by_entity": manifest["pii"]["by_entity"], "residual_scan": manifest["pii"]["residual_scan"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--config", default=None)
    ap.add_argument("--code", default=str(REPO), help="the checkout whose pipeline runs")
    ap.add_argument("--work", default="/tmp/hygiene-hugerecord")
    ap.add_argument("--out", default=None)
    ap.add_argument("--one-task", action="store_true", help="plan the record as one PII task (no split)")
    args = ap.parse_args()
    config = Path(args.config or Path(args.code) / "configs" / "sample.yaml")
    work = Path(args.work)
    meta = make_record(work / f"corpus-{args.mb}-{args.seed}", args.mb, args.seed)
    print(f"corpus: one record, {meta['text_bytes'] / 1e6:.1f} MB of text", flush=True)
    out_dir = work / "run"
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    machine = machine_info(("presidio-analyzer", "spacy"))
    r = run(work / f"corpus-{args.mb}-{args.seed}" / "corpus.jsonl", out_dir, config, Path(args.code), args.one_task)
    print(f"run: wall {r['wall_s']} s, CPU/wall {r['cpu_per_wall']}, peak RSS {r['peak_rss_tree_mib']} MiB (tree), "
          f"{r['peak_rss_process_mib']} MiB (largest process)")
    print(f"PII phases: wall {r['pii_wall_s']} s, CPU {r['pii_cpu_s']} s, CPU/wall {r['pii_cpu_per_wall']}")
    for p in r["phases"]:
        print(f"  {p['name']:<12} items {p['items']:>4}  wall {p['wall_s']:>8.2f} s  cpu {p.get('cpu_s') or 0:>8.2f} s"
              f"  cpu/wall {p.get('cpu_per_wall', '-')}")
    path = results_path("huge-record", args.out)
    path.write_text(json.dumps({"machine": machine, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                                "corpus": meta, "config": str(config), "code": args.code, "one_task": args.one_task,
                                **r}, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
