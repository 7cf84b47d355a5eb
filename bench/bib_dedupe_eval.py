#!/usr/bin/env python
"""Our near-duplicate stage on real, human-labelled bibliographic duplicates (bib-dedupe LDD data).

Data: /work/shared/data/dedup/bib_dedupe_ldd/<dataset>/{records_pre_merged,merged_record_ids}.csv
(see its README: real records exported for systematic reviews; duplicate groups labelled by
reviewers). Each record becomes one text (variants below), the texts are run through
`pipeline.executor.run_local` (exact dedup, then MinHash near dedup) over a grid of thresholds
and shingles, and the ledger's keep/drop decisions are scored against the labelled groups.

Text variants:
  title    the title (when missing: author + container + year)
  title_year  the title (when missing: author + container) + year
  full     title + author + container (journal or booktitle) + year
Shingles: word n-grams `w2`, `w3`; character n-grams `c4`, `c5` (on the normalised text:
NFKC, lowercase, punctuation to spaces). Thresholds: 0.5, 0.6, 0.7, 0.8 (bands and rows are
chosen by the pipeline for >= 0.9 candidate probability at the threshold).

Scores per dataset:
  pairwise  predicted pairs = pairs within one connected component of the ledger's
            record -> duplicate_of edges; true pairs = pairs within one labelled group.
  upstream  bib-dedupe's own scoring (`DedupeBenchmarker.compare_dedupe_id`): a record in no
            group counts TN when kept, FP when dropped; a group with k >= 1 kept members counts
            one TN, k-1 FN and |group|-k TP; a group with no member kept counts one FP and
            |group|-1 TP. precision = TP/(TP+FP), sensitivity = TP/(TP+FN), F1.
The upstream baselines (bib-dedupe, asreview) are read from upstream_current_results.md.

Usage::

    flock /tmp/hygiene-bench.lock .venv/bin/python bench/bib_dedupe_eval.py
    .venv/bin/python bench/bib_dedupe_eval.py --datasets stroke --thresholds 0.7 --shingles c4

Results: markdown tables on stdout and bench/results/bib-dedupe-<date>.json (suffixed -2, -3
when it exists). Picking the best configuration per dataset looks at the labels, so the tables
also give the single configuration that is best on average over the datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "dedup" / "bib_dedupe_ldd"
DATASETS = ["cytology_screening", "haematology", "stroke", "special_cases"]
SHINGLES = {"w2": (2, False), "w3": (3, False), "c4": (4, True), "c5": (5, True)}


def load(ds: str):
    import polars as pl

    df = pl.read_csv(DATA / ds / "records_pre_merged.csv", infer_schema=False)
    groups = pl.read_csv(DATA / ds / "merged_record_ids.csv", infer_schema=False)["merged_ids"].str.split(";").to_list()
    return df, groups


def texts(df, variant: str) -> list[str]:
    def col(name: str) -> list[str]:
        return [(v or "").strip() for v in df[name].to_list()] if name in df.columns else [""] * df.height

    title, author, year = col("title"), col("author"), col("year")
    container = [j or b for j, b in zip(col("journal"), col("booktitle"))]
    out = []
    for t, a, c, y in zip(title, author, container, year):
        if variant == "title":
            out.append(t or " ".join(x for x in (a, c, y) if x))
        elif variant == "title_year":
            out.append(" ".join(x for x in (t or " ".join(x for x in (a, c) if x), y) if x))
        elif variant == "full":
            out.append(" ".join(x for x in (t, a, c, y) if x))
        else:
            raise ValueError(variant)
    return out


def run_ours(ids: list[str], txt: list[str], work: Path, threshold: float | None, ngram: int | None, char: bool | None,
             dedup: dict | None = None):
    import glob

    import polars as pl

    from pipeline.config import parse_config
    from pipeline.executor import run_local

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "records.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i, t in zip(ids, txt):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
    cfg = parse_config({"sources": [{"name": "bib", "kind": "jsonl", "paths": [str(src)], "id_field": "id"}],
                        "output": {"dir": str(work / "run")},
                        "dedup": dedup if dedup is not None else
                        {"near": {"threshold": threshold, "ngram": ngram, "char_ngrams": char}}})
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        manifest = run_local(cfg)
    secs = time.perf_counter() - t0
    led = pl.concat([pl.read_parquet(p) for p in sorted(glob.glob(str(work / "run" / "ledger" / "*.parquet")))])
    near = manifest.get("near_dedup") or {}
    return led, secs, {"bands": near.get("bands"), "rows": near.get("rows"), "threshold_used": near.get("threshold")}


def score(ids: list[str], groups: list[list[str]], led) -> dict:
    kept = set(led.filter(led["decision"].is_in(["kept", "kept_redacted"]))["record_id"].to_list())
    decisions = dict(led.group_by("decision").len().iter_rows())
    # predicted clusters from duplicate_of edges
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in led.filter(led["duplicate_of"].is_not_null()).select("record_id", "duplicate_of").iter_rows():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    pred: dict[str, list[str]] = {}
    for i in ids:
        pred.setdefault(find(i), []).append(i)
    pred_pairs = {tuple(sorted(p)) for m in pred.values() if len(m) > 1 for p in combinations(m, 2)}
    true_pairs = {tuple(sorted(p)) for g in groups for p in combinations(g, 2)}
    tp = len(pred_pairs & true_pairs)
    pp = tp / len(pred_pairs) if pred_pairs else 1.0
    pr = tp / len(true_pairs) if true_pairs else 1.0
    # upstream (bib-dedupe compare_dedupe_id)
    in_group = {i for g in groups for i in g}
    u = {"TP": 0, "FP": 0, "FN": 0, "TN": 0}
    for i in ids:
        if i not in in_group:
            u["TN" if i in kept else "FP"] += 1
    for g in groups:
        k = sum(1 for i in g if i in kept)
        if k == 0:
            u["FP"] += 1
            u["TP"] += len(g) - 1
        else:
            u["TN"] += 1
            u["FN"] += k - 1
            u["TP"] += len(g) - k
    up = u["TP"] / (u["TP"] + u["FP"]) if u["TP"] + u["FP"] else 1.0
    ur = u["TP"] / (u["TP"] + u["FN"]) if u["TP"] + u["FN"] else 1.0
    fp_pairs = sorted(pred_pairs - true_pairs)
    fn_pairs = sorted(true_pairs - pred_pairs)
    return {
        "decisions": decisions,
        "pairwise": {"pred_pairs": len(pred_pairs), "true_pairs": len(true_pairs), "tp": tp,
                     "precision": round(pp, 4), "recall": round(pr, 4),
                     "f1": round(2 * pp * pr / (pp + pr), 4) if pp + pr else 0.0},
        "upstream": {**u, "precision": round(up, 4), "sensitivity": round(ur, 4),
                     "f1": round(2 * up * ur / (up + ur), 4) if up + ur else 0.0},
        "fp_pair_examples": [list(p) for p in fp_pairs[:5]],
        "fn_pair_examples": [list(p) for p in fn_pairs[:5]],
    }


def upstream_baselines() -> dict:
    """{dataset: {package: {precision, sensitivity, f1}}} from upstream_current_results.md."""
    text = (DATA / "upstream_current_results.md").read_text()
    out: dict = {}
    for sec in re.split(r"^## ", text, flags=re.M)[1:]:
        name = sec.split()[0]
        lines = [line for line in sec.splitlines() if line.startswith("|")]
        if len(lines) < 3:
            continue
        hdr = [h.strip() for h in lines[0].strip("|").split("|")]
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            row = dict(zip(hdr, cells))
            out.setdefault(name, {})[row["package"]] = {
                k: float(row[k]) if k in ("precision", "sensitivity", "f1") else int(row[k])
                for k in ("TP", "FP", "FN", "TN", "precision", "sensitivity", "f1")}
    return out


def machine_info() -> dict:
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "nproc": os.cpu_count(),
            "loadavg": os.getloadavg()}
    with contextlib.suppress(OSError):
        cpu = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        info["cpu"] = cpu[0] if cpu else None
    with contextlib.suppress(OSError):
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        info["git_status"] = subprocess.run(["git", "-C", str(REPO), "status", "--short"], capture_output=True, text=True).stdout.splitlines()
    return info


def named_configs(args) -> int:
    """Full-record text ("full"), the library defaults, the short-document pass, the conservative option, every set."""
    import yaml

    cons = (yaml.safe_load((REPO / "configs" / "dedup-conservative.yaml").read_text()) or {}).get("dedup") or {}
    configs = {"defaults": {}, "conservative (configs/dedup-conservative.yaml)": cons,
               "defaults + short pass (100 words, 0.6)": {"near": {"short_pass_max_words": 100, "short_pass_threshold": 0.6}},
               "defaults before #16 (0.8, longest, no boilerplate rule)": {
                   "near": {"threshold": 0.8, "second_hop": None, "boilerplate_min_docs": 0},
                   "survivor": {"near_prefer": "longest"}}}
    datasets = args.datasets.split(",")
    runs, lines = [], ["| config | " + " | ".join(datasets) + " | mean pair F1 | mean pair P | mean pair R |",
                       "|---|" + "---|" * (len(datasets) + 3)]
    for name, dedup in configs.items():
        f1s, ps, rs = [], [], []
        for ds in datasets:
            df, groups = load(ds)
            ids = df["ID"].to_list()
            led, secs, banding = run_ours(ids, texts(df, "full"), Path(args.work) / ds, None, None, None, dedup=dedup)
            sc = score(ids, groups, led)
            runs.append({"config": name, "dedup": dedup, "dataset": ds, "variant": "full", "seconds": round(secs, 2), **banding, **sc})
            f1s.append(sc["pairwise"]["f1"]); ps.append(sc["pairwise"]["precision"]); rs.append(sc["pairwise"]["recall"])
            print(f"{name:12.12} {ds:18} pair P {sc['pairwise']['precision']:.4f} R {sc['pairwise']['recall']:.4f} "
                  f"F1 {sc['pairwise']['f1']:.4f}  upstream F1 {sc['upstream']['f1']:.4f}", file=sys.stderr, flush=True)
        lines.append(f"| {name} | " + " | ".join(f"{f:.4f}" for f in f1s)
                     + f" | **{sum(f1s) / len(f1s):.4f}** | {sum(ps) / len(ps):.4f} | {sum(rs) / len(rs):.4f} |")
    table = "\n".join(lines)
    print(table)
    from common import results_path

    path = results_path("bib-dedupe-named", None, args.results_dir)
    path.write_text(json.dumps({"command": shlex.join([sys.executable, *sys.argv]), "when": dt.datetime.now().isoformat(timespec="seconds"),
                                "machine": machine_info(), "table_markdown": table, "runs": runs}, indent=1, default=str))
    print(f"wrote {path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--thresholds", default="0.5,0.6,0.7,0.8")
    ap.add_argument("--shingles", default="w2,w3,c4,c5")
    ap.add_argument("--variants", default="title,title_year,full")
    ap.add_argument("--work", default="/tmp/bib-dedupe-eval")
    ap.add_argument("--results-dir", default=str(HERE / "results"))
    ap.add_argument("--named", action="store_true",
                    help="instead of the grid: the full-record text with the library defaults and with "
                         "configs/dedup-conservative.yaml; pairwise F1 per set and its mean over the sets")
    args = ap.parse_args()

    import logging

    logging.disable(logging.WARNING)
    if args.named:
        return named_configs(args)
    base = upstream_baselines()
    datasets = args.datasets.split(",")
    thresholds = [float(x) for x in args.thresholds.split(",")]
    runs = []
    for ds in datasets:
        df, groups = load(ds)
        ids = df["ID"].to_list()
        for variant in args.variants.split(","):
            txt = texts(df, variant)
            for sh in args.shingles.split(","):
                ngram, char = SHINGLES[sh]
                for thr in thresholds:
                    led, secs, banding = run_ours(ids, txt, Path(args.work) / ds, thr, ngram, char)
                    sc = score(ids, groups, led)
                    runs.append({"dataset": ds, "variant": variant, "shingles": sh, "threshold": thr, "seconds": round(secs, 2),
                                 **banding, **sc})
                    print(f"{ds:18} {variant:5} {sh} {thr}: pair F1 {sc['pairwise']['f1']:.4f}  upstream F1 {sc['upstream']['f1']:.4f}",
                          file=sys.stderr, flush=True)

    def key(r: dict) -> str:
        return f"{r['variant']} {r['shingles']} {r['threshold']}"

    # Best single config on average (over the datasets given, special_cases excluded when others exist).
    avg_sets = [d for d in datasets if d != "special_cases"] or datasets
    by_cfg: dict = {}
    for r in runs:
        if r["dataset"] in avg_sets:
            by_cfg.setdefault(key(r), []).append(r["upstream"]["f1"])
    best_cfg = max(by_cfg, key=lambda k: sum(by_cfg[k]) / len(by_cfg[k]))

    out = []
    out.append("### Upstream-style F1 per configuration (rows: text variant, shingles; columns: threshold)\n")
    for ds in datasets:
        out.append(f"\n**{ds}** (bib-dedupe {base.get(ds, {}).get('bib-dedupe', {}).get('f1', '-')}, "
                   f"asreview {base.get(ds, {}).get('asreview', {}).get('f1', '-')}); cell = upstream F1 / pairwise F1\n")
        out.append("| variant | shingles | " + " | ".join(str(t) for t in thresholds) + " |")
        out.append("|---|---|" + "---|" * len(thresholds))
        for variant in args.variants.split(","):
            for sh in args.shingles.split(","):
                cells = []
                for t in thresholds:
                    r = next(x for x in runs if x["dataset"] == ds and x["variant"] == variant and x["shingles"] == sh and x["threshold"] == t)
                    cells.append(f"{r['upstream']['f1']:.4f} / {r['pairwise']['f1']:.4f}")
                out.append(f"| {variant} | {sh} | " + " | ".join(cells) + " |")
    out.append(f"\n### Per dataset: best configuration (chosen on the labels), the best single configuration on average "
               f"over {', '.join(avg_sets)} (`{best_cfg}`), and the upstream baselines\n")
    hdr = ["dataset", "what", "config", "TP", "FP", "FN", "TN", "up. precision", "up. sensitivity", "up. F1",
           "pair P", "pair R", "pair F1"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|" + "---|" * len(hdr))
    summary = {}
    for ds in datasets:
        rs = [r for r in runs if r["dataset"] == ds]
        best = max(rs, key=lambda r: (r["upstream"]["f1"], r["pairwise"]["f1"]))
        fixed = next(r for r in rs if key(r) == best_cfg)
        summary[ds] = {"best": key(best), "best_upstream": best["upstream"], "best_pairwise": best["pairwise"],
                       "fixed": best_cfg, "fixed_upstream": fixed["upstream"], "fixed_pairwise": fixed["pairwise"],
                       "baselines": base.get(ds, {})}
        for what, r in (("ours, best", best), ("ours, fixed", fixed)):
            u, p = r["upstream"], r["pairwise"]
            out.append(f"| {ds} | {what} | {key(r)} | {u['TP']} | {u['FP']} | {u['FN']} | {u['TN']} | {u['precision']:.4f} | "
                       f"{u['sensitivity']:.4f} | {u['f1']:.4f} | {p['precision']:.4f} | {p['recall']:.4f} | {p['f1']:.4f} |")
        for pkg in ("bib-dedupe", "asreview"):
            b = base.get(ds, {}).get(pkg)
            if b:
                out.append(f"| {ds} | {pkg} (upstream) | | {b['TP']} | {b['FP']} | {b['FN']} | {b['TN']} | {b['precision']:.4f} | "
                           f"{b['sensitivity']:.4f} | {b['f1']:.4f} | | | |")
    md = "\n".join(out)
    print(md)

    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"bib-dedupe-{dt.date.today().isoformat()}"
    path, k = stem.with_suffix(".json"), 1
    while path.exists():
        k += 1
        path = stem.with_name(f"{stem.name}-{k}.json")
    doc = {"command": shlex.join([sys.executable, *sys.argv]), "when": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": machine_info(), "data": str(DATA),
           "scoring": __doc__.split("Scores per dataset:", 1)[1].split("Usage::")[0].strip(),
           "variants": {"title": "title (missing: author + container + year)",
                        "title_year": "title (missing: author + container) + year", "full": "title + author + container + year"},
           "best_single_config": best_cfg, "summary": summary, "runs": runs, "tables_markdown": md}
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
