"""Quality filters: keep/drop parity with datatrove 0.10.1 and speed per core, on a varied generated corpus.

    /work/main/.venv/bin/python bench/quality_parity.py --set report --docs 20000 --repeats 3

Generates the corpus (`quality_corpus.py`; `--set tuning` is the set developed against, `report`
the one reported), runs datatrove's GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter and
FineWebQualityFilter on it in the peer's venv (`--peer-python`, a subprocess running
`quality_datatrove.py`), runs ours (`pipeline.quality`) in this process, both single-threaded, and
reports per filter: agreement on keep/drop, agreement on the rule, C4's output text on documents both
keep, every disagreement with its class, and docs/s and MB/s per core for both (median of the repeats,
datatrove's and ours in the same run). Results: bench/results/quality-parity-<date>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from common import machine_info, results_path  # noqa: E402
from quality_corpus import generate  # noqa: E402

from pipeline.quality.c4 import C4Params, SentenceSplitter, c4_quality  # noqa: E402
from pipeline.quality.fineweb import FineWebParams, fineweb_quality  # noqa: E402
from pipeline.quality.gopher import (GopherQualityParams, GopherRepetitionParams, gopher_quality,  # noqa: E402
                                     gopher_repetition)
from pipeline.quality.words import WordVocab  # noqa: E402

FILTERS = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
# datatrove's reason names -> ours (rule names), to compare which rule fired.
DT_RULES = {
    "gopher_short_doc": "gopher.min_doc_words", "gopher_long_doc": "gopher.max_doc_words",
    "gopher_below_avg_threshold": "gopher.mean_word_length", "gopher_above_avg_threshold": "gopher.mean_word_length",
    "gopher_too_many_hashes": "gopher.hash_word_ratio", "gopher_too_many_ellipsis": "gopher.ellipsis_word_ratio",
    "gopher_too_many_bullets": "gopher.bullet_lines_ratio", "gopher_too_many_end_ellipsis": "gopher.ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "gopher.alpha_words_ratio", "gopher_enough_stop_words": "gopher.stop_words",
    "empty": None, "dup_para_frac": "gopher.dup_para_frac", "dup_para_char_frac": "gopher.dup_para_char_frac",
    "dup_line_frac": "gopher.dup_line_frac", "dup_line_char_frac": "gopher.dup_line_char_frac",
    "lorem_ipsum": "c4.lorem_ipsum", "curly_bracket": "c4.curly_bracket", "too_few_sentences": "c4.min_num_sentences",
    "line_punct_ratio": "fineweb.line_punct_ratio", "short_line_ratio": "fineweb.short_line_ratio",
    "char_dup_ratio": "fineweb.char_dup_ratio", "list_ratio": "fineweb.list_ratio",
}
EMPTY_RULES = {"gopher_repetition": "gopher.text_chars", "fineweb_quality": "fineweb.non_empty_lines"}


def dt_rule(f: str, reason: str | None) -> str | None:
    if reason is None:
        return None
    if reason == "empty":
        return EMPTY_RULES[f]
    if reason.startswith("top_"):
        return f"gopher.top_{reason.split('_')[1]}_gram_char_frac"
    if reason.startswith("duplicated_"):
        return f"gopher.dup_{reason.split('_')[1]}_gram_char_frac"
    return DT_RULES.get(reason, reason)


def ours(texts: list[str], batch: int = 1000) -> dict:
    """Our four filters over the texts in batches, each with a fresh vocabulary (cold memo); seconds each."""
    out = {}
    for f in FILTERS:
        t0 = time.process_time()
        if f == "c4_quality":
            sp = SentenceSplitter("en")
            res = []
            for i in range(0, len(texts), batch):
                res += c4_quality(texts[i:i + batch], C4Params(), sp)
            out[f] = {"fail": [r.failure for r in res], "text": [r.text for r in res]}
        else:
            vocab = WordVocab("en")
            fn, params = {"gopher_quality": (gopher_quality, GopherQualityParams()),
                          "gopher_repetition": (gopher_repetition, GopherRepetitionParams()),
                          "fineweb_quality": (fineweb_quality, FineWebParams())}[f]
            res = []
            for i in range(0, len(texts), batch):
                res += fn(texts[i:i + batch], params, vocab)
            out[f] = {"fail": res}
        out[f]["seconds"] = time.process_time() - t0
    return out


def whole_text_words(texts: list[str]) -> list[list[str]]:
    """datatrove's split_into_words (spaCy over the whole text), for explaining disagreements."""
    import spacy

    nlp = spacy.blank("en")
    out = []
    for t in texts:
        nlp.max_length = len(t) + 10
        out.append([w.text.strip() for w in nlp.make_doc(t) if w.text.strip()])
    return out


def classify(f: str, text: str, dt_keep, dt_reason, our_fail, whole_words, vocab) -> str:
    """Why datatrove and we disagree on one document."""
    if dt_keep is None:
        return f"datatrove raised ({dt_reason}); ours: {our_fail.reason() if our_fail else 'kept'}"
    if f in ("gopher_quality", "gopher_repetition", "fineweb_quality") and whole_words is not None:
        if vocab.tokens(text) != whole_words:
            return "words differ: spaCy over the whole text vs per chunk"
    return "unexplained"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=["tuning", "report"], default="report")
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats on the speed subset")
    ap.add_argument("--speed-docs", type=int, default=3000, help="the first N documents, timed --repeats times")
    ap.add_argument("--work", default="/tmp/quality-parity")
    ap.add_argument("--peer-python", default="/tmp/peers-quality/bin/python")
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info(("spacy", "numba", "numpy"))
    texts = generate(a.set, a.docs)
    digest = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    corpus = work / f"{a.set}-{a.docs}-{digest}.jsonl"
    if not corpus.exists():
        with open(corpus, "w", encoding="utf-8") as fh:
            for i, t in enumerate(texts):
                fh.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    dt_out = work / f"{corpus.stem}.datatrove.json"
    speed_n = min(a.speed_docs, len(texts))
    speed_corpus = work / f"{corpus.stem}.first{speed_n}.jsonl"
    dt_speed = work / f"{corpus.stem}.first{speed_n}.datatrove-r{a.repeats}.json"
    if not speed_corpus.exists():
        speed_corpus.write_text("".join(line + "\n" for line in corpus.read_text("utf-8").split("\n")[:speed_n]), "utf-8")
    for src, dst, rep in ((corpus, dt_out, 1), (speed_corpus, dt_speed, a.repeats)):
        if not dst.exists():
            print(f"datatrove on {src.name}, {rep} repeat(s) ...", flush=True)
            subprocess.run([a.peer_python, str(HERE / "quality_datatrove.py"), str(src), str(dst), "--repeats", str(rep)],
                           check=True)
    dt = json.load(open(dt_out, encoding="utf-8"))
    dt_sp = json.load(open(dt_speed, encoding="utf-8"))
    full_runs = [ours(texts) for _ in range(a.repeats)]
    mine = full_runs[0]
    speed_texts = texts[:speed_n]
    speed_mb = sum(len(t.encode("utf-8")) for t in speed_texts) / 1e6
    runs = [ours(speed_texts) for _ in range(a.repeats)]
    report = {"set": a.set, "docs": len(texts), "mb": round(mb, 3), "corpus_sha256_16": digest, "machine": info,
              "filters": {}}
    whole = None
    for f in FILTERS:
        d = dt[f]
        fails = mine[f]["fail"]
        agree = sum(1 for k, x in zip(d["keep"], fails) if k is not None and k == (x is None))
        raised = sum(1 for k in d["keep"] if k is None)
        same_rule = sum(1 for k, r, x in zip(d["keep"], d["reason"], fails)
                        if k is False and x is not None and dt_rule(f, r) == x.rule)
        both_drop = sum(1 for k, x in zip(d["keep"], fails) if k is False and x is not None)
        dis = [i for i, (k, x) in enumerate(zip(d["keep"], fails)) if k is None or k != (x is None)]
        if dis and whole is None:
            whole = {}
        if dis:
            ws = whole_text_words([texts[i] for i in dis])
            for i, w in zip(dis, ws):
                whole[i] = w
        disagreements = []
        for i in dis:
            x = fails[i]
            disagreements.append({"doc": i, "datatrove": "raised" if d["keep"][i] is None else
                                  ("kept" if d["keep"][i] else f"dropped ({d['reason'][i]})"),
                                  "ours": x.reason() if x else "kept",
                                  "class": classify(f, texts[i], d["keep"][i], d["reason"][i], x, whole.get(i), vocab)})
        entry = {"agree": agree, "docs": len(texts), "agreement": round(agree / len(texts), 6),
                 "datatrove_raised": raised, "kept_datatrove": sum(1 for k in d["keep"] if k),
                 "kept_ours": sum(1 for x in fails if x is None),
                 "same_rule_when_both_drop": f"{same_rule}/{both_drop}", "disagreements": disagreements}
        if f == "c4_quality":
            pairs = [(t, o) for t, o, k, x in zip(d["text"], mine[f]["text"], d["keep"], fails) if k and x is None]
            entry["c4_text_identical"] = f"{sum(1 for t, o in pairs if t == o)}/{len(pairs)}"
        dts = sorted(dt_sp[f]["seconds"])
        our = sorted(r[f]["seconds"] for r in runs)
        dmed, omed = statistics.median(dts), statistics.median(our)
        entry["speed"] = {"docs": speed_n, "mb": round(speed_mb, 3), "clock": "CPU seconds of the process (shared machine)",
                          "datatrove_seconds": [round(s, 3) for s in dts], "ours_seconds": [round(s, 3) for s in our],
                          "datatrove_docs_per_s": round(speed_n / dmed, 1), "ours_docs_per_s": round(speed_n / omed, 1),
                          "datatrove_mb_per_s": round(speed_mb / dmed, 3), "ours_mb_per_s": round(speed_mb / omed, 3),
                          "ratio": round(dmed / omed, 1),
                          "full_corpus": {"docs": len(texts), "mb": round(mb, 3),
                                          "datatrove_seconds_one_run": round(d["seconds"][0], 3),
                                          "ours_seconds": [round(r[f]["seconds"], 3) for r in full_runs],
                                          "datatrove_mb_per_s": round(mb / d["seconds"][0], 3),
                                          "ours_mb_per_s_median": round(mb / statistics.median(r[f]["seconds"] for r in full_runs), 3),
                                          "ratio": round(d["seconds"][0] / statistics.median(r[f]["seconds"] for r in full_runs), 1)}}
        report["filters"][f] = entry
        print(f"{f:18s} agree {agree}/{len(texts)} ({100 * agree / len(texts):.3f}%) raised {raised} "
              f"rule {same_rule}/{both_drop}  full corpus: dt {entry['speed']['full_corpus']['datatrove_mb_per_s']} MB/s "
              f"ours {entry['speed']['full_corpus']['ours_mb_per_s_median']} MB/s x{entry['speed']['full_corpus']['ratio']}; "
              f"first {speed_n}: dt {entry['speed']['datatrove_mb_per_s']} ours {entry['speed']['ours_mb_per_s']} "
              f"x{entry['speed']['ratio']}"
              + (f"  c4 text {entry['c4_text_identical']}" if f == "c4_quality" else ""), flush=True)
        for x in disagreements[:20]:
            print("   ", x)
    report["loadavg_after"] = list(__import__("os").getloadavg())
    out = Path(a.results) if a.results else results_path("quality-parity", None)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
