"""Hash lists: formats, validation with line numbers, tombstones, freshness, fail-closed matching."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from pipeline.config import HashListConfig, parse_config
from pipeline.safety.hashlist import HASH_TYPES, HashListError, load_hash_list, normalise_url
from pipeline.safety.matcher import Matcher
from pipeline.sources.base import string_digests

SHA = hashlib.sha256(b"benign planted text").hexdigest()


def cfg(path, **kw):
    return HashListConfig(name="l", path=str(path), **kw)


def test_every_hash_type_accepts_its_example_and_normalises_case():
    for t in HASH_TYPES.values():
        assert t.normalise(t.example.upper() if t.name != "url" else t.example) == (t.example if t.name != "url" else normalise_url(t.example))


def test_a_text_list_reads_its_header_and_honours_tombstones(tmp_path):
    p = tmp_path / "l.txt"
    other = hashlib.sha256(b"x").hexdigest()
    p.write_text(f"# type: sha256\n# version: 7\n# provider: T\n# updated: 2026-11-01\n{SHA.upper()}\n{other}\n-{other}\n")
    hl = load_hash_list(cfg(p))
    assert hl.entries == {"sha256": {SHA: "l:5"}} and hl.tombstones == 1
    assert (hl.version, hl.provider, hl.updated_at[:10]) == ("7", "T", "2026-11-01")


def test_a_variant_column_names_which_form_of_the_listed_file_a_hash_came_from(tmp_path):
    pdq_a, pdq_b = HASH_TYPES["pdq"].example, "0f" * 32
    c = tmp_path / "l.csv"
    c.write_text(f"hash,type,entry_id,list,variant\n{pdq_a},pdq,p.jpg,x,\n{pdq_b},pdq,p.jpg,x,stored_pixels\n")
    hl = load_hash_list(cfg(c))
    assert hl.entries == {"pdq": {pdq_a: "p.jpg", pdq_b: "p.jpg"}} and hl.variants == {"pdq": {pdq_b: "stored_pixels"}}
    j = tmp_path / "l.jsonl"
    j.write_text(json.dumps({"hash": pdq_b, "type": "pdq", "variant": "trimmed"}) + "\n"
                 + json.dumps({"hash": pdq_b, "type": "pdq", "deleted": True}) + "\n")
    assert load_hash_list(cfg(j)).variants == {"pdq": {}}


def test_csv_and_jsonl_lists_carry_types_entry_ids_and_deletions(tmp_path):
    c = tmp_path / "l.csv"
    c.write_text(f"hash,type,entry_id,deleted\n{SHA},sha256,E1,\n{'a' * 32},md5,E2,\n{'a' * 32},md5,E2,true\n")
    assert load_hash_list(cfg(c)).entries == {"sha256": {SHA: "E1"}, "md5": {}}
    j = tmp_path / "l.jsonl"
    j.write_text(json.dumps({"hash": "f" * 64, "type": "pdq", "entry_id": "P1"}) + "\n")
    assert load_hash_list(cfg(j)).entries == {"pdq": {"f" * 64: "P1"}}


def test_malformed_lines_stop_the_run_naming_their_line_numbers(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text(f"# type: sha256\n{SHA}\nnot-a-hash\n{'a' * 63}\n")
    with pytest.raises(HashListError, match=r"bad.txt: 2 malformed line\(s\): line 3: not a sha256 hash; line 4"):
        load_hash_list(cfg(p))


def test_a_list_without_a_type_is_refused(tmp_path):
    p = tmp_path / "notype.txt"
    p.write_text(f"{SHA}\n")
    with pytest.raises(HashListError, match="no hash type"):
        load_hash_list(cfg(p))


def base(tmp_path, lists, **safety):
    return parse_config({"sources": [{"name": "s", "kind": "jsonl", "paths": ["/x"]}],
                         "output": {"dir": str(tmp_path / "o")}, "safety": {"hash_lists": lists, **safety}})


def test_a_missing_or_stale_list_fails_closed_unless_waived(tmp_path):
    with pytest.raises(HashListError, match="not found"):
        Matcher.from_config(base(tmp_path, [{"name": "gone", "path": str(tmp_path / "gone.txt")}]))
    old = tmp_path / "old.txt"
    old.write_text(f"# type: sha256\n# updated: 2020-01-01\n{SHA}\n")
    stale = [{"name": "old", "path": str(old), "max_age_days": 30}]
    with pytest.raises(HashListError, match="over its maximum age of 30 days"):
        Matcher.from_config(base(tmp_path, stale))
    m = Matcher.from_config(base(tmp_path, stale, waivers=[{"list": "old", "reason": "vendor outage, ticket T-1"}]))
    assert m.waivers[0]["reason"] == "vendor outage, ticket T-1" and m.summary()[0]["waived"]


def test_text_matches_on_raw_and_normalised_digests_and_urls(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text(f"hash,type\n{SHA},sha256\nhttps://Bad.Example.com:443/a#frag,url\n")
    m = Matcher.from_config(base(tmp_path, [{"name": "l", "path": str(p)}], url_field="url"))
    texts = pa.array(["benign planted text", "  benign   planted\ntext ", "innocent", "other"], pa.large_string())
    hits = m.match_text(texts, string_digests(texts), ["", None, "https://bad.example.com/a", "https://ok.example.com/"])
    assert [h.matched_on if h else None for h in hits] == [
        "sha256 of the text", "sha256 of the normalised text", "normalised URL", None]
    assert all(h.distance == 0 and h.list == "l" for h in hits[:3])
