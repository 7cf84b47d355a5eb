"""The language stage: tag, keep and drop modes, the minimum confidence, `unknown`, its config,
and one run through the executor (ledger evidence on kept and dropped records, manifest counts
per language and source, `hygiene inspect`)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner

from pipeline.core.registry import BUILTIN, resolve_stages, stage_class
from pipeline.core.stage import BatchContext
from pipeline.errors import ConfigError
from pipeline.stages.language import DROPPED_LANGUAGE, LanguageConfig, LanguageStage
from tests.conftest import build_config

EN = "The committee will publish its annual report on the state of the railways next week."
FR = "Le comité publiera la semaine prochaine son rapport annuel sur l'état des chemins de fer."
DE = "Der Ausschuss wird nächste Woche seinen Jahresbericht über den Zustand der Eisenbahnen veröffentlichen."
ES = "El comité publicará la próxima semana su informe anual sobre el estado de los ferrocarriles."
EMOJI = "🙂🎉🚀"
TEXTS = [EN, FR, DE, ES, EMOJI, ""]


def _run(texts, **config):
    stage = LanguageStage(LanguageConfig(**config)).setup()
    table = pa.table({"text": texts})
    ctx = BatchContext("web", "text", np.arange(len(texts), dtype=np.int64), [f"r{i}" for i in range(len(texts))],
                       0, None, {})
    return stage.process(table, ctx)


def test_the_stage_is_built_in():
    assert BUILTIN["language"] == "pipeline.stages.language:LanguageStage"
    assert stage_class("language")[0] is LanguageStage


def test_tag_mode_records_language_and_confidence_and_keeps_everything():
    v = _run(TEXTS)
    assert v.decision == [None] * 6
    assert v.evidence["language"] == ["en", "fr", "de", "es", "unknown", "unknown"]
    assert all(0.5 <= c <= 1.0 for c in v.evidence["language_confidence"][:4])
    assert v.evidence["language_confidence"][4:] == [0.0, 0.0]
    assert v.counts == {"de": 1, "en": 1, "es": 1, "fr": 1, "unknown": 2}


def test_keep_mode_drops_the_other_languages_and_unknown_with_reasons():
    v = _run(TEXTS, mode="keep", languages=["en", "de"])
    assert v.decision == [None, DROPPED_LANGUAGE.name, None, DROPPED_LANGUAGE.name, DROPPED_LANGUAGE.name,
                          DROPPED_LANGUAGE.name]
    assert v.reason[1].startswith("language fr (") and v.reason[1].endswith(") not in [en, de]")
    assert v.reason[4] == "language unknown (no language found) not in [en, de]"
    assert v.evidence["language"][1] == "fr"  # evidence on dropped rows too


def test_keep_mode_keeps_unknown_when_it_is_listed():
    v = _run(TEXTS, mode="keep", languages=["en", "unknown"])
    assert [d is None for d in v.decision] == [True, False, False, False, True, True]


def test_drop_mode_drops_only_the_listed_languages():
    v = _run(TEXTS, mode="drop", languages=["fr", "es"])
    assert [d is None for d in v.decision] == [True, False, True, False, True, True]
    assert v.reason[1].startswith("language fr (") and v.reason[1].endswith(") in dropped [fr, es]")


def test_below_min_confidence_a_record_counts_as_unknown_and_keeps_its_guess():
    v = _run([EN, FR], mode="keep", languages=["en", "fr"], min_confidence=1.0)
    assert v.evidence["language"] == ["unknown", "unknown"]
    assert v.evidence["language_guess"] == ["en", "fr"]
    assert v.decision == [DROPPED_LANGUAGE.name] * 2
    assert "< min_confidence 1) not in [en, fr]" in v.reason[0]
    assert v.counts == {"unknown": 2}


def test_a_mixed_document_is_judged_by_its_majority_language():
    doc = (EN + " ") * 10 + (FR + " ") * 3
    v = _run([doc], mode="keep", languages=["en"])
    assert v.decision == [None] and v.evidence["language"] == ["en"]


@pytest.mark.parametrize("backend", ["cld2", "fasttext"])
def test_both_backends_decide_the_same_on_plain_sentences(backend):
    v = _run([EN, FR, DE], mode="keep", languages=["fr"], backend=backend)
    assert [d is None for d in v.decision] == [False, True, False]


def test_image_records_are_kept_without_evidence():
    stage = LanguageStage(LanguageConfig(mode="keep", languages=["en"])).setup()
    ctx = BatchContext("imgs", None, np.arange(2, dtype=np.int64), ["a", "b"], 0, None, {})
    v = stage.process(pa.table({"image": [b"x", b"y"]}), ctx)
    assert v.decision == [None, None] and v.evidence == {} and v.counts == {}


@pytest.mark.parametrize("options, message", [
    ({"mode": "keep"}, "needs `languages`"),
    ({"languages": ["english"]}, "not a language code"),
    ({"min_confidence": 1.5}, "less than or equal to 1"),
    ({"backend": "lingua"}, "backend"),
    ({"sample_chars": 100, "window_chars": 500}, "must not exceed sample_chars"),
    ({"mode": "tag", "colour": "red"}, "colour"),
])
def test_invalid_config_is_a_config_error_naming_the_field(tmp_path, options, message):
    cfg = build_config(tmp_path / "o", [{"name": "t", "kind": "jsonl", "paths": [str(tmp_path)]}],
                       stages=[{"kind": "safety"}, {"kind": "language", "config": options}])
    with pytest.raises(ConfigError, match=message):
        resolve_stages(cfg)


def test_codes_are_normalised_in_the_config():
    assert LanguageConfig(mode="keep", languages=["EN", "nb", "en"]).languages == ("en", "no")


def test_a_run_records_languages_in_the_ledger_and_counts_them_per_source_in_the_manifest(tmp_path):
    from pipeline.cli import main
    from pipeline.executor import run_local

    web, notes = tmp_path / "web", tmp_path / "notes"
    web.mkdir()
    notes.mkdir()
    rows = [EN, FR, DE, EMOJI, EN.replace("annual", "yearly"), "", "1234 5678", FR.replace("annuel", "complet")]
    (web / "a.jsonl").write_text("".join(json.dumps({"id": f"w{i}", "text": t}) + "\n" for i, t in enumerate(rows)))
    (notes / "b.jsonl").write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n"
                                           for i, t in enumerate([ES, EN.replace("week", "month")])))
    out = tmp_path / "out"
    cfg = build_config(out, [{"name": "web", "kind": "jsonl", "paths": [str(web)], "id_field": "id"},
                             {"name": "notes", "kind": "jsonl", "paths": [str(notes)], "id_field": "id"}],
                       stages=[{"kind": "safety"}, {"kind": "language", "config": {"mode": "keep", "languages": ["en", "fr"]}},
                               {"kind": "exact_dedup"}])
    manifest = run_local(cfg)
    ledger = pl.read_parquet(str(out / "ledger" / "*.parquet")).sort("record_id")
    decision = dict(zip(ledger["record_id"], ledger["decision"]))
    assert decision["w5"] == "rejected"  # empty text never reaches the stage: the reader rejects it
    ev = {r: json.loads(e) for r, e in zip(ledger["record_id"], ledger["evidence"]) if r != "w5"}
    assert {r: e["language"] for r, e in ev.items()} == {
        "n0": "es", "n1": "en", "w0": "en", "w1": "fr", "w2": "de", "w3": "unknown", "w4": "en", "w6": "unknown",
        "w7": "fr"}
    assert {r for r, d in decision.items() if d == "dropped_language"} == {"n0", "w2", "w3", "w6"}
    assert all("language_confidence" in e for e in ev.values())
    st = manifest["stages"]["language"]
    assert st["counts"] == {"de": 1, "en": 3, "es": 1, "fr": 2, "unknown": 2}
    assert st["counts_by_source"] == {"notes": {"en": 1, "es": 1}, "web": {"de": 1, "en": 2, "fr": 2, "unknown": 2}}
    assert st["seen"] == 9 and st["dropped"] == 4 and st["kept"] == 5
    assert manifest["conservation"]["balanced"]

    shown = CliRunner().invoke(main, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "language: records per value" in shown.output and "unknown" in shown.output
