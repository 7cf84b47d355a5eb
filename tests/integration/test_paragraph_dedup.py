"""The paragraph_dedup stage: Dolma's own expected paragraph spans on its fixture, the K threshold,
the first occurrence kept by the survivor order, records dropped when too little is left, lines
mode, bad inputs, the ledger's evidence and the same output across unit splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.config import parse_config
from pipeline.dedup.paragraphs import find_repeats, remove_spans, split_units
from pipeline.executor import run_local
from tests.conftest import run_one_stage

DOLMA = Path(__file__).resolve().parents[3] / "shared" / "data" / "dedup" / "dolma_dedupe_fixtures"
if not DOLMA.exists():
    DOLMA = Path("/work/shared/data/dedup/dolma_dedupe_fixtures")


def _run(tmp: Path, sources: dict[str, list[dict]], options: dict, target_bytes: int = 64 << 20,
         id_field: str | None = "id", name: str = "out") -> tuple[dict, dict, pl.DataFrame]:
    """Run the stage; (manifest, output text per record id, ledger)."""
    srcs = []
    for src, rows in sources.items():
        d = tmp / "in" / src
        d.mkdir(parents=True, exist_ok=True)
        (d / "000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        srcs.append({"name": src, "kind": "jsonl", "paths": [str(d)], **({"id_field": id_field} if id_field else {})})
    out = tmp / name
    m = run_local(parse_config({"sources": srcs, "output": {"dir": str(out)}, "units": {"target_bytes": target_bytes},
                                "stages": [{"kind": "safety"}, {"kind": "paragraph_dedup", "config": options}]}))
    shards = pl.concat([pl.read_parquet(p) for p in sorted((out / "shards").glob("*.parquet"))]) \
        if any((out / "shards").glob("*.parquet")) else pl.DataFrame({"record_id": [], "text": []})
    ledger = pl.concat([pl.read_parquet(p) for p in sorted((out / "ledger").glob("*.parquet"))])
    return m, dict(zip(shards["record_id"].to_list(), shards["text"].to_list())), ledger


def _dolma_docs() -> list[dict]:
    with gzip.open(DOLMA / "provided" / "000.json.gz", "rt") as f:
        return [json.loads(line) for line in f]


def _dolma_expected(name: str) -> list[list[list[int]]]:
    with gzip.open(DOLMA / "expected" / f"{name}.json.gz", "rt") as f:
        return [[s[:2] for s in json.loads(line)["attributes"]["bff_duplicate_paragraph_spans"]] for line in f]


def _dolma_end(text: str, end: int) -> int:
    """Dolma's end offset: it adds one for the newline while `offset < len(text in UTF-8 bytes) - 1`
    (a character offset against a byte length), so the last line of a non-ASCII text ends one past
    the text. Ours stops at the text's end; removing either span gives the same text."""
    return end + 1 if end == len(text) and end < len(text.encode()) - 1 else end


DOLMA_OPTIONS = {"unit": "line", "max_documents": 1, "count": "occurrences", "min_chars": 0, "lowercase": False,
                 "collapse_whitespace": False}


def test_dolma_paragraph_spans_on_its_fixture():
    """Dolma's `dedupe-paragraphs` test: lines split on \\n, exact text, every occurrence after the
    first marked. The documents are fed twice (Dolma reads `documents/` and an identical copy);
    the expected attributes are those of the first copy; every line of the second copy repeats."""
    docs = _dolma_docs()
    expected = _dolma_expected("dedupe-paragraphs")
    texts = [d["text"] for d in docs] * 2
    units, _docs = split_units(np.arange(len(texts), dtype=np.int64), pl.Series(texts).to_arrow(), "line", False, False, 0)
    scratch = Path(__import__("tempfile").mkdtemp())
    try:
        f = scratch / "u00000.parquet"
        units.write_parquet(f)
        ranks = pl.DataFrame({"unit": [0] * len(texts), "row": list(range(len(texts))), "rank": list(range(len(texts)))})
        removals, stats = find_repeats([(0, f)], ranks, scratch, 1, count="occurrences")
        # The same with a tiny partition size: the hashes split into several partitions.
        removals_p, stats_p = find_repeats([(0, f)], ranks, scratch, 1, partition_rows=64, count="occurrences")
    finally:
        shutil.rmtree(scratch)
    assert stats_p["partitions"] > 1 and removals_p.equals(removals)
    got = {r: [] for r in range(len(texts))}
    for r, s, e in removals.select("row", "start", "end").iter_rows():
        got[r].append([s, _dolma_end(texts[r], e)])
    assert [got[r] for r in range(10)] == expected
    assert sum(len(x) for x in expected) == 43  # one document of the ten shares its navigation with another
    for r in range(10, 20):  # the second copy: every line is a repeat
        assert len(got[r]) == texts[r].count("\n") + 1


def test_dolma_fixture_through_a_run(tmp_path):
    """The same through the pipeline: first copies are the input minus Dolma's spans, every second copy is dropped."""
    docs = _dolma_docs()
    expected = _dolma_expected("dedupe-paragraphs")
    rows = [{"text": d["text"]} for d in docs]
    m, out, ledger = _run(tmp_path, {"a_documents": rows, "b_copy": rows}, DOLMA_OPTIONS, id_field=None)
    for k, d in enumerate(docs):
        assert out[f"a_documents/000.jsonl:{k}"] == remove_spans(d["text"], [tuple(s) for s in expected[k]])
    second = ledger.filter(pl.col("record_id").str.starts_with("b_copy"))
    assert second["decision"].to_list() == ["dropped_repeated_paragraphs"] * 10
    assert m["stages"]["paragraph_dedup"]["dropped"] == 10 and m["conservation"]["balanced"]
    changed = ledger.filter(pl.col("decision") == "kept_paragraphs_removed")
    assert changed["record_id"].to_list() == ["a_documents/000.jsonl:1"]
    ev = json.loads(changed["evidence"][0])
    assert ev["paragraph_dedup_units_removed"] == 43


def test_k_threshold_and_first_occurrence_by_record_id_order(tmp_path):
    boiler = "Subscribe to our newsletter for weekly updates."
    pair = "This paragraph appears in exactly two documents."
    rows = [  # file order differs from record id order: d1 comes first in the survivor order
        {"id": "d3", "text": f"Third document body, long enough.\n\n{boiler}"},
        {"id": "d1", "text": f"{boiler}\n\nFirst document body, long enough.\n\n{pair}"},
        {"id": "d2", "text": f"Second document body, long enough.\n\n{pair}\n\n{boiler.upper()}"},
    ]
    _m, out, _l = _run(tmp_path, {"t": rows}, {"max_documents": 2, "min_chars": 5}, name="k2")
    assert out["d1"] == rows[1]["text"]                    # first occurrence (by record id) kept
    assert boiler not in out["d3"] and boiler.upper() not in out["d2"]   # 3 documents > K=2 (case-folded)
    assert pair in out["d2"]                                # 2 documents: not more than K
    _m, out1, _l = _run(tmp_path, {"t": rows}, {"max_documents": 1, "min_chars": 5}, name="k1")
    assert pair not in out1["d2"] and pair in out1["d1"]
    assert out1["d3"] == "Third document body, long enough.\n\n"


def test_record_dropped_when_too_little_is_left(tmp_path):
    boiler = "All rights reserved. Terms of use apply to every page of this site."
    rows = [{"id": f"r{i}", "text": f"Short {i}.\n\n{boiler}"} for i in range(5)]
    rows.append({"id": "r9", "text": "A much longer body of text with plenty of words in it, more than ten.\n\n" + boiler})
    m, out, ledger = _run(tmp_path, {"t": rows}, {"min_remaining_words": 10})
    assert sorted(out) == ["r0", "r9"]
    dropped = ledger.filter(pl.col("decision") == "dropped_repeated_paragraphs").sort("record_id")
    assert dropped["record_id"].to_list() == ["r1", "r2", "r3", "r4"]
    assert dropped["reason"][0].startswith("paragraph_dedup.remaining ") and "min 0 chars, 10 words" in dropped["reason"][0]
    assert json.loads(dropped["evidence"][0])["paragraph_dedup_words_left"] == 2
    kept = ledger.filter(pl.col("record_id") == "r9")
    assert kept["decision"][0] == "kept_paragraphs_removed"
    ev = json.loads(kept["evidence"][0])
    assert ev["paragraph_dedup_units_removed"] == 1 and ev["paragraph_dedup_chars_removed"] == len(boiler)
    st = m["stages"]["paragraph_dedup"]
    assert (st["seen"], st["kept"], st["dropped"]) == (6, 2, 4)
    assert st["barrier"]["frequent_texts"] == 1 and st["barrier"]["expected_false_matches"] < 1e-12


def test_lines_mode(tmp_path):
    rows = [{"id": f"p{i}", "text": f"Home | About | Contact\nArticle {i} says something new.\nCopyright 2024 Example Inc."}
            for i in range(3)]
    _m, out, _l = _run(tmp_path, {"t": rows}, {"unit": "line"})
    assert out["p0"] == rows[0]["text"]
    assert out["p1"] == "Article 1 says something new.\n" and out["p2"] == "Article 2 says something new.\n"
    # paragraph mode sees one paragraph per record, all different: nothing removed
    _m, outp, _l = _run(tmp_path, {"t": rows}, {"unit": "paragraph"}, name="para")
    assert outp == {r["id"]: r["text"] for r in rows}


def test_bad_inputs_are_handled_and_counted(tmp_path):
    big = ("word " * 200 + "\n\n") * 5000          # ~10 MB, 5,000 identical paragraphs in one record
    rows = [
        {"id": "a", "text": "x"},                  # shorter than any minimum
        {"id": "b", "text": "x"},
        {"id": "c", "text": "\n\n".join("abcdefghij")},   # ten one-character paragraphs
        {"id": "d", "text": "\n\n".join("abcdefghij")},
        {"id": "e", "text": ""},
        {"id": "f", "text": big},
        {"id": "g", "text": "  \n\n \t\n"},
    ]
    m, out, ledger = _run(tmp_path, {"t": rows}, {"min_chars": 2})
    assert m["conservation"]["balanced"]
    assert out["a"] == "x" and out["b"] == "x"      # one-character texts are never hashed
    assert out["c"] == rows[2]["text"] and out["d"] == rows[3]["text"]
    assert out["f"] == big                           # repeated only within one record: one document, not > K
    st = m["stages"]["paragraph_dedup"]["barrier"]
    # the empty and whitespace-only records are rejected by the reader, before any stage
    assert ledger.filter(pl.col("record_id").is_in(["e", "g"]))["decision"].to_list() == ["rejected"] * 2
    assert st["units_below_min_chars"] == 2 + 20
    assert st["units_hashed"] == 5000
    # With the big record twice the paragraph is in two records: only its first occurrence stays
    # (as in Dolma, later occurrences inside the first record go too); the second copy is dropped.
    m2, out2, ledger2 = _run(tmp_path, {"t": rows + [{"id": "h", "text": big}]}, {"min_chars": 2}, name="twice")
    assert out2["f"] == "word " * 200 + "\n\n" and "h" not in out2
    assert ledger2.filter(pl.col("record_id") == "h")["decision"][0] == "dropped_repeated_paragraphs"
    # Counting occurrences (Dolma's and datatrove's rule), repeats inside the one record go too.
    m3, out3, ledger3 = _run(tmp_path, {"t": rows}, {"min_chars": 2, "count": "occurrences"}, name="occ")
    assert out3["f"] == "word " * 200 + "\n\n" and out3["c"] == rows[2]["text"]
    assert m3["stages"]["paragraph_dedup"]["barrier"]["units_removed"] == 4999


def _digests(run: Path) -> dict:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((run / d).glob("*.parquet"))}


def test_same_output_across_unit_splits(tmp_path):
    templates = ["Share this article on social media.", "Cookies help us deliver our services.",
                 "Posted by the editorial team."]
    rows = [{"id": f"r{i:03d}", "text": f"Body of record {i} with its own words.\n\n{templates[i % 3]}\n\n"
                                         f"{templates[(i * 7) % 3]}"} for i in range(60)]
    _run(tmp_path, {"t": rows}, {"min_remaining_words": 3}, target_bytes=64 << 20, name="one")
    m, _o, _l = _run(tmp_path, {"t": rows}, {"min_remaining_words": 3}, target_bytes=1024, name="many")
    assert m["units"] > 3
    assert _digests(tmp_path / "one") == _digests(tmp_path / "many")


def test_stored_spans_cut_what_finding_the_units_again_cuts(tmp_path, monkeypatch):
    """With no earlier write-time edit, pass 2 cuts at the spans pass 1 stored; the slower path that
    splits the text again (taken after redaction) gives the same bytes: unicode, CRLF, tabs, text
    without a final newline, repeats inside one record."""
    import pipeline.stages.paragraph_dedup as stage

    heads = ["Accueil | Actualités | Contact", "  Menu\tSearch  ", "Ünïcödé footer — © 2026", "Share this page."]
    rows = [{"id": f"r{i:03d}", "text": f"{heads[i % 4]}\r\nOwn line {i}.\n{heads[(i * 3) % 4]}\n\nLast {i % 5}"
                                         + ("\n" if i % 2 else "")} for i in range(40)]
    for unit in ("line", "paragraph"):
        options = {"unit": unit, "count": "occurrences", "min_chars": 1}
        _m, fast, _l = _run(tmp_path, {"t": rows}, options, name=f"{unit}-fast")
        monkeypatch.setattr(stage, "first_text_edit", lambda cfg: None)
        _m, again, _l = _run(tmp_path, {"t": rows}, options, name=f"{unit}-again")
        monkeypatch.undo()
        assert fast == again
        assert sum(len(t) for t in fast.values()) < sum(len(r["text"]) for r in rows)
        assert _digests(tmp_path / f"{unit}-fast") == _digests(tmp_path / f"{unit}-again")


@pytest.mark.parametrize("bad", [{"unit": "sentence"}, {"max_documents": 0}, {"min_chars": -1}, {"typo": 1}])
def test_config_errors_before_any_work(tmp_path, bad):
    from pipeline.errors import ConfigError

    from pipeline.core.registry import resolve_stages

    with pytest.raises(ConfigError, match="paragraph_dedup"):
        resolve_stages(parse_config({"sources": [{"name": "t", "kind": "jsonl", "paths": [str(tmp_path)]}],
                      "output": {"dir": str(tmp_path / "o")},
                      "stages": [{"kind": "safety"}, {"kind": "paragraph_dedup", "config": bad}]}))


def test_evidence_merges_with_an_earlier_stages_evidence(tmp_path):
    """The language stage (per record, pass 1) records evidence on kept rows; a record this stage
    then changes keeps both stages' evidence in the ledger (the core merges the JSON objects)."""
    boiler = "Please read our privacy policy before using this website."
    rows = [{"id": f"r{i}", "text": f"This is an ordinary English sentence about topic number {i}.\n\n{boiler}"}
            for i in range(3)]
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    run_local(parse_config({"sources": [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}],
                            "output": {"dir": str(out)},
                            "stages": [{"kind": "safety"}, {"kind": "language", "config": {"mode": "tag"}},
                                       {"kind": "paragraph_dedup"}]}))
    ledger = pl.read_parquet(next((out / "ledger").glob("*.parquet"))).sort("record_id")
    assert ledger["decision"].to_list() == ["kept", "kept_paragraphs_removed", "kept_paragraphs_removed"]
    ev = json.loads(ledger["evidence"][1])
    assert ev["language"] == "en" and ev["paragraph_dedup_units_removed"] == 1


def test_with_pii_redaction_the_removal_finds_its_paragraphs_again_and_never_cuts_at_stale_offsets(tmp_path):
    """PII redaction applies offsets into the re-read text; the paragraph removal runs after it and
    finds its units again by position and hash: a repeated paragraph is removed, a unit that
    redaction changed is kept (redacted), and no personal data survives a cut at a shifted offset."""
    boiler = "Subscribe to our newsletter for weekly updates."
    signed = "Questions? Write to maria.gonzalez@example.com today."
    rows = [
        {"id": "d1", "text": f"Contact ann.lee@example.com for the first body, long enough.\n\n{boiler}\n\n{signed}"},
        {"id": "d2", "text": f"Second body written by bob.stone@example.com, long enough.\n\n{boiler}\n\n{signed}"},
    ]
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    m = run_local(parse_config({
        "sources": [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}],
        "output": {"dir": str(out)}, "pii": {"entities": ["EMAIL_ADDRESS"], "residual_scan": {"enabled": False}},
        "stages": [{"kind": "safety"}, {"kind": "paragraph_dedup", "config": {"min_chars": 5}}, {"kind": "pii"}]}))
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    text = dict(zip(shards["record_id"].to_list(), shards["text"].to_list()))
    assert "@example.com" not in "".join(text.values())                 # every address redacted
    assert text["d1"].count("Subscribe") == 1 and "Subscribe" not in text["d2"]   # the repeat removed
    assert "Second body written by <EMAIL_ADDRESS>" in text["d2"]
    # The signed paragraph is repeated too, but redaction changed it: kept (redacted), counted.
    assert "Questions? Write to <EMAIL_ADDRESS> today." in text["d2"]
    assert m["conservation"]["overall"]["kept"] == 2


def test_paragraphs_published_by_earlier_runs_count_and_come_first(tmp_path):
    """Two runs on one corpus index: a paragraph run 1 published is removed from run 2's records at
    every occurrence once the count over both runs passes K; below K it stays; a text only run 2
    repeats keeps its first occurrence; other settings read nothing back."""
    shared = "This paragraph is shared boilerplate that every page of the site repeats in full."
    local = "Only the second run repeats this paragraph, twice, in two of its own records here."

    def run(name: str, rows: list[dict], options: dict) -> tuple[dict, dict]:
        m, out = run_one_stage(tmp_path / name, rows, {"kind": "paragraph_dedup", "config": options},
                               state={"dir": str(tmp_path / f"state-{options['max_documents']}")})
        shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
        return m, dict(zip(shards["record_id"].to_list(), shards["text"].to_list()))

    def body(i: int) -> str:
        return f"Page {i} has its own opening paragraph with words nobody else uses, number {i}."

    for k in (1, 2):
        opts = {"max_documents": k}
        run(f"a{k}", [{"id": "p1", "text": f"{body(1)}\n\n{shared}"}], opts)
        m, texts = run(f"b{k}", [{"id": "p2", "text": f"{body(2)}\n\n{shared}\n\n{local}"},
                                 {"id": "p3", "text": f"{body(3)}\n\n{local}"}], opts)
        summary = next(s for s in m["pipeline"]["stages"] if s["kind"] == "paragraph_dedup")["summary"]
        assert summary["corpus_index"] is True
        if k == 1:  # 2 records over both runs > 1: removed here, its first occurrence was published before
            assert shared not in texts["p2"] and body(2) in texts["p2"]
            assert local in texts["p2"] and local not in texts["p3"]  # first occurrence within the run kept
        else:  # 2 records over both runs, not > 2: kept
            assert shared in texts["p2"] and local in texts["p2"] and local in texts["p3"]
    # Other settings (lines, not paragraphs) on the K = 1 index: nothing read back, so the shared
    # paragraph occurs once and stays.
    _m, texts = run("c1", [{"id": "p4", "text": f"{body(4)}\n\n{shared}"}], {"max_documents": 1, "unit": "line"})
    assert shared in texts["p4"]


def test_earlier_runs_counts_read_per_partition_decide_as_one_partition(tmp_path):
    """The corpus index's counts are read per barrier partition: with partitions of 1,000 units
    (4 here) the second run keeps exactly what it keeps in one partition."""
    shared = [f"Shared notice number {j} that many pages of the site carry at their foot." for j in range(300)]

    def rows(run: str, n: int) -> list[dict]:
        return [{"id": f"{run}{i}", "text": f"The {run} page {i} has an opening of its own, {i * 7}.\n\n{shared[(i * 13) % 300]}"}
                for i in range(n)]

    kept = {}
    for name, partition_rows in (("one", 20_000_000), ("many", 1_000)):
        opts = {"kind": "paragraph_dedup", "config": {"max_documents": 2, "partition_rows": partition_rows}}
        state = {"dir": str(tmp_path / f"state-{name}")}
        run_one_stage(tmp_path / f"{name}-a", rows("a", 1200), opts, state=state)
        m, out = run_one_stage(tmp_path / f"{name}-b", rows("b", 1200), opts, state=state)
        barrier = m["stages"]["paragraph_dedup"]["barrier"]
        kept[name] = (_digests(out), barrier["index_texts"], barrier["units_removed"])
        assert barrier["partitions"] == (1 if name == "one" else 4)
    assert kept["one"] == kept["many"]
    assert kept["one"][1] == 1500 and kept["one"][2] > 0  # run a's 1,200 openings and 300 notices were read back


def test_index_rebuild_restores_the_counts_a_run_published(tmp_path):
    """The counts go out with the run (`index/paragraph_dedup.parquet`, listed with its digest in
    the manifest): an index rebuilt from the run directories decides a later run as the live index
    does, although the shards alone no longer show how often a removed paragraph occurred;
    `verify` checks the file, and a rebuild refuses an altered one."""
    from pipeline.audit.verify import verify_run
    from pipeline.dedup.index import CorpusIndexError, rebuild

    notice = "The same long notice that five pages of the first run carry, word for word, at their end."
    first = [{"id": f"a{i}", "text": f"First run page {i} with an opening paragraph of its own, {i}.\n\n{notice}"}
             for i in range(5)]
    later = [{"id": "b0", "text": f"A later page with its own opening paragraph, number zero.\n\n{notice}"}]
    stage = {"kind": "paragraph_dedup", "config": {"max_documents": 2}}

    m_a, run_a = run_one_stage(tmp_path / "a", first, stage, state={"dir": str(tmp_path / "state")})
    (entry,) = m_a["outputs"]["index"]
    assert entry["stage"] == "paragraph_dedup" and (run_a / entry["path"]).exists()
    assert verify_run(run_a).ok
    rebuild(tmp_path / "rebuilt", [run_a])
    texts = {}
    for state in ("state", "rebuilt"):
        _m, out = run_one_stage(tmp_path / f"b-{state}", later, stage, state={"dir": str(tmp_path / state)})
        texts[state] = pl.read_parquet(str(out / "shards" / "*.parquet"))["text"].to_list()
    # 5 + 1 records > K = 2: removed (the published shards hold it once, which alone would keep it)
    assert texts["state"] == texts["rebuilt"] and notice not in texts["state"][0]

    stray = run_a / "index" / "containment.parquet"  # a file the manifest does not list
    stray.write_bytes((run_a / entry["path"]).read_bytes())
    assert not verify_run(run_a).ok
    stray.unlink()
    path = run_a / entry["path"]
    path.write_bytes(path.read_bytes() + b"x")
    assert not verify_run(run_a).ok
    with pytest.raises(CorpusIndexError, match="does not match its manifest digest"):
        rebuild(tmp_path / "rebuilt-again", [run_a])
