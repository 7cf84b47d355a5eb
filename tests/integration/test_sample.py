"""`hygiene sample`, `report --samples` and `diff` per stage: a steward audits what the filters removed,
read back from the inputs, with personal data masked and never a quarantined record."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from pipeline.audit import sample as sample_mod
from pipeline.audit.inspect import diff_runs
from pipeline.audit.report import render_report
from pipeline.audit.sample import Masker, QuarantinedRecordError, UnknownReasonError, plain_diff, sample_records
from pipeline.cli import main
from pipeline.executor import run_local
from tests.conftest import REPO, build_config

CANARY = "CANARY-5b1e benign planted sentence that stands in for listed material"
FILLER = ("The committee met on Tuesday to review the garden plan, the budget for new tools, the schedule of "
          "volunteer shifts and the list of plants that did well last season in the shaded beds. ")
SHORT = [f"short note number {i} about the garden" for i in range(2, 10)]


def _long_pair() -> list[dict]:
    lines = (REPO / "data_samples" / "web" / "part-2.jsonl").read_text().splitlines()
    return [json.loads(lines[2]), json.loads(lines[21])]   # long-002 and long-002-edit: near duplicates


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    rows = _long_pair() + [
        {"id": "doc-1", "text": FILLER + "Questions go to jane.doe@example.com before Friday."},
        {"id": "doc-1-copy", "text": FILLER + "Questions go to jane.doe@example.com before Friday."},
        {"id": "short-1", "text": "Write to sam.roe@example.com soon"},
        {"id": "short-xss", "text": "<script>alert(1)</script> & more"},
        *({"id": f"short-{i}", "text": t} for i, t in zip(range(2, 10), SHORT)),
        {"id": "planted", "text": CANARY},
    ]
    (root / "in").mkdir()
    (root / "in" / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    lst = root / "list.txt"
    lst.write_text("# type: sha256\n# version: 1\n# updated: 2026-11-20\n" + hashlib.sha256(CANARY.encode()).hexdigest() + "\n")
    sources = [{"name": "w", "kind": "jsonl", "paths": [str(root / "in")], "id_field": "id"}]
    short = {"kind": "short_docs:ShortDocsFilter", "config": {"min_words": 20}, "search_path": str(REPO / "examples" / "stages")}
    safety = {"hash_lists": [{"name": "demo", "path": str(lst)}]}
    # A: with the user's filter and a PII stage that masks e-mail addresses; B: neither.
    run_local(build_config(root / "a", sources, safety=safety,
                           stages=[{"kind": "safety"}, short, {"kind": "exact_dedup"}, {"kind": "near_dedup"}, {"kind": "pii"}],
                           pii={"entities": ["EMAIL_ADDRESS"], "actions": {"EMAIL_ADDRESS": "mask"}, "residual_scan": {"enabled": False}}))
    run_local(build_config(root / "b", sources, safety=safety,
                           stages=[{"kind": "safety"}, {"kind": "exact_dedup"}, {"kind": "near_dedup"}]))
    return root


@pytest.fixture(scope="module")
def masker_a(corpus):
    from pipeline.audit.verify import load_manifest

    return Masker(load_manifest(corpus / "a"))


def test_a_near_duplicate_is_shown_beside_its_survivor_with_the_differences_marked(corpus, masker_a):
    s = sample_records(corpus / "a", "dropped_near_duplicate", masker=masker_a)
    (r,) = s["records"]
    assert r["record_id"] == "long-002" and r["survivor"]["record_id"] == "long-002-edit"
    assert r["content"]["status"] == "ok" and r["survivor"]["content"]["status"] == "ok"
    assert r["evidence"]["duplicate_of"] == "long-002-edit" and r["evidence"]["similarity"] >= 0.8
    removed = "".join(t for op, t in r["diff"] if op == "-")
    assert "Subscribe to our newsletter" in removed   # the survivor's footer, absent from the dropped copy
    assert plain_diff(r["diff"]).count("[-") >= 1
    (cut,) = sample_records(corpus / "a", "dropped_near_duplicate", max_chars=300, masker=masker_a)["records"]
    assert len(cut["content"]["text"]) == 300 and cut["content"]["truncated"]
    assert "Subscribe to our newsletter" in "".join(t for op, t in cut["diff"] if op == "-")   # compared past the cut
    out = CliRunner().invoke(main, ["sample", str(corpus / "a"), "--reason", "dropped_near", "--seed", "3"])
    assert out.exit_code == 0, out.output
    assert "long-002" in out.output and "[- Subscribe to our newsletter" in out.output   # not a TTY: plain markers


def test_an_exact_duplicate_shows_its_survivor_identical_and_masked_by_the_runs_policy(corpus, masker_a):
    (r,) = sample_records(corpus / "a", "dropped_duplicate", masker=masker_a)["records"]
    assert r["record_id"] == "doc-1-copy" and r["survivor"]["record_id"] == "doc-1"
    assert all(op == "=" for op, _ in r["diff"])
    text = r["content"]["text"]
    assert "jane.doe@example.com" not in text and "*" * len("jane.doe@example.com") in text   # the run's `mask` action
    assert r["content"]["masked_spans"] == 1


def test_a_users_filter_decision_is_sampled_with_its_evidence_and_masked_text(corpus, masker_a):
    s = sample_records(corpus / "a", "dropped_short", n=20, masker=masker_a)
    ids = {r["record_id"] for r in s["records"]}
    assert ids == {"short-1", "short-xss", *(f"short-{i}" for i in range(2, 10))}    # never `planted`
    assert s["masking"]["mode"] == "run policy"
    r = next(r for r in s["records"] if r["record_id"] == "short-1")
    assert r["stage"] == "short_docs" and r["evidence"] == {"words": 4, "min_words": 20}
    assert r["content"]["text"] == "Write to " + "*" * len("sam.roe@example.com") + " soon"


def test_without_a_pii_stage_text_is_masked_by_default_and_no_mask_needs_the_flag(corpus):
    s = sample_records(corpus / "b", "dropped_duplicate")
    assert s["masking"]["mode"] == "default" and "no PII stage" in s["masking"]["note"]
    assert "<EMAIL_ADDRESS>" in s["records"][0]["content"]["text"]
    out = CliRunner().invoke(main, ["sample", str(corpus / "b"), "--reason", "dropped_duplicate", "--no-mask"])
    assert out.exit_code == 0 and "jane.doe@example.com" in out.stdout and "warning" in out.stderr


def test_quarantined_records_are_refused_by_decision_by_reason_and_by_id_before_any_read(corpus, monkeypatch):
    def no_read(*a, **k):
        raise AssertionError("a refused sample must not read any input")

    monkeypatch.setattr(sample_mod, "read_back", no_read)
    for kw in ({"reason": "quarantined"}, {"reason": "matched hash list"}, {"record_ids": ("planted",)},
               {"record_ids": ("short-2", "planted")}):
        with pytest.raises(QuarantinedRecordError, match="quarantine/incidents.jsonl"):
            sample_records(corpus / "a", **kw)
    for args in (["--reason", "quarantined"], ["--record", "planted"]):
        out = CliRunner().invoke(main, ["sample", str(corpus / "a"), *args])
        assert out.exit_code == 4 and "incidents.jsonl" in out.stderr and CANARY not in out.stdout + out.stderr


def test_an_input_changed_since_the_run_is_reported_and_its_content_never_shown(tmp_path):
    (tmp_path / "in").mkdir()
    rows = [{"id": "a", "text": "the same words twice"}, {"id": "b", "text": "the same words twice"},
            {"id": "c", "text": "other words"}, {"id": "d", "text": "other words"}]
    (tmp_path / "in" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_local(build_config(tmp_path / "run", [{"name": "w", "kind": "jsonl", "paths": [str(tmp_path / "in")], "id_field": "id"}]))
    rows[1]["text"] = "EDITED AFTER THE RUN"
    (tmp_path / "in" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = sample_records(tmp_path / "run", "dropped_duplicate", n=5, mask=False)
    got = {r["record_id"]: r["content"] for r in s["records"]}
    assert got["b"]["status"] == "input_changed" and "text" not in got["b"]
    assert got["d"]["status"] == "ok" and got["d"]["text"] == "other words"
    (tmp_path / "in" / "x.jsonl").unlink()
    s = sample_records(tmp_path / "run", "dropped_duplicate", n=5, mask=False)
    assert {r["content"]["status"] for r in s["records"]} == {"input_missing"}


def test_an_unknown_reason_lists_the_runs_decisions_with_counts(corpus):
    with pytest.raises(UnknownReasonError, match=r"dropped_short \(dropped\) 10") as e:
        sample_records(corpus / "a", "no_such_thing")
    assert "dropped_near_duplicate (dropped) 1" in str(e.value)
    out = CliRunner().invoke(main, ["sample", str(corpus / "a"), "--reason", "no_such_thing"])
    assert out.exit_code == 2 and "dropped_short" in out.stderr


def test_the_same_seed_shows_the_same_records_and_other_seeds_others(corpus, masker_a):
    def ids(seed):
        return [r["record_id"] for r in sample_records(corpus / "a", "dropped_short", n=3, seed=seed, masker=masker_a)["records"]]

    first = ids(7)
    assert len(first) == 3 and ids(7) == first
    assert any(ids(seed) != first for seed in range(1, 4))


def test_report_samples_are_opt_in_masked_escaped_and_never_quarantined(corpus):
    plain = render_report(corpus / "a")
    assert "Samples of removed records" not in plain
    page = render_report(corpus / "a", samples=20)
    for d in ("dropped_short", "dropped_duplicate", "dropped_near_duplicate"):
        assert f'id="samples-{d}"' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page and "<script>alert" not in page
    assert "sam.roe@example.com" not in page and "jane.doe@example.com" not in page
    assert CANARY not in page and 'data-record-id="planted"' not in page
    assert "<del> Subscribe to our newsletter" in page


def test_diff_attributes_each_changed_decision_to_the_stage_that_caused_it(corpus):
    d = diff_runs(corpus / "b", corpus / "a")
    moves = {(t["a"], t["b"], t["cause"]): t["records"] for t in d["decision_changes"]["transitions"]}
    assert moves[("kept", "dropped_short", "short_docs")] == 10     # short-1 too: dropped before the PII stage
    assert moves[("kept", "kept_redacted", "pii")] == 1             # doc-1's e-mail address
    assert d["decision_changes"]["by_stage"] == {"short_docs": 10, "pii": 1}
    only = diff_runs(corpus / "b", corpus / "a", reason="pii")["decision_changes"]
    assert only["total"] == 1 and only["records"][0]["record_id"] == "doc-1"
    out = CliRunner().invoke(main, ["diff", str(corpus / "b"), str(corpus / "a"), "--reason", "dropped_short"])
    assert out.exit_code == 0 and "kept → dropped_short  (by short_docs)" in out.output


def test_long_binary_looking_and_right_to_left_texts_are_cut_and_printed_safely(tmp_path):
    big = " ".join(f"word{i % 97}" for i in range(40_000))
    weird = "\x1b[2J\x07 \u202eevil\u202c שלום עולם 😀 mixed Ωmega"
    rows = [{"id": i, "text": t} for i, t in (("big", big), ("big-copy", big), ("weird", weird), ("weird-copy", weird))]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_local(build_config(tmp_path / "run", [{"name": "w", "kind": "jsonl", "paths": [str(tmp_path / "in")], "id_field": "id"}]))
    s = sample_records(tmp_path / "run", "dropped_duplicate", max_chars=100)
    got = {r["record_id"]: r["content"] for r in s["records"]}
    assert got["big-copy"]["truncated"] and len(got["big-copy"]["text"]) == 100 and got["big-copy"]["chars"] == len(big)
    text = got["weird-copy"]["text"]
    assert "\x1b" not in text and "\\x1b[2J" in text and "\\u202e" in text and "שלום עולם 😀" in text
    out = CliRunner().invoke(main, ["sample", str(tmp_path / "run"), "--record", "weird-copy"])
    assert out.exit_code == 0 and "\x1b" not in out.output and "\x07" not in out.output


def _texts() -> list[str]:
    return [f"record number {i} " + "w" * (i * 41 % 300) for i in range(10)] + ["record number 7 " + "w" * (7 * 41 % 300)]


def _write(kind: str, root) -> dict:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = _texts()
    root.mkdir()
    if kind in ("jsonl", "hf_load"):
        (root / "d.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        return {"kind": kind, "paths": [str(root / "d.jsonl")], **({"builder": "json"} if kind == "hf_load" else {})}
    if kind == "csv":
        (root / "d.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
        return {"kind": "csv", "paths": [str(root / "d.csv")]}
    if kind == "parquet":
        pq.write_table(pa.table({"text": texts}), root / "d.parquet", row_group_size=3)
        return {"kind": "parquet", "paths": [str(root / "d.parquet")]}
    if kind == "hf_disk":
        datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(root / "ds"))
        return {"kind": "hf_disk", "paths": [str(root / "ds")]}
    for i, t in enumerate(texts):
        (root / f"{i:02d}.txt").write_text(t)
    return {"kind": "text_dir", "paths": [str(root)]}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet", "text_dir", "hf_disk", "hf_load"])
def test_every_text_reader_reads_a_removed_record_back_across_unit_splits(tmp_path, kind):
    spec = _write(kind, tmp_path / "in")
    run_local(build_config(tmp_path / "run", [{"name": "s", **spec}],
                           units={"target_bytes": 1024, "target_rows": 4, "batch_bytes": 1024}))
    (r,) = sample_records(tmp_path / "run", "dropped_duplicate", mask=False)["records"]
    assert r["content"]["status"] == "ok" and r["content"]["text"] == _texts()[7]
    assert r["survivor"]["content"]["status"] == "ok" and all(op == "=" for op, _ in r["diff"])


def test_a_webdataset_image_is_described_by_its_hashes_never_its_bytes(tmp_path):
    from tests.integration.test_webdataset import sample as wds_sample, wds, write_tar

    tar = write_tar(tmp_path / "in" / "shard-000.tar", wds_sample("s/0", "field-0.png", caption="a synthetic caption")
                    + wds_sample("s/1", "field-0.png", caption="the same picture again"))
    run_local(build_config(tmp_path / "run", [wds([tar])]))
    (r,) = sample_records(tmp_path / "run", "dropped_duplicate", mask=False)["records"]
    c = r["content"]
    assert c["status"] == "ok" and c["kind"] == "image" and (c["width"], c["height"]) == (192, 192)
    assert c["sha256"] == hashlib.sha256((REPO / "data_samples" / "images" / "field-0.png").read_bytes()).hexdigest()
    assert "text" not in c and r["phash_distance"] == 0
