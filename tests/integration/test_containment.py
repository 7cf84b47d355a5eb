"""The containment stage: a short record pasting most of a long one is flagged against it, an
unrelated one is not, near-equal records never both drop, boilerplate alone flags nothing, the
ledger's evidence, the tag action, and the kernel against a brute-force reference."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.config import parse_config
from pipeline.dedup.containment import containment, find_contained, record_shingles
from pipeline.executor import run_local
from pipeline.stages.containment import evidence_of
from tests.conftest import run_one_stage

RNG = random.Random(18)
VOCAB = [f"w{i}" for i in range(5000)]


def _words(n: int, rng: random.Random = RNG) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(n)]


def _run(tmp: Path, rows: list[dict], options: dict | None = None,
         reference: list[dict] | None = None) -> tuple[dict, set, pl.DataFrame]:
    """Run safety + containment (`reference`: a second source of priority 1); (manifest, record
    ids written, ledger)."""
    srcs = []
    for name, recs, prio in (("s", rows, 0), ("ref", reference, 1)):
        if recs is None:
            continue
        d = tmp / "in" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        srcs.append({"name": name, "kind": "jsonl", "paths": [str(d)], "id_field": "id", "priority": prio})
    out = tmp / "out"
    m = run_local(parse_config({"sources": srcs, "output": {"dir": str(out)},
                                "stages": [{"kind": "safety"}, {"kind": "containment", "config": options or {}}]}))
    shards = sorted((out / "shards").glob("*.parquet"))
    kept = set(pl.concat([pl.read_parquet(p) for p in shards])["record_id"].to_list()) if shards else set()
    ledger = pl.concat([pl.read_parquet(p) for p in sorted((out / "ledger").glob("*.parquet"))])
    return m, kept, ledger


def _row(ledger: pl.DataFrame, rid: str) -> dict:
    return ledger.filter(pl.col("record_id") == rid).row(0, named=True)


def test_short_paste_of_long_article_is_flagged_against_it(tmp_path):
    article = _words(3000)
    # 200 words pasted from the middle, wrapped in 60 words of the answer's own (containment ~0.75)
    answer = " ".join(_words(30) + article[1200:1400] + _words(30))
    unrelated = " ".join(_words(250))
    rows = [{"id": "article", "text": " ".join(article)}, {"id": "answer", "text": answer},
            {"id": "other", "text": unrelated}]
    m, kept, ledger = _run(tmp_path, rows)
    assert kept == {"article", "other"}
    r = _row(ledger, "answer")
    assert r["decision"] == "dropped_contained" and r["stage"] == "containment"
    assert r["reason"].startswith("containment 0.") and r["reason"].endswith(" in article")
    ev = evidence_of(r["evidence"])
    assert ev["contained_in"] == "article" and 0.6 < ev["containment"] < 0.9
    assert ev["containment_shingles"] == 256  # 260 words, 5-grams
    assert _row(ledger, "other")["decision"] == "kept" and _row(ledger, "article")["decision"] == "kept"
    assert m["stages"]["containment"]["dropped"] == 1


def test_near_equal_records_do_not_both_drop(tmp_path):
    base = _words(400)
    a = " ".join(base)
    b = " ".join(base[:200] + ["changed"] + base[201:])       # same length, one word differs
    c = " ".join(base + _words(3))                            # a little longer: contains both
    m, kept, ledger = _run(tmp_path, [{"id": "a", "text": a}, {"id": "b", "text": b}])
    assert len(kept) == 1  # exactly one of the pair survives, whichever the order picks
    dropped = ({"a", "b"} - kept).pop()
    assert evidence_of(_row(ledger, dropped)["evidence"])["contained_in"] == kept.pop()
    # a chain: the longest record survives, the others point at a record (never both of a pair)
    m, kept, ledger = _run(tmp_path / "chain", [{"id": "a", "text": a}, {"id": "b", "text": b}, {"id": "c", "text": c}])
    assert kept == {"c"}


def test_dropping_never_loses_text_down_a_chain(tmp_path):
    x, y, z = _words(100), _words(300), _words(200)
    rows = [{"id": "A", "text": " ".join(x)}, {"id": "B", "text": " ".join(x + y)}, {"id": "C", "text": " ".join(y + z)}]
    # B is mostly in C (0.75), A wholly in B but not at all in C: dropping B keeps A
    m, kept, ledger = _run(tmp_path, rows)
    assert kept == {"A", "C"}
    assert evidence_of(_row(ledger, "B")["evidence"])["contained_in"] == "C"
    # tagging names each record's best container whatever its fate
    m, kept, ledger = _run(tmp_path / "t", rows, {"action": "tag"})
    assert kept == {"A", "B", "C"}
    assert evidence_of(_row(ledger, "A")["evidence"]) == {"contained_in": "B", "containment": 1.0,
                                                          "containment_shared": 96, "containment_shingles": 96}


def test_a_higher_priority_source_is_never_flagged_against_a_lower_one(tmp_path):
    article = _words(200)
    answer = " ".join(_words(100) + article[:180])   # longer than the article it pastes
    # one source: the article (fewer shingles, 176 of its 196 in the answer) is the one contained
    m, kept, ledger = _run(tmp_path, [{"id": "article", "text": " ".join(article)}, {"id": "answer", "text": answer}])
    assert kept == {"answer"} and evidence_of(_row(ledger, "article")["evidence"])["contained_in"] == "answer"
    # the article in a reference source of higher priority: the answer is flagged against it
    m, kept, ledger = _run(tmp_path / "p", [{"id": "answer", "text": answer}], {"threshold": 0.5},
                           reference=[{"id": "article", "text": " ".join(article)}])
    assert kept == {"article"}
    assert evidence_of(_row(ledger, "answer")["evidence"])["contained_in"] == "article"


def test_unrelated_and_boilerplate_only_overlap_do_not_flag(tmp_path):
    boiler = "this page is part of the example com network all rights reserved by the example company"
    rows = [{"id": f"r{i:03d}", "text": boiler + " " + " ".join(_words(40))} for i in range(12)]
    # with max_df 5 the boilerplate shingles (in 12 records) pair nobody: nothing is flagged,
    m, kept, ledger = _run(tmp_path, rows, {"max_df": 5, "threshold": 0.2})
    assert len(kept) == 12 and m["stages"]["containment"]["dropped"] == 0
    # while with max_df 50 they are ordinary shingles: 12 of 48 shared, containment 0.25 >= 0.2
    m, kept, ledger = _run(tmp_path / "b", rows, {"max_df": 50, "threshold": 0.2})
    assert m["stages"]["containment"]["dropped"] == 11


def test_tag_action_keeps_the_record_with_evidence(tmp_path):
    article = _words(800)
    rows = [{"id": "src", "text": " ".join(article)}, {"id": "copy", "text": " ".join(article[100:300])}]
    m, kept, ledger = _run(tmp_path, rows, {"action": "tag"})
    assert kept == {"src", "copy"}
    r = _row(ledger, "copy")
    assert r["decision"] == "kept"
    assert evidence_of(r["evidence"]) == {"contained_in": "src", "containment": 1.0, "containment_shared": 196,
                                          "containment_shingles": 196}


def test_bad_inputs_are_processed(tmp_path):
    hebrew = [RNG.choice("אבגדהוזחטיכלמנסעפצקרשת") + RNG.choice("אבגדהוזחטיכלמנסעפצקרשת") + RNG.choice("אבגדהוזחטיכלמנסעפצקרשת")
              for _ in range(120)]
    rows = [{"id": "empty", "text": ""}, {"id": "ws", "text": "   \n\t "}, {"id": "emoji", "text": "🙂" * 50},
            {"id": "rtl", "text": " ".join(hebrew[:100])}, {"id": "rtl2", "text": " ".join(hebrew)},
            {"id": "short", "text": "three words only"}, {"id": "big", "text": " ".join(_words(200_000))}]
    m, kept, ledger = _run(tmp_path, rows)
    assert m["conservation"]["balanced"]
    # the Hebrew text is contained in its longer twin; nothing else is flagged by this stage
    assert _row(ledger, "rtl")["decision"] == "dropped_contained"
    assert evidence_of(_row(ledger, "rtl")["evidence"])["contained_in"] == "rtl2"
    assert ledger.filter(pl.col("stage") == "containment")["record_id"].to_list() == ["rtl"]
    assert {"emoji", "short", "big", "rtl2"} <= kept


def test_kernel_matches_brute_force(tmp_path):
    rng = random.Random(3)
    vocab = [f"v{i}" for i in range(60)]  # small vocabulary: many partial overlaps
    texts = []
    for i in range(60):
        if i and i % 3 == 0:
            src = texts[rng.randrange(len(texts))].split()
            k = rng.randrange(5, len(src))
            texts.append(" ".join(src[:k] + [rng.choice(vocab) for _ in range(rng.randrange(0, 10))]))
        else:
            texts.append(" ".join(rng.choice(vocab) for _ in range(rng.randrange(3, 60))))
    flat, offs = record_shingles(pa.array(texts), 3)
    (tmp_path / "k").mkdir()
    pl.DataFrame({"row": np.repeat(np.arange(len(texts)), np.diff(offs)), "hash": flat}).write_parquet(tmp_path / "k" / "u.parquet")
    live = pl.DataFrame({"unit": [0] * len(texts), "row": list(range(len(texts))), "_i": list(range(len(texts))),
                         "priority": [0] * len(texts), "rank": list(range(len(texts)))})
    found, stats = find_contained([(0, tmp_path / "k" / "u.parquet")], live, 0.6, 10_000, 3)
    sliced, sliced_stats = find_contained([(0, tmp_path / "k" / "u.parquet")], live, 0.6, 10_000, 3, partition_rows=200)
    assert sliced_stats["partitions"] > 3 and sliced.sort("_i").equals(found.sort("_i"))
    safe, _ = find_contained([(0, tmp_path / "k" / "u.parquet")], live, 0.6, 10_000, 3, kept_containers=True)
    assert not set(safe["container"].to_list()) & set(safe["_i"].to_list())   # a container is never flagged
    assert set(safe["_i"].to_list()) <= set(found["_i"].to_list()) and safe.height > 5
    sets = [set(flat[offs[i]:offs[i + 1]].tolist()) for i in range(len(texts))]
    expect = {}
    for a in range(len(texts)):
        if len(sets[a]) < 3:
            continue
        best = max((containment(sets[a], sets[b]) for b in range(len(texts))
                    if b != a and (len(sets[b]) > len(sets[a]) or (len(sets[b]) == len(sets[a]) and b < a))), default=0)
        if best >= 0.6:
            expect[a] = best
    got = dict(zip(found["_i"].to_list(), found["containment"].to_list()))
    assert set(got) == set(expect) and len(expect) > 5
    assert all(abs(got[k] - expect[k]) < 1e-9 for k in expect)


def test_records_of_earlier_runs_in_the_corpus_index_are_containers(tmp_path):
    """Run 1 publishes a long article into the corpus index; run 2 (same state directory) has an
    answer pasting 200 of its words: flagged against `run1/article`, while run 2's own unrelated
    record and an article copied exactly (exact dedup's job, absent here) are judged as usual.
    A run with another n-gram size reads nothing back from the index."""
    article = _words(3000)
    answer = " ".join(_words(30) + article[1200:1400] + _words(30))
    state = {"dir": str(tmp_path / "state")}

    def run(name: str, rows: list[dict], ngram: int = 5) -> tuple[dict, pl.DataFrame]:
        m, out = run_one_stage(tmp_path / name, rows, {"kind": "containment", "config": {"ngram": ngram}}, state=state)
        return m, pl.read_parquet(str(out / "ledger" / "*.parquet"))

    first, _ = run("r1", [{"id": "article", "text": " ".join(article)}, {"id": "note", "text": " ".join(_words(80))}])
    index = json.loads((tmp_path / "state" / "index.json").read_text())
    assert index["runs"][0]["stages"] == {"containment": {"ngram": 5}}
    second, ledger = run("r2", [{"id": "answer", "text": answer}, {"id": "other", "text": " ".join(_words(250))}])
    row = _row(ledger, "answer")
    assert row["decision"] == "dropped_contained"
    assert evidence_of(row["evidence"])["contained_in"] == f"{first['run_id']}/article"
    assert row["duplicate_of"] == f"{first['run_id']}/article"
    assert evidence_of(row["evidence"])["containment"] > 0.7
    assert _row(ledger, "other")["decision"] == "kept"
    stats = next(s for s in second["pipeline"]["stages"] if s["kind"] == "containment")["summary"]
    assert stats["corpus_index"] is True

    # Other settings: the shingles of the index are not comparable, so none are read back.
    third, ledger3 = run("r3", [{"id": "answer", "text": answer}], ngram=4)
    assert _row(ledger3, "answer")["decision"] == "kept"
