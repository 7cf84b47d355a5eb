#!/usr/bin/env python
"""Hash-matching speed per core: decode + PDQ, exact digest lookups, PDQ radius queries (ours vs FAISS).

Sections (each timed run is a fresh single-threaded subprocess under `flock /tmp/hygiene-bench.lock`,
with `uptime` recorded before and after, so it never overlaps other benchmarks on the machine):

  decode   images/s per core through pipeline.safety.images.decode_image + perceptual.pdq, for
           (a) the benign ThreatExchange JPEG vectors (1600x1004 bridge family, 256x256 LabelMe)
           and (b) generated 1024x1024 JPEGs (gradients, shapes, noise): full decode vs JPEG draft
           mode (draft_max_side=512), FULL vs CLI_512 convention. Also the Hamming cost of draft
           vs full decode on every JPEG vector.
  exact    lookups/s against 10M random 32-byte digests (sha256-sized): a Python set of bytes vs a
           sorted numpy array of the first 8 bytes as uint64 + searchsorted + full-row check, one
           lookup at a time (how a per-record matcher calls it) and in batches of 100k.
  pdq      queries/s per core against 1M random 256-bit hashes at radius 31: HammingIndex
           (multi-index hashing, exact) in batches and one at a time; a sample of queries is
           checked against LinearIndex (exact recall and precision). Queries: half random, half
           planted near an entry at distance 0..40.
  faiss    the same data through FAISS IndexBinaryMultiHash(256 bits, 16 tables of 16 bits,
           nflip=1: exact at radius 31 by the same pigeonhole argument) and IndexBinaryFlat, with
           one OpenMP thread, in a separate venv (--faiss-python, default /tmp/peers-faiss). FAISS
           range_search keeps distances < radius, so it is called with 32. Its results are checked
           against ours.

Issue #16 sections (code in bench/hashmatch_variants.py; "before" = the hash of the image as shown
and the old matcher, "after" = the defaults with EXIF-orientation and border variants). The four
that measure no time run without the lock; `--no-lock` lets the timed ones run beside other jobs
(before and after are timed alternately in one process, so their ratio holds; read the uptime):

  orientation  10 listed reference photos stored under each EXIF orientation 1-8, 8 benign edits
               each, saved with the tag, without it (stored order), without it (turned upright);
               matched against plain / built / raw lists; and the issue's own case (one photo
               tagged 6, its edits' tags lost).
  borders      uniform borders of 2, 5, 10% in 5 colours, letterbox/pillarbox, crops of 5/10%:
               PDQ distances before and after trimming, matches before/after.
  falsematch   unrelated pairs within the radius (PDQ 31, pHash 6), before/after: the reference
               photos pairwise and a generated pool (--pool images) pairwise and against the list.
  badinput     every orientation tag in JPEG/PNG/WebP/TIFF, broken EXIF, flat, tiny, elongated
               images: outcome counts, exceptions (must be 0), matches (must be 0).
  imagespeed   hash_image images/s per core before/after (vectors, generated 1024 px, tagged,
               framed), and match_image against a 100k-entry list before/after.

Usage::

    .venv/bin/python bench/hashmatch.py                     # everything, 3 repeats
    .venv/bin/python bench/hashmatch.py --sections pdq,faiss --repeats 1
    .venv/bin/python bench/hashmatch.py --sections orientation,borders,falsematch,badinput,imagespeed

Results: bench/results/hashmatch-<date>.json (suffixed -2, -3, ... when it exists).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import cmd_out  # noqa: E402

LOCK = "/tmp/hygiene-bench.lock"
TAG = "BENCH_RESULT "
VECTORS = REPO.parent / "shared" / "data" / "hashmatch" / "pdq-vectors" / "files"
WORK = HERE / "results" / "tmp" / "hashmatch"
SINGLE_THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                     "MKL_NUM_THREADS": "1"}
N_DIGESTS, N_PDQ, N_QUERIES, RADIUS, SEED = 10_000_000, 1_000_000, 2_000, 31, 20261122


def median_rate(count: int, fn, repeats: int) -> dict:
    """Run fn() `repeats` times; items/s from the median wall time."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"items": count, "seconds_median": round(med, 4), "seconds_all": [round(x, 4) for x in times],
            "per_second": round(count / med, 1)}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ============================================================================================
# Workers (run inside the flock'ed subprocess)


def synthetic_jpegs(n: int, side: int = 1024) -> list[bytes]:
    """Benign generated pictures: smooth gradients, random rectangles and ellipses, mild noise."""
    import io

    from PIL import Image, ImageDraw

    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3, 3)
        base = np.stack([np.sin(a * 6 * x + b), np.cos(b * 5 * y + c), np.sin(c * 4 * (x + y))], -1)
        rgb = ((base * 0.5 + 0.5) * 255 + rng.normal(0, 6, (side, side, 3))).clip(0, 255).astype(np.uint8)
        im = Image.fromarray(rgb)
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x0, y0 = rng.integers(0, side - 64, 2)
            x1, y1 = x0 + rng.integers(32, side // 3), y0 + rng.integers(32, side // 3)
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([int(x0), int(y0), int(x1), int(y1)], fill=colour)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def w_decode(repeats: int) -> dict:
    sys.path.insert(0, str(REPO))
    from pipeline.safety.images import decode_image
    from pipeline.safety.perceptual import PdqConvention, hamming, pdq

    vector_files = sorted(p for p in VECTORS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    vectors = [p.read_bytes() for p in vector_files]
    sets = {"vectors_jpeg": vectors, "generated_1024": synthetic_jpegs(40)}
    variants = {
        "decode_only_full": lambda d: decode_image(d),
        "decode_only_draft512": lambda d: decode_image(d, draft_max_side=512),
        "decode+pdq_full": lambda d: pdq(decode_image(d)),
        "decode+pdq_draft512": lambda d: pdq(decode_image(d, draft_max_side=512)),
        "decode+pdq_cli512": lambda d: pdq(decode_image(d), convention=PdqConvention.CLI_512),
        "decode_draft512+pdq_cli512": lambda d: pdq(decode_image(d, draft_max_side=512), convention=PdqConvention.CLI_512),
    }
    for fn in variants.values():            # warm-up: imports, libjpeg tables
        fn(vectors[0])
    timings = {s: {v: median_rate(len(data), lambda: [fn(d) for d in data], repeats) for v, fn in variants.items()}
               for s, data in sets.items()}
    cost = []
    for path, data in zip(vector_files, vectors):
        full, draft = pdq(decode_image(data)), pdq(decode_image(data, draft_max_side=512))
        cli = pdq(decode_image(data), convention=PdqConvention.CLI_512)
        cost.append({"file": path.relative_to(VECTORS).as_posix(), "size": list(decode_image(data).shape[1::-1]),
                     "draft_vs_full": hamming(full.hex, draft.hex), "cli_vs_full": hamming(full.hex, cli.hex),
                     "quality_full": full.quality, "quality_draft": draft.quality})
    big = [c for c in cost if max(c["size"]) >= 1024]
    gen = sets["generated_1024"]
    gen_cost = [hamming(pdq(decode_image(d)).hex, pdq(decode_image(d, draft_max_side=512)).hex) for d in gen]
    summary = {
        "vectors_draft_changes_anything": sum(c["draft_vs_full"] > 0 for c in cost),
        "vectors_at_least_1024px": len(big),
        "draft_vs_full_bits_on_those": {"mean": round(statistics.mean(c["draft_vs_full"] for c in big), 2),
                                        "max": max(c["draft_vs_full"] for c in big)} if big else None,
        "cli_vs_full_bits_on_those": {"mean": round(statistics.mean(c["cli_vs_full"] for c in big), 2),
                                      "max": max(c["cli_vs_full"] for c in big)} if big else None,
        "generated_1024_draft_vs_full_bits": {"mean": round(statistics.mean(gen_cost), 2), "max": max(gen_cost)},
    }
    return {"timings": timings, "draft_cost_summary": summary, "draft_cost_per_vector": cost}


def w_exact(repeats: int) -> dict:
    rng = np.random.default_rng(SEED)
    rows = rng.integers(0, 2**64, (N_DIGESTS, 4), dtype=np.uint64)     # 32 random bytes each, like sha256
    raw = rows.astype(">u8").tobytes()
    hits = rows[rng.integers(0, N_DIGESTS, 50_000)]
    misses = rng.integers(0, 2**64, (50_000, 4), dtype=np.uint64)
    queries = np.concatenate([hits, misses])[rng.permutation(100_000)]
    qbytes = [queries[i].astype(">u8").tobytes() for i in range(len(queries))]
    out: dict = {"digests": N_DIGESTS, "queries": len(queries), "hits_expected": 50_000}

    rss0 = rss_mib()
    t = time.perf_counter()
    digest_set = {raw[i:i + 32] for i in range(0, len(raw), 32)}
    out["set_build_s"] = round(time.perf_counter() - t, 2)
    out["set_rss_mib"] = round(rss_mib() - rss0, 1)
    out["set_single"] = median_rate(len(qbytes), lambda: sum(q in digest_set for q in qbytes), repeats)
    out["set_hits"] = sum(q in digest_set for q in qbytes)
    del digest_set

    rss0 = rss_mib()
    t = time.perf_counter()
    order = np.argsort(rows[:, 0], kind="stable")
    table = rows[order]
    keys = np.ascontiguousarray(table[:, 0])
    out["sorted_build_s"] = round(time.perf_counter() - t, 2)
    out["sorted_rss_mib"] = round(rss_mib() - rss0, 1)

    def batch_lookup(q: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(keys, q[:, 0])
        found = np.zeros(len(q), dtype=bool)
        # Equal first words are rare (~3e-6 pairs at 10M); walk each run of equal keys until it ends.
        step = 0
        while True:
            p = pos + step
            live = (p < len(keys)) & ~found
            live[live] = keys[p[live]] == q[live, 0]
            if not live.any():
                return found
            found[live] = (table[p[live]] == q[live]).all(axis=1)
            step += 1

    def single(qb: bytes) -> bool:
        q = np.frombuffer(qb, dtype=">u8")
        i = int(np.searchsorted(keys, q[0]))
        while i < len(keys) and keys[i] == q[0]:
            if (table[i] == q).all():
                return True
            i += 1
        return False

    out["sorted_batch_100k"] = median_rate(len(queries), lambda: batch_lookup(queries), repeats)
    out["sorted_hits"] = int(batch_lookup(queries).sum())
    out["sorted_single"] = median_rate(20_000, lambda: [single(q) for q in qbytes[:20_000]], repeats)
    out["single_hits_agree"] = all(single(q) == b for q, b in zip(qbytes[:20_000], batch_lookup(queries[:20_000])))
    return out


def pdq_data(path: Path) -> None:
    """1M random hashes and 2,000 queries (half planted at distance 0..40 from an entry)."""
    rng = np.random.default_rng(SEED)
    hashes = rng.integers(0, 2**64, (N_PDQ, 4), dtype=np.uint64)
    queries = rng.integers(0, 2**64, (N_QUERIES, 4), dtype=np.uint64)
    for k in range(N_QUERIES // 2):
        v = hashes[rng.integers(N_PDQ)].copy()
        for b in rng.choice(256, k % 41, replace=False):
            v[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
        queries[k] = v
    np.savez(path, hashes=hashes, queries=queries)


def w_pdq(data: Path, repeats: int) -> dict:
    sys.path.insert(0, str(REPO))
    from pipeline.safety.index import HammingIndex, LinearIndex

    z = np.load(data)
    hashes, queries = z["hashes"], z["queries"]
    ids = [str(i) for i in range(len(hashes))]
    rss0 = rss_mib()
    t = time.perf_counter()
    index = HammingIndex()
    index.build(hashes, ids)
    out = {"entries": len(hashes), "queries": len(queries), "radius": RADIUS,
           "build_s": round(time.perf_counter() - t, 2), "index_rss_mib": round(rss_mib() - rss0, 1)}
    index.query_many(queries[:10], RADIUS)          # numba cache load
    out["mih_batch"] = median_rate(len(queries), lambda: index.query_many(queries, RADIUS), repeats)
    out["mih_single"] = median_rate(len(queries), lambda: [index.query(q, RADIUS) for q in queries], repeats)
    got = index.query_many(queries, RADIUS)
    out["results"] = sum(len(r) for r in got)
    linear = LinearIndex()
    linear.build(hashes, ids)
    sample = np.r_[0:100, len(queries) // 2:len(queries) // 2 + 100]
    out["linear_single"] = median_rate(20, lambda: [linear.query(queries[i], RADIUS) for i in sample[:20]], 1)
    ref = linear.query_many(queries[sample], RADIUS)
    out["checked_against_linear"] = len(sample)
    out["exact_on_sample"] = all(got[i] == r for i, r in zip(sample, ref))
    (data.parent / "ours-results.json").write_text(json.dumps([[int(i) for i, _ in r] for r in got]))
    return out


FAISS_WORKER = r'''
import json, statistics, sys, time
import numpy as np, faiss
faiss.omp_set_num_threads(1)
z = np.load(sys.argv[1]); repeats = int(sys.argv[2]); radius = int(sys.argv[3])
xb = np.ascontiguousarray(z["hashes"]).view(np.uint8).reshape(len(z["hashes"]), 32)
xq = np.ascontiguousarray(z["queries"]).view(np.uint8).reshape(len(z["queries"]), 32)
def rate(n, fn):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    m = statistics.median(ts)
    return {"items": n, "seconds_median": round(m, 4), "seconds_all": [round(x, 4) for x in ts], "per_second": round(n / m, 1)}
out = {"faiss": faiss.__version__, "threads": faiss.omp_get_max_threads()}
t = time.perf_counter()
mih = faiss.IndexBinaryMultiHash(256, 16, 16); mih.nflip = 1; mih.add(xb)
out["mih_build_s"] = round(time.perf_counter() - t, 2)
def search(index, q):
    lims, D, I = index.range_search(q, radius + 1)      # FAISS keeps distance < radius
    return [sorted(I[lims[k]:lims[k + 1]].tolist()) for k in range(len(q))]
search(mih, xq[:10])
out["mih_batch"] = rate(len(xq), lambda: search(mih, xq))
out["mih_single"] = rate(200, lambda: [search(mih, xq[i:i + 1]) for i in range(200)])
res = search(mih, xq)
flat = faiss.IndexBinaryFlat(256); flat.add(xb)
out["flat_batch_200"] = rate(200, lambda: search(flat, xq[:200]))
sample = list(range(100)) + list(range(len(xq) // 2, len(xq) // 2 + 100))
ref = search(flat, xq[sample])
out["mih_equals_flat_on_sample"] = all(res[i] == r for i, r in zip(sample, ref))
json.dump(res, open(sys.argv[4], "w"))
print("BENCH_RESULT " + json.dumps(out))
'''


VARIANT_SECTIONS = ("orientation", "borders", "falsematch", "badinput", "imagespeed")


def w_variants(section: str, args) -> dict:
    import tempfile

    import hashmatch_variants as hv

    with tempfile.TemporaryDirectory(prefix="hashmatch-") as tmp:
        if section == "orientation":
            return hv.section_orientation(Path(tmp))
        if section == "borders":
            return hv.section_borders(Path(tmp))
        if section == "falsematch":
            return hv.section_falsematch(Path(tmp), args.pool, Path(args.natural) if args.natural else None)
        if section == "badinput":
            return hv.section_badinput(Path(tmp))
        return hv.section_imagespeed(args.repeats, synthetic_jpegs)


def worker(section: str, args) -> int:
    if section in VARIANT_SECTIONS:
        res = w_variants(section, args)
    elif section == "decode":
        res = w_decode(args.repeats)
    elif section == "exact":
        res = w_exact(args.repeats)
    elif section == "pdq":
        res = w_pdq(Path(args.data), args.repeats)
    else:
        raise SystemExit(f"unknown section {section}")
    print(TAG + json.dumps(res))
    return 0


# ============================================================================================
# Driver


UNTIMED = ("orientation", "borders", "falsematch", "badinput")      # measure no time: no need to wait for the lock


def run_locked(name: str, cmd: list[str], lock: bool = True) -> dict:
    full = (["flock", LOCK] if lock else []) + cmd
    env = {**os.environ, **SINGLE_THREAD_ENV}
    rec: dict = {"section": name, "command": shlex.join(full), "uptime_before": cmd_out(["uptime"])}
    print(f"[{name}] {rec['command']}", flush=True)
    t = time.perf_counter()
    r = subprocess.run(full, capture_output=True, text=True, cwd=str(REPO), env=env)
    rec["wall_s_including_lock_wait"] = round(time.perf_counter() - t, 1)
    rec["uptime_after"] = cmd_out(["uptime"])
    rec["returncode"] = r.returncode
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(TAG)]
    if r.returncode != 0 or not lines:
        rec["stderr_tail"] = r.stderr[-3000:]
        print(r.stderr[-3000:], file=sys.stderr)
        return rec
    rec["result"] = json.loads(lines[-1][len(TAG):])
    return rec


def results_path(stem: str) -> Path:
    base = HERE / "results" / f"{stem}-{dt.date.today().isoformat()}"
    path, k = base.with_suffix(".json"), 2
    while path.exists():
        path, k = Path(f"{base}-{k}.json"), k + 1
    return path


def table(report: dict) -> str:
    rows = []
    s = report["sections"]
    if "decode" in s and "result" in s["decode"]:
        for dset, variants in s["decode"]["result"]["timings"].items():
            for v, r in variants.items():
                rows.append((f"decode {dset}", v, f"{r['per_second']:,.0f} images/s"))
    if "exact" in s and "result" in s["exact"]:
        e = s["exact"]["result"]
        rows.append(("exact 10M digests", f"python set, one at a time ({e['set_rss_mib']:,.0f} MiB)",
                     f"{e['set_single']['per_second']:,.0f} lookups/s"))
        rows.append(("exact 10M digests", f"sorted uint64 + searchsorted, batch 100k ({e['sorted_rss_mib']:,.0f} MiB)",
                     f"{e['sorted_batch_100k']['per_second']:,.0f} lookups/s"))
        rows.append(("exact 10M digests", "sorted uint64 + searchsorted, one at a time",
                     f"{e['sorted_single']['per_second']:,.0f} lookups/s"))
    if "pdq" in s and "result" in s["pdq"]:
        p = s["pdq"]["result"]
        rows.append(("PDQ 1M, r=31", "HammingIndex batch", f"{p['mih_batch']['per_second']:,.0f} queries/s"))
        rows.append(("PDQ 1M, r=31", "HammingIndex one at a time", f"{p['mih_single']['per_second']:,.0f} queries/s"))
        rows.append(("PDQ 1M, r=31", "LinearIndex (numpy)", f"{p['linear_single']['per_second']:,.1f} queries/s"))
    if "faiss" in s and "result" in s["faiss"]:
        f = s["faiss"]["result"]
        rows.append(("PDQ 1M, r=31", "FAISS IndexBinaryMultiHash batch", f"{f['mih_batch']['per_second']:,.0f} queries/s"))
        rows.append(("PDQ 1M, r=31", "FAISS IndexBinaryMultiHash one at a time", f"{f['mih_single']['per_second']:,.0f} queries/s"))
        rows.append(("PDQ 1M, r=31", "FAISS IndexBinaryFlat batch", f"{f['flat_batch_200']['per_second']:,.1f} queries/s"))
    rows += variant_rows(s)
    w = [max(len(r[i]) for r in rows) for i in range(3)] if rows else [0, 0, 0]
    return "\n".join(f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}" for a, b, c in rows)


def variant_rows(s: dict) -> list[tuple[str, str, str]]:
    """Summary rows of the issue #16 sections."""
    rows = []
    if "result" in s.get("orientation", {}):
        r = s["orientation"]["result"]
        for label, v in r["issue_case"].items():
            rows.append(("issue #16 case (1 of 10 tagged 6)", label, f"{v['matched']}/{v['copies']} matched"))
        for kind, by_list in r["totals_all_orientations"].items():
            for lst, w in by_list.items():
                rows.append((f"orientation 1-8, {kind}", f"list {lst}",
                             f"{w['before']['matched']}/{w['before']['copies']} -> {w['after']['matched']}/{w['after']['copies']}"
                             f" (wrong entry {w['after']['wrong_entry']})"))
    if "result" in s.get("borders", {}):
        for case, v in s["borders"]["result"].items():
            if "distance_before" in v:
                t = v["distance_trimmed"]
                rows.append((f"border/crop {case}", f"d {v['distance_before']['min']}-{v['distance_before']['max']}"
                             + (f", trimmed {t['min']}-{t['max']}" if t else ", not trimmed"),
                             f"{v['matched_before']} -> {v['matched_after']} ({v['matched_after_built_list']} built list)"
                             f" of {len(v['photos'])}"))
    if "result" in s.get("falsematch", {}):
        r = s["falsematch"]["result"]
        for typ in ("pdq", "phash"):
            ref = r["reference_photos"][typ]
            rows.append((f"false matches {typ}", "reference photos pairwise",
                         f"{ref['before']['pairs']} -> {ref['after']['pairs']}"))
            if "natural_tiles" in r:
                n = r["natural_tiles"]
                rows.append((f"false matches {typ}", f"{n['tiles']} natural tiles of {n['photos']} photos, cross-photo",
                             f"{n[typ]['before']['pairs']} -> {n[typ]['after']['pairs']}"))
            p = r["pool"][typ]
            rows.append((f"false matches {typ}", f"{r['pool']['images']} generated, pairwise / vs list",
                         f"{p['before']['pairs_within_radius']}/{p['before']['pool_vs_10_photo_list']} -> "
                         f"{p['after']['pairs_within_radius']}/{p['after']['pool_vs_10_photo_list']}"))
    if "result" in s.get("badinput", {}):
        r = s["badinput"]["result"]
        rows.append(("bad input", f"{r['cases']} cases", f"{r['exceptions']} exceptions, {r['pdq_matches']} + "
                     f"{r['phash_matches']} matches"))
    if "result" in s.get("imagespeed", {}):
        r = s["imagespeed"]["result"]
        for dset, v in r["hash_image"].items():
            rows.append((f"hash_image {dset}", "before -> after",
                         f"{v['before']['images_per_s']:,.1f} -> {v['after']['images_per_s']:,.1f} images/s"))
        rows.append(("match_image 100k list", "before -> after",
                     f"{r['match_image_100k_before']['per_s']:,.0f} -> {r['match_image_100k_after']['per_s']:,.0f} images/s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="decode,exact,pdq,faiss")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--faiss-python", default="/tmp/peers-faiss/bin/python")
    ap.add_argument("--pool", type=int, default=3000, help="falsematch: generated images in the pool")
    ap.add_argument("--no-lock", action="store_true", help="do not wait for the benchmark lock (timings then share "
                    "the machine with other jobs: read the recorded uptime)")
    ap.add_argument("--natural", default=None, help="falsematch: a folder of benign photos to cut into tiles "
                    "(e.g. skimage/data from the scikit-image wheel)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args)

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "pdq-1m.npz"
    if ("pdq" in sections or "faiss" in sections) and not data.exists():
        pdq_data(data)
    me = [sys.executable, str(Path(__file__).resolve())]
    report: dict = {
        "date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
        "python": platform.python_version(), "nproc": os.cpu_count(), "uptime_start": cmd_out(["uptime"]),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in (cmd_out(["lscpu"]) or "").splitlines()
                     if ln.startswith("Model name")), None),
        "git_commit": cmd_out(["git", "rev-parse", "HEAD"]), "single_thread_env": SINGLE_THREAD_ENV,
        "versions": json.loads(cmd_out([sys.executable, "-c", "import json;from importlib.metadata import version as v;"
                                        "print(json.dumps({k: v(k) for k in ['numpy','numba','pillow','pdqhash','imagehash']}))"])
                               or "{}"),
        "sections": {},
    }
    for s in sections:
        if s == "faiss":
            if not Path(args.faiss_python).exists():
                report["sections"]["faiss"] = {"skipped": f"{args.faiss_python} not found (pip install faiss-cpu there)"}
                continue
            script = WORK / "faiss_worker.py"
            script.write_text(FAISS_WORKER)
            rec = run_locked("faiss", [args.faiss_python, str(script), str(data), str(args.repeats), str(RADIUS),
                                       str(WORK / "faiss-results.json")])
            ours_file = WORK / "ours-results.json"
            if "result" in rec and ours_file.exists():
                ours = [sorted(r) for r in json.loads(ours_file.read_text())]
                theirs = json.loads((WORK / "faiss-results.json").read_text())
                rec["result"]["same_results_as_ours_on_all_queries"] = ours == theirs
        else:
            cmd = me + ["--worker", s, "--repeats", str(args.repeats), "--pool", str(args.pool)] + \
                (["--natural", args.natural] if args.natural else []) + \
                (["--data", str(data)] if s == "pdq" else [])
            rec = run_locked(s, cmd, lock=s not in UNTIMED and not args.no_lock)
        report["sections"][s] = rec
    report["uptime_end"] = cmd_out(["uptime"])
    out = results_path("hashmatch")
    out.write_text(json.dumps(report, indent=1))
    print("\n" + table(report))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
