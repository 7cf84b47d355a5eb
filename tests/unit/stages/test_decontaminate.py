"""The `decontaminate` stage: benchmark test items found in records (lightly edited too), dropped
or cut, several sets at once, clear errors for bad benchmark files, odd records, a whole run."""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.core.stage import BatchContext
from pipeline.decon.sets import BenchmarkConfig, load_set
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.stages.decontaminate import DecontaminateConfig, DecontaminateStage

HUMANEVAL = {"name": "humaneval", "builtin": "humaneval"}
CLEAN = ("The committee met on Tuesday to review the budget for the coming year and agreed to postpone "
         "the vote until the auditors had finished their report on the regional offices. ")
TRIVIA = [f"Which river flows through the ancient city number {i} and empties into the northern sea "
          f"after passing {i * 7} bridges and three old mills" for i in range(30)]


@pytest.fixture(scope="module")
def humaneval():
    return load_set(BenchmarkConfig(**HUMANEVAL), None)


def _stage(**options) -> DecontaminateStage:
    options.setdefault("benchmarks", [HUMANEVAL])
    return DecontaminateStage(DecontaminateConfig.model_validate(options), None).setup()


def _run(stage, texts, task=None):
    table = pa.table({"text": pa.array(texts, type=pa.string())})
    ctx = BatchContext("t", "text", np.arange(len(texts), dtype=np.int64), [f"r{i}" for i in range(len(texts))],
                       0, None, {}, task=task)
    return stage.process(table, ctx)


def _edits(text: str) -> list[str]:
    """Light edits of a planted item: case, whitespace, punctuation, a prefix and a suffix."""
    return [text.upper(), " ".join(text.split()), text.replace(",", " ;").replace(":", " -"),
            "Here is the code I wrote yesterday:\n" + text, text + "\nHope this helps, good luck!"]


def test_a_planted_humaneval_item_is_found_and_dropped_with_evidence(humaneval):
    stage = _stage()
    item = humaneval.texts[12]
    v = _run(stage, [CLEAN, CLEAN + item + CLEAN, *_edits(item)])
    assert v.decision[0] is None
    assert v.decision[1:] == ["dropped_decontaminated"] * 6
    assert v.evidence["benchmark"][1] == "humaneval"
    assert v.evidence["item_ids"][1][0] == humaneval.ids[12] == "HumanEval/12"
    assert v.evidence["ngrams_matched"][1] > 20 and v.evidence["item_overlap"][1] == 1.0
    assert "humaneval" in v.reason[1] and "min_matches 1" in v.reason[1]
    assert v.counts["matched"] == 6 and v.counts["dropped"] == 6


def test_min_matches_leaves_a_record_with_fewer_matched_ngrams(humaneval):
    words = humaneval.texts[5].split()
    short = " ".join(words[:14])  # two 13-grams at most
    v = _run(_stage(min_matches=50), [CLEAN + short, CLEAN + humaneval.texts[5]])
    assert v.decision == [None, "dropped_decontaminated"]


def test_cut_removes_the_spans_with_a_margin_and_marks_the_record_changed(humaneval):
    stage = _stage(action="cut", cut_margin_chars=10)
    before, after = CLEAN * 3, "Unrelated closing remarks about the weather and the harvest. " * 5
    text = before + humaneval.texts[3] + after
    v = _run(stage, [text])
    assert v.decision == [None]
    assert v.evidence["decon_pieces"] == [2] and v.evidence["decon_chars_cut"][0] >= len(humaneval.texts[3])
    unit = _run(stage, [text], task=0)
    assert unit.decision == ["kept_decontaminated"] and "2 pieces kept" in unit.reason[0]
    from pipeline.stages.decontaminate import cut_plan, pieces_after

    _, hits = stage.index.find(pa.array([text]))
    cuts = cut_plan(text, hits[0], 10)
    kept = pieces_after(text, cuts, 200)
    assert len(kept) == 2 and kept[0].startswith(CLEAN) and kept[1].rstrip().endswith("harvest.")
    assert "def " not in "".join(kept)


def test_a_record_cut_into_too_many_pieces_or_into_nothing_is_dropped(humaneval):
    parts = [humaneval.texts[i] for i in (1, 2, 3)]
    v = _run(_stage(action="cut", cut_margin_chars=0, max_pieces=2, min_piece_chars=0),
             [CLEAN.join(["", *parts, ""]), CLEAN.join(["", *parts[:1], ""])])
    assert v.decision == ["dropped_decontaminated", None]
    assert "cut into 4 pieces > max_pieces 2" in v.reason[0]
    v = _run(_stage(action="cut"), [humaneval.texts[7], CLEAN + humaneval.texts[7]])
    assert v.decision == ["dropped_decontaminated"] * 2 and "nothing of 200+ chars left" in v.reason[1]


def test_several_sets_in_every_format_are_matched_and_named(tmp_path, humaneval):
    from datasets import Dataset

    rows = [{"qid": f"q{i}", "question": t, "answer": "the answer"} for i, t in enumerate(TRIVIA)]
    (tmp_path / "trivia.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "trivia.parquet")
    (tmp_path / "trivia.csv").write_text("qid,question\n" + "".join(f'{r["qid"]},"{r["question"]}"\n' for r in rows))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "trivia_hf"))
    sets = [HUMANEVAL] + [{"name": f"trivia_{f}", "path": str(tmp_path / p), "fields": ["question"], "id_field": "qid",
                           "version": "1"} for f, p in (("jsonl", "trivia.jsonl"), ("parquet", "trivia.parquet"),
                                                        ("csv", "trivia.csv"), ("hf", "trivia_hf"))]
    stage = _stage(benchmarks=sets)
    summary = stage.summary()
    assert [b["name"] for b in summary["benchmarks"]] == ["humaneval", "trivia_jsonl", "trivia_parquet", "trivia_csv",
                                                          "trivia_hf"]
    assert all(b["items"] == 30 and len(b["sha256"]) == 64 for b in summary["benchmarks"][1:])
    assert summary["benchmarks"][0]["items"] == 164 and summary["benchmarks"][0]["version"] == "1.0.3"
    v = _run(stage, [CLEAN + TRIVIA[4].lower() + "?", CLEAN + humaneval.texts[0], CLEAN])
    assert v.decision == ["dropped_decontaminated", "dropped_decontaminated", None]
    assert v.evidence["benchmark"][0] == "trivia_csv,trivia_hf,trivia_jsonl,trivia_parquet"
    assert "trivia_jsonl:q4" in v.evidence["item_ids"][0]
    assert v.evidence["benchmark"][1] == "humaneval" and v.evidence["item_ids"][1][0] == "humaneval:HumanEval/0"


def _bad(tmp_path, name: str, content: str, fields=("question",), **extra):
    path = tmp_path / name
    path.write_text(content)
    return {"benchmarks": [{"name": "b", "path": str(path), "fields": list(fields), **extra}]}


@pytest.mark.parametrize("name, content, fields, message", [
    ("bad.jsonl", '{"question": "a b c d e f g h i"}\n{"question": \n', ("question",), r"bad.jsonl, line 2: not valid JSON"),
    ("empty.jsonl", "", ("question",), r"empty.jsonl: no items"),
    ("nofield.jsonl", '{"q": "a b c d e f g h i"}\n', ("question",), r"nofield.jsonl: field 'question' does not exist"),
    ("later.jsonl", '{"question": "a b c d e f g h i"}\n{"q": "x"}\n', ("question",),
     r"later.jsonl, item 2: field 'question' does not exist"),
    ("nofield.csv", "q,a\nx,y\n", ("question",), r"nofield.csv: field 'question' does not exist"),
    ("array.jsonl", "[1, 2]\n", ("question",), r"array.jsonl, line 1: a JSON list"),
    ("short.jsonl", '{"question": "too short"}\n', ("question",), r"short.jsonl: no item of 'b' has 8 words"),
])
def test_bad_benchmark_files_are_config_errors_naming_file_and_field(tmp_path, name, content, fields, message):
    with pytest.raises(ConfigError, match=message):
        _stage(**_bad(tmp_path, name, content, fields))


def test_a_missing_file_a_parquet_without_the_field_and_a_bad_id_field_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"file .*absent.jsonl does not exist"):
        _stage(benchmarks=[{"name": "b", "path": str(tmp_path / "absent.jsonl"), "fields": ["question"]}])
    pq.write_table(pa.table({"q": ["a b c d e f g h i"]}), tmp_path / "t.parquet")
    with pytest.raises(ConfigError, match=r"t.parquet: field 'question' does not exist"):
        _stage(benchmarks=[{"name": "b", "path": str(tmp_path / "t.parquet"), "fields": ["question"]}])
    with pytest.raises(ConfigError, match=r"field 'nope' does not exist"):
        _stage(**_bad(tmp_path, "ok.jsonl", '{"question": "a b c d e f g h i"}\n', id_field="nope"))
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    with pytest.raises(ConfigError, match=r"x.bin: cannot tell its format"):
        _stage(benchmarks=[{"name": "b", "path": str(tmp_path / "x.bin"), "fields": ["question"]}])


def test_a_relative_benchmark_path_resolves_in_the_config_file_s_folder(tmp_path):
    from pipeline.config import load_config
    from pipeline.core.registry import run_stages

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "trivia.jsonl").write_text("".join(json.dumps({"question": t}) + "\n" for t in TRIVIA))
    (tmp_path / "conf" / "run.yaml").write_text(
        "sources: [{name: t, kind: jsonl, paths: [in]}]\noutput: {dir: out}\n"
        "stages:\n  - kind: decontaminate\n    config: {benchmarks: [{name: trivia, path: trivia.jsonl, fields: [question]}]}\n")
    cfg = load_config(tmp_path / "conf" / "run.yaml")
    spec = next(s for s in run_stages(cfg) if s.kind == "decontaminate")
    stage = spec.build(cfg).setup()
    assert stage.summary()["benchmarks"][0]["source"] == str((tmp_path / "conf" / "trivia.jsonl").resolve())
    assert _run(stage, [TRIVIA[2]]).decision == ["dropped_decontaminated"]


def test_a_run_with_a_bad_benchmark_file_fails_before_anything_is_published(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text(json.dumps({"id": "r0", "text": CLEAN}) + "\n")
    (tmp_path / "bench.jsonl").write_text('{"prompt": "a b c d e f g h i"}\n')
    data = {"sources": [{"name": "t", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
            "output": {"dir": str(tmp_path / "out")},
            "stages": [{"kind": "safety"}, {"kind": "decontaminate", "config": {
                "benchmarks": [{"name": "b", "path": str(tmp_path / "bench.jsonl"), "fields": ["question"]}]}}]}
    with pytest.raises(ConfigError, match=r"bench.jsonl: field 'question' does not exist"):
        run_local(parse_config(data))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_short_records_an_exact_item_and_empty_text_are_handled_and_counted(humaneval):
    item = humaneval.texts[40]
    v = _run(_stage(), ["", None, "three words only", item, "  " + item.upper() + "  "])
    assert v.decision == [None, None, None, "dropped_decontaminated", "dropped_decontaminated"]
    assert v.evidence["item_overlap"][3] == 1.0 and v.evidence["item_ids"][3][0] == "HumanEval/40"
    assert v.counts["shorter_than_ngram"] == 3 and v.counts["equal_to_item"] == 2


def test_a_short_item_is_matched_whole(tmp_path):
    stage = _stage(**_bad(tmp_path, "short.jsonl", '{"question": "Name the capital city of the old kingdom, please"}\n'))
    v = _run(stage, ["Quiz time! name the CAPITAL city of the old kingdom please... answer below", CLEAN])
    assert v.decision == ["dropped_decontaminated", None]


def test_a_ten_megabyte_record_is_scanned_in_bounded_time(humaneval):
    filler = CLEAN * (10_000_000 // len(CLEAN))
    text = filler[: len(filler) // 2] + humaneval.texts[99] + filler[len(filler) // 2:]
    stage = _stage(action="cut")
    t0 = time.perf_counter()
    v = _run(stage, [text, filler])
    assert time.perf_counter() - t0 < 20
    assert v.decision == [None, None] and v.evidence["decon_pieces"][0] == 2
    assert v.evidence["item_ids"][0][0] == "HumanEval/99"


def _run_config(tmp_path, action: str) -> dict:
    corpus = tmp_path / "in"
    corpus.mkdir(exist_ok=True)
    item = load_set(BenchmarkConfig(**HUMANEVAL), None).texts[21]
    rows = [{"id": "clean", "text": CLEAN * 5}, {"id": "copy", "text": CLEAN * 3 + item + CLEAN * 2},
            {"id": "short", "text": "too short"}, {"id": "other", "text": "Another clean record. " * 20}]
    (corpus / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"sources": [{"name": "t", "kind": "jsonl", "paths": [str(corpus)], "id_field": "id"}],
            "output": {"dir": str(tmp_path / f"out_{action}")},
            "stages": [{"kind": "safety"}, {"kind": "decontaminate", "config": {
                "benchmarks": [HUMANEVAL], "action": action, "cut_margin_chars": 0}}]}


def test_a_whole_run_records_evidence_in_the_ledger_and_counts_in_the_manifest(tmp_path):
    m = run_local(parse_config(_run_config(tmp_path, "drop")))
    ledger = pl.read_parquet(str(tmp_path / "out_drop" / "ledger" / "*.parquet"))
    row = ledger.filter(pl.col("record_id") == "copy").row(0, named=True)
    assert row["decision"] == "dropped_decontaminated" and row["stage"] == "decontaminate"
    ev = json.loads(row["evidence"])
    assert ev["benchmark"] == "humaneval" and ev["item_ids"][0] == "HumanEval/21" and ev["item_overlap"] == 1.0
    st = m["stages"]["decontaminate"]
    assert (st["seen"], st["dropped"]) == (4, 1)
    assert st["counts"]["matched"] == 1 and st["counts"]["shorter_than_ngram"] == 1 and st["counts"]["scanned"] == 4
    desc = next(d for d in m["pipeline"]["stages"] if d["kind"] == "decontaminate")
    (bench,) = desc["summary"]["benchmarks"]
    assert bench["name"] == "humaneval" and bench["items"] == 164 and len(bench["sha256"]) == 64
    assert bench["ngrams"] == desc["summary"]["ngrams"] > 10_000
    shards = pl.read_parquet(str(tmp_path / "out_drop" / "shards" / "*.parquet"))
    assert sorted(shards["record_id"].to_list()) == ["clean", "other", "short"]


def test_a_whole_run_with_cut_writes_the_cut_text_and_says_so_in_the_ledger(tmp_path):
    m = run_local(parse_config(_run_config(tmp_path, "cut")))
    ledger = pl.read_parquet(str(tmp_path / "out_cut" / "ledger" / "*.parquet"))
    row = ledger.filter(pl.col("record_id") == "copy").row(0, named=True)
    assert row["decision"] == "kept_decontaminated" and "2 pieces kept" in row["reason"]
    ev = json.loads(row["evidence"])
    assert ev["decon_pieces"] == 2 and ev["item_ids"][0] == "HumanEval/21"
    shards = pl.read_parquet(str(tmp_path / "out_cut" / "shards" / "*.parquet"))
    text = shards.filter(pl.col("record_id") == "copy")["text"][0]
    assert "def " not in text and text.count("committee") == 5
    assert shards.filter(pl.col("record_id") == "clean")["text"][0] == CLEAN * 5
    assert m["conservation"]["balanced"]


def test_cut_and_pii_redaction_compose_at_write_time(tmp_path):
    data = _run_config(tmp_path, "cut")
    corpus = tmp_path / "in" / "a.jsonl"
    item = load_set(BenchmarkConfig(**HUMANEVAL), None).texts[21]
    corpus.write_text(json.dumps({"id": "both", "text": CLEAN * 3 + item + CLEAN + "Write to jane.roe@example.com today. "
                                  + CLEAN}) + "\n")
    data["pii"] = {"entities": ["EMAIL_ADDRESS"]}
    data["stages"].append({"kind": "pii"})
    run_local(parse_config(data))
    text = pl.read_parquet(str(tmp_path / "out_cut" / "shards" / "*.parquet"))["text"][0]
    assert "def " not in text and "example.com" not in text
    assert text.count("committee") == 5 and "Write to " in text and " today." in text
