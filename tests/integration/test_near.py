"""Near-duplicate removal inside a run: verified, anti-chaining, explained in the ledger."""

from __future__ import annotations

import json
import random

import polars as pl
import pytest

from pipeline.dedup.minhash import MinHashParams, normalize_for_shingles, signatures


def edit(words: list[str], positions: list[int], tag: str) -> list[str]:
    out = list(words)
    for p in positions:
        out[p] = f"{tag}{p}"
    return out


def est(a: str, b: str) -> float:
    import numpy as np
    import pyarrow as pa

    sig, _ = signatures(normalize_for_shingles(pa.array([a, b], pa.large_string())), MinHashParams())
    return float(np.mean(sig[0] == sig[1]))


@pytest.fixture
def chain(tmp_path):
    rng = random.Random(11)
    a = [f"w{rng.randrange(5000)}" for _ in range(200)]
    b = edit(a, [20, 90, 160], "x")
    c = edit(b, [50, 120, 185], "y")
    texts = {"a": " ".join(a) + " extra words make this the longest copy", "b": " ".join(b), "c": " ".join(c)}
    # The premise: A~B and B~C pass the threshold, A~C does not.
    assert est(texts["a"], texts["b"]) >= 0.8 and est(texts["b"], texts["c"]) >= 0.8 and est(texts["a"], texts["c"]) < 0.8
    strangers = [" ".join(f"s{rng.randrange(5000)}" for _ in range(100)) for _ in range(5)]
    path = tmp_path / "chain.jsonl"
    rows = [{"id": k, "text": v} for k, v in texts.items()] + [{"id": f"z{i}", "text": t} for i, t in enumerate(strangers)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


# The conservative option (configs/dedup-conservative.yaml): 0.8, no second hop, the longest survives.
CONSERVATIVE = {"near": {"threshold": 0.8, "second_hop": None}, "survivor": {"near_prefer": "longest"}}


def test_a_chain_drops_only_what_is_similar_to_the_survivor(chain, run_pipeline):
    manifest, ledger, shards = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(chain)], "id_field": "id"}],
                                            dedup=CONSERVATIVE)
    decisions = dict(zip(ledger["record_id"], ledger["decision"]))
    assert decisions["a"] == "kept"                       # the longest copy survives
    assert decisions["b"] == "dropped_near_duplicate"
    assert decisions["c"] == "kept"                       # similar to b, but not to the survivor a
    b = ledger.filter(pl.col("record_id") == "b").row(0, named=True)
    assert b["duplicate_of"] == "a" and b["similarity"] >= 0.8 and b["stage"] == "near_dedup"
    a = ledger.filter(pl.col("record_id") == "a").row(0, named=True)
    assert a["cluster_id"] == b["cluster_id"] and a["duplicate_of"] is None
    assert manifest["near_dedup"]["dropped"] == 1 and manifest["near_dedup"]["cluster_sizes"] == {"2": 1}
    assert set(shards["id"]) == {"a", "c", "z0", "z1", "z2", "z3", "z4"}


def test_a_second_hop_drops_the_end_of_a_chain_for_the_survivor_and_says_through_whom(chain, run_pipeline):
    manifest, ledger, _ = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(chain)], "id_field": "id"}],
                                       dedup={"near": {"threshold": 0.8, "second_hop": 0.8},
                                              "survivor": {"near_prefer": "longest"}})
    c = ledger.filter(pl.col("record_id") == "c").row(0, named=True)
    assert c["decision"] == "dropped_near_duplicate" and c["duplicate_of"] == "a"
    assert c["reason"].endswith("second hop via b")
    assert 0.6 <= c["similarity"] < 0.8                  # to the survivor: threshold + second_hop - 1 at least
    assert manifest["near_dedup"]["dropped_second_hop"] == 1 and manifest["near_dedup"]["cluster_sizes"] == {"3-4": 1}


def test_source_priority_beats_length(chain, tmp_path, run_pipeline):
    lines = chain.read_text().splitlines()
    (tmp_path / "hi.jsonl").write_text(lines[1] + "\n")      # b alone, in a high-priority source
    (tmp_path / "lo.jsonl").write_text(lines[0] + "\n")      # a, longer
    for dedup in (CONSERVATIVE, {}):  # the conservative option and the defaults
        _, ledger, _ = run_pipeline([
            {"name": "hi", "kind": "jsonl", "paths": [str(tmp_path / "hi.jsonl")], "id_field": "id", "priority": 5},
            {"name": "lo", "kind": "jsonl", "paths": [str(tmp_path / "lo.jsonl")], "id_field": "id"},
        ], out=tmp_path / f"run{len(dedup)}", dedup=dedup)
        assert dict(zip(ledger["record_id"], ledger["duplicate_of"])) == {"b": None, "a": "b"}


def test_every_near_duplicate_names_a_kept_survivor_in_the_sample_run(run_pipeline):
    from tests.integration.test_run import SAMPLE
    from pipeline.config import load_config

    cfg = load_config(SAMPLE)
    manifest, ledger, shards = run_pipeline([s.model_dump(mode="json") for s in cfg.sources])
    near = ledger.filter(pl.col("decision") == "dropped_near_duplicate")
    kept = set(ledger.filter(pl.col("decision") == "kept")["record_id"])
    # 10 text near copies and 1 image near copy (the sources alone: no hash list, so nothing is quarantined).
    assert near.height == 11 and set(near["duplicate_of"]) <= kept
    assert (near["similarity"] >= 0.8).all()
    assert manifest["stages"]["near_dedup"] == {"seen": 428, "kept": 417, "dropped": 11}


def test_disabling_the_stage_keeps_near_copies(chain, run_pipeline):
    manifest, ledger, _ = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(chain)], "id_field": "id"}],
                                       dedup={"near": {"enabled": False}})
    assert manifest["near_dedup"] is None and "near_dedup" not in manifest["stages"]
    assert (ledger["decision"] == "kept").all()


def test_char_ngrams_find_near_copies_in_japanese(tmp_path, run_pipeline):
    base = "東京都の人口は約千四百万人で、日本の首都として政治と経済の中心になっている。" * 3
    rows = [{"id": "ja1", "text": base}, {"id": "ja2", "text": base + "詳しくは公式サイトへ。"},
            {"id": "ja3", "text": "大阪は食べ物がおいしい街として知られていて、観光客に人気がある。"}]
    p = tmp_path / "ja.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    _, ledger, _ = run_pipeline([{"name": "ja", "kind": "jsonl", "paths": [str(p)], "id_field": "id"}],
                                dedup={"near": {"char_ngrams": True, "ngram": 3}})
    assert dict(zip(ledger["record_id"], ledger["decision"])) == {
        "ja1": "dropped_near_duplicate", "ja2": "kept", "ja3": "kept"}


def test_unit_count_does_not_change_the_ledger(tmp_path):
    from pipeline.executor import run_local
    from tests.conftest import REPO, build_config

    src = [{"name": "w", "kind": "jsonl", "paths": [str(REPO / "data_samples" / "web")], "id_field": "id"}]
    run_local(build_config(tmp_path / "one", src))
    run_local(build_config(tmp_path / "many", src, units={"target_bytes": 2048}))
    a = pl.read_parquet(str(tmp_path / "one" / "ledger" / "*.parquet"))
    b = pl.read_parquet(str(tmp_path / "many" / "ledger" / "*.parquet"))
    assert a.equals(b)


def test_exact_verification_reports_the_true_shingle_jaccard(chain, run_pipeline):
    from pipeline.dedup.minhash import normalize_for_shingles as norm, shingles

    manifest, ledger, _ = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(chain)], "id_field": "id"}],
                                       dedup={"near": {"verify": "exact", "threshold": 0.8, "second_hop": None},
                                              "survivor": {"near_prefer": "longest"}})
    b = ledger.filter(pl.col("record_id") == "b").row(0, named=True)
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in chain.read_text().splitlines()}
    import pyarrow as pa

    sa, sb = (set(shingles(norm(pa.array([texts[k]], pa.large_string())).to_pylist()[0], MinHashParams())) for k in "ab")
    assert b["decision"] == "dropped_near_duplicate" and b["duplicate_of"] == "a"
    assert b["reason"] == "near duplicate (MinHash LSH, verified on exact shingle sets)"  # says how it was verified
    assert b["similarity"] == pytest.approx(len(sa & sb) / len(sa | sb))
    assert manifest["near_dedup"]["verify"] == "exact"
    assert dict(zip(ledger["record_id"], ledger["decision"]))["c"] == "kept"


def test_huge_texts_and_binary_junk_are_processed_not_crashed(tmp_path, run_pipeline):
    import os

    rng = random.Random(1)
    big = " ".join(f"w{rng.randrange(100000)}" for _ in range(2_000_000))   # ~13 MB
    junk = os.urandom(4000).decode("latin-1")                                  # valid UTF-8 once re-encoded
    rows = [{"id": "big", "text": big}, {"id": "big2", "text": big + " tail"}, {"id": "junk", "text": junk},
            {"id": "blank", "text": " \n\t "}, {"id": "empty", "text": ""}]
    p = tmp_path / "odd.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    manifest, ledger, shards = run_pipeline([{"name": "o", "kind": "jsonl", "paths": [str(p)], "id_field": "id"}])
    d = dict(zip(ledger["record_id"], ledger["decision"]))
    assert d == {"big": "dropped_near_duplicate", "big2": "kept", "junk": "kept", "blank": "rejected", "empty": "rejected"}
    assert manifest["conservation"]["balanced"]


def test_an_exact_copy_of_a_near_duplicate_names_the_final_survivor(chain, tmp_path, run_pipeline):
    lines = chain.read_text().splitlines()
    b = json.loads(lines[1])
    p = tmp_path / "more.jsonl"
    p.write_text(chain.read_text() + json.dumps({"id": "b-copy", "text": b["text"]}) + "\n")
    _, ledger, _ = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(p)], "id_field": "id"}], dedup=CONSERVATIVE)
    rows = {r["record_id"]: r for r in ledger.to_dicts()}
    assert rows["b"]["decision"] == "dropped_near_duplicate" and rows["b"]["duplicate_of"] == "a"
    assert rows["b-copy"]["decision"] == "dropped_duplicate" and rows["b-copy"]["duplicate_of"] == "a"
    kept = {k for k, r in rows.items() if r["decision"] == "kept"}
    assert all(r["duplicate_of"] in kept for r in rows.values() if r["duplicate_of"])


def test_the_central_survivor_rule_keeps_the_copy_most_others_resemble(tmp_path, run_pipeline):
    # B is similar to A, C and D (J = 296/346 = 0.86); A, C and D are not similar to each other
    # (J = 296/396 = 0.75). Longest-first keeps A (it ties C and D on length; lowest id) and then
    # cannot drop C or D through it; central keeps B and drops the other three.
    rng = random.Random(5)
    word = lambda tag, i: f"{tag}{i:04d}"  # noqa: E731 - every word 5 characters, so lengths tie
    base = [word("b", rng.randrange(9000)) for _ in range(300)]
    texts = {"a": base + [word("a", i) for i in range(50)], "b": base,
             "c": [word("c", i) for i in range(50)] + base, "d": base + [word("d", i) for i in range(50)]}
    path = tmp_path / "star.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": " ".join(v)}) + "\n" for k, v in texts.items()))
    src = [{"name": "s", "kind": "jsonl", "paths": [str(path)], "id_field": "id"}]
    near = {"near": {"verify": "exact", "threshold": 0.8, "second_hop": None}}
    _, longest, _ = run_pipeline(src, out=tmp_path / "longest", dedup={**near, "survivor": {"near_prefer": "longest"}})
    _, central, _ = run_pipeline(src, out=tmp_path / "central", dedup={**near, "survivor": {"near_prefer": "central"}})
    kept = lambda ledger: sorted(ledger.filter(pl.col("decision") == "kept")["record_id"])  # noqa: E731
    assert kept(longest) == ["a", "c", "d"]
    assert kept(central) == ["b"]
    assert set(central.filter(pl.col("decision") == "dropped_near_duplicate")["duplicate_of"]) == {"b"}


def test_pages_sharing_a_template_keep_their_content_and_a_copy_with_added_boilerplate_goes(tmp_path, run_pipeline):
    # 40 different short pages carry one site's long header and footer; the footer is also a short
    # text copied 30 times on its own. By shingles the pages look alike (J about 0.7) and the short
    # text is inside every page: without the boilerplate rule the pages are dropped for one another.
    rng = random.Random(4)
    header = "Home | News | Sports | Weather | Contact us | Subscribe | Sign in | Menu | Search " * 6
    footer = "Page not found. The page you are looking for does not exist or has been moved."
    bodies = [" ".join(f"b{rng.randrange(10**6)}" for _ in range(6)) for _ in range(40)]
    rows = [{"id": f"p{k}", "text": f"{header}\n{b}\n{footer}"} for k, b in enumerate(bodies)]
    rows += [{"id": f"f{k}", "text": footer} for k in range(30)]          # exact copies of the footer text
    rows += [{"id": "copy0", "text": f"{bodies[0]} and nothing else"}]   # page 0's content without the template
    long_body = " ".join(f"w{rng.randrange(10**6)}" for _ in range(80))
    rows += [{"id": "long", "text": long_body}, {"id": "long+tpl", "text": f"{header}\n{long_body}\n{footer}"}]
    p = tmp_path / "site.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest, ledger, _ = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(p)], "id_field": "id"}],
                                       dedup={"near": {"boilerplate_min_docs": 20}})
    d = dict(zip(ledger["record_id"], ledger["decision"]))
    assert all(d[f"p{k}"] == "kept" for k in range(1, 40))              # different pages: all kept
    assert sum(d[f"f{k}"] == "kept" for k in range(30)) == 1            # the short text survives once
    assert d["long"] != d["long+tpl"]                                    # a page with added boilerplate is a copy
    gone = ledger.filter(pl.col("record_id").is_in(["long", "long+tpl"]) & (pl.col("decision") == "dropped_near_duplicate"))
    assert gone.height == 1 and gone["similarity"][0] >= 0.8             # content similarity, template left out
    # the same run without the rule, verified on signatures only, loses content: pages dropped for
    # pages (their exact word 5-gram Jaccard is about 0.57, the estimates scatter around it)
    src = [{"name": "s", "kind": "jsonl", "paths": [str(p)], "id_field": "id"}]
    _, plain, _ = run_pipeline(src, out=tmp_path / "plain", dedup={"near": {"boilerplate_min_docs": 0, "verify": "signature"}})
    dp = dict(zip(plain["record_id"], plain["decision"]))
    assert sum(dp[f"p{k}"] != "kept" for k in range(40)) >= 20      # 27 of 40 here
    # the default verification re-reads the pairs estimated near the threshold: none of them goes
    m_exact, checked, _ = run_pipeline(src, out=tmp_path / "borderline", dedup={"near": {"boilerplate_min_docs": 0}})
    dc = dict(zip(checked["record_id"], checked["decision"]))
    assert all(dc[f"p{k}"] == "kept" for k in range(40))
    assert m_exact["near_dedup"]["borderline"]["comparisons_flipped"] > 0


def test_the_short_document_pass_drops_a_word_swapped_short_copy_and_names_its_path(tmp_path, run_pipeline):
    rng = random.Random(7)
    source = "the quiet harbour town woke slowly while the fishing boats drifted past the old lighthouse"
    words = source.split()
    words[3], words[4] = words[4], words[3]
    rows = [{"id": "src", "text": source}, {"id": "swap", "text": " ".join(words)}]
    rows += [{"id": f"o{i}", "text": " ".join(f"v{rng.randrange(10**6)}" for _ in range(12))} for i in range(5)]
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = [{"name": "s", "kind": "jsonl", "paths": [str(path)], "id_field": "id"}]
    _, ledger, _ = run_pipeline(src, out=tmp_path / "off", dedup={"near": {"short_pass_max_words": 0}})
    assert ledger.filter(pl.col("decision") == "dropped_near_duplicate").height == 0   # word 5-grams miss it
    for name, near in (("default", {}), ("0.75", {"short_pass_threshold": 0.75})):   # the pass is on by default
        manifest, ledger, _ = run_pipeline(src, out=tmp_path / name, dedup={"near": near})
        drop = ledger.filter(pl.col("decision") == "dropped_near_duplicate")
        assert drop.height == 1 and set(drop["record_id"]) | set(drop["duplicate_of"]) == {"src", "swap"}
        assert "short-document pass" in drop["reason"][0] and drop["similarity"][0] >= 0.75
        sp = manifest["near_dedup"]["short_pass"]
        assert sp["verified_pairs"] == 1 and sp["pairs_added"] == 1 and sp["dropped"] == 1


def test_thousands_of_identical_short_texts_one_word_and_empty_documents_are_counted_and_one_copy_survives(
        tmp_path, run_pipeline):
    rows = [{"id": f"m{i:04d}", "text": "Please enable JavaScript to view this page."} for i in range(2000)]
    rows += [{"id": f"w{i}", "text": w} for i, w in enumerate(["Loading", "loading", "LOADING!", "Seethingly", "feign"])]
    rows += [{"id": f"e{i}", "text": t} for i, t in enumerate(["", "   ", "\n\t", "!!! ...", "—"])]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for dedup in ({}, {"near": {"short_pass_max_words": 100}}):
        out = tmp_path / f"run{len(dedup)}"
        manifest, ledger, shards = run_pipeline([{"name": "s", "kind": "jsonl", "paths": [str(path)], "id_field": "id"}],
                                                out=out, dedup=dedup)
        assert ledger.height == len(rows) and manifest["conservation"]["balanced"]
        d = dict(zip(ledger["record_id"], ledger["decision"]))
        kept_mass = [k for k, v in d.items() if k.startswith("m") and v == "kept"]
        assert kept_mass == ["m0000"] and sum(v == "dropped_duplicate" for k, v in d.items() if k.startswith("m")) == 1999
        # one word: case and punctuation variants are near copies (one survives), different words never are
        variants = {k: d[k] for k in ("w0", "w1", "w2")}
        assert sorted(variants.values()) == ["dropped_near_duplicate", "dropped_near_duplicate", "kept"]
        survivor = next(k for k, v in variants.items() if v == "kept")
        dup_of = dict(zip(ledger["record_id"], ledger["duplicate_of"]))
        assert all(dup_of[k] == survivor for k, v in variants.items() if v != "kept") and d["w3"] == d["w4"] == "kept"
        # empty or whitespace-only: rejected with a reason; empty after normalisation (punctuation only):
        # kept as they are, with no signature, so never anyone's near duplicate
        reasons = dict(zip(ledger["record_id"], ledger["reason"]))
        assert all(d[f"e{i}"] == "rejected" and "empty" in reasons[f"e{i}"] for i in range(3))
        assert d["e3"] == d["e4"] == "kept"
        assert manifest["near_dedup"]["without_shingles"] == 2
