#!/usr/bin/env python
"""What the barrier's unit loop holds per partition file it reads side by side (`SortedParts`).

The unit loop reads every `exact-part` (and `ids-part`, group verdicts) file at once, a batch of
each, in ascending ranges of `_i`. This measures, in a fresh process per setting, the resident
memory added by opening --files such files and taking the first range, for a file's row group
size (as written) and the reader's batch size. The files: --rows rows each of exact-dedup verdicts
(`_i` sorted, two repeated strings, a 30-character `duplicate_of` id), lz4 as `run_part` writes them.

Settings measured (row group, batch):

    polars' default row groups (all --rows in one), batches of 65,536   (the code before)
    8,192-row groups, batches of 65,536
    8,192-row groups, batches of 8,192
    2,048-row groups, batches of 2,048
    `workdir.batch_rows(--files)` for both                              (the code now)

Usage::

    .venv/bin/python bench/sorted_parts_memory.py --files 50 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine_info, results_path  # noqa: E402

CHILD = r"""
import json, sys
import numpy as np, polars as pl
from pathlib import Path
from pipeline.run.workdir import SortedParts, batch_rows
folder, files, rows, group, batch, mode = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
group = batch_rows(files) if group == "budget" else (None if group == "default" else int(group))
batch = batch_rows(files) if batch == "budget" else int(batch)
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(1)
paths = []
for k in range(files):
    p = folder / f"p{k:05d}.parquet"
    i = np.sort(rng.choice(rows * 100, rows, replace=False))
    if mode == "write":
        pl.DataFrame({"_i": i, "decision": ["dropped_exact_duplicate"] * rows, "reason": ["exact copy"] * rows,
                      "duplicate_of": [f"web/doc-{x:012d}-abcdefgh" for x in rng.integers(0, 10**9, rows)]}).write_parquet(
            p, compression="lz4", statistics=False, row_group_size=group)
    paths.append(p)
if mode == "write":
    sys.exit(0)
def rss():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS:"))) / 1024
before = rss()
parts = SortedParts(paths, {"_i": pl.Int64, "decision": pl.String, "reason": pl.String, "duplicate_of": pl.String}, batch)
taken = parts.take(0, rows * 100 // 200)   # the first of 200 ranges (units)
print("RESULT " + json.dumps({"held_mib": round(rss() - before, 1), "row_group": group, "batch": batch,
                              "rows_taken": taken.height}))
"""

SETTINGS = [("default", "65536"), ("8192", "65536"), ("8192", "8192"), ("2048", "2048"), ("budget", "budget")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--rows", type=int, default=200_000, help="rows per file (an exact task's copies at 2M records)")
    ap.add_argument("--work", default="/tmp/sorted-parts-memory")
    ap.add_argument("--out")
    args = ap.parse_args()
    results = {"benchmark": "sorted-parts-memory", "machine": machine_info(("polars", "pyarrow")), "args": vars(args),
               "runs": []}
    for files in args.files:
        for group, batch in SETTINGS:
            folder = Path(args.work) / f"{files}-{group}"
            for mode in ("write", "read"):  # the files written by one process, read by a fresh one
                r = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(files), str(args.rows), group, batch, mode],
                                   capture_output=True, text=True, cwd=str(REPO),
                                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
                if r.returncode != 0:
                    raise RuntimeError(r.stderr[-2000:])
            out = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])
            out |= {"files": files, "per_file_mib": round(out["held_mib"] / files, 2)}
            results["runs"].append(out)
            print(json.dumps(out))
    path = results_path("sorted-parts-memory", args.out)
    path.write_text(json.dumps(results, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
