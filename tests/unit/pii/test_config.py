"""The `pii:` section is validated before anything runs."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from tests.conftest import build_config


def _cfg(tmp_path, pii):
    return build_config(tmp_path / "out", [{"name": "s", "kind": "jsonl", "paths": [str(tmp_path)]}], pii=pii)


def test_the_default_pii_section_enables_the_documented_entities_with_tags(tmp_path):
    cfg = _cfg(tmp_path, {}).pii
    assert cfg.enabled and cfg.default_action == "tag"
    assert {"PERSON", "EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN"} <= set(cfg.entities)
    assert "DATE_TIME" not in cfg.entities and "US_DRIVER_LICENSE" not in cfg.entities
    assert cfg.threshold_for("PHONE_NUMBER") == 0.4 and cfg.threshold_for("PERSON") == 0.5


@pytest.mark.parametrize("pii, message", [
    ({"actions": {"DATE_TIME": "tag"}}, "not enabled"),
    ({"actions": {"EMAIL_ADDRESS": "shred"}}, "actions.EMAIL_ADDRESS"),
    ({"thresholds": {"PERSON": 1.5}}, "between 0 and 1"),
    ({"entities": ["email"]}, "UPPER_SNAKE_CASE"),
    ({"recognizers": [{"name": "emp", "entity": "EMPLOYEE_ID", "patterns": [{"name": "p", "regex": "EMP-(", "score": 0.6}]}]},
     "not a valid regular expression"),
    ({"allow_list": ["("], "allow_list_match": "regex"}, "allow_list"),
    ({"chunk_chars": 2000, "chunk_overlap": 1000}, "half of chunk_chars"),
    ({"model_name": "x"}, "model_name"),
    ({"languages": {"French": "fr_core_news_sm"}}, "ISO 639-1"),
    ({"languages": {"unknown": "fr_core_news_sm"}}, "ISO 639-1"),
    ({"languages": {"fr": ""}}, "no model given for fr"),
    ({"model": "a_model", "languages": {"en": "b_model"}}, "two models for the default language"),
    ({"fallback": "english"}, "fallback"),
    ({"ner_precision": "int4"}, "ner_precision"),
    ({"ner_precision": "int8", "ner_decoder": "spacy"}, "needs ner_decoder: batched"),
])
def test_an_invalid_pii_section_is_a_config_error_naming_the_field(tmp_path, pii, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(tmp_path, pii)


def test_custom_recognizers_and_deny_lists_add_entity_types_that_actions_may_name(tmp_path):
    cfg = _cfg(tmp_path, {
        "recognizers": [{"name": "employee-id", "entity": "EMPLOYEE_ID", "context": ["employee"],
                         "patterns": [{"name": "emp", "regex": r"\bEMP-\d{6}\b", "score": 0.6}]}],
        "deny_lists": {"PROJECT_CODENAME": ["Bluebird"]},
        "actions": {"EMPLOYEE_ID": "mask", "PROJECT_CODENAME": "drop"},
    }).pii
    assert cfg.all_entities()[-2:] == ("EMPLOYEE_ID", "PROJECT_CODENAME")
    assert cfg.action_for("EMPLOYEE_ID") == "mask"


def test_languages_always_hold_the_default_language_s_model(tmp_path):
    plain = _cfg(tmp_path, {}).pii
    assert plain.languages == {"en": plain.model} and not plain.route_by_language
    assert plain.routed_models() == {"en": plain.model}
    routed = _cfg(tmp_path, {"route_by_language": True, "languages": {"fr": "fr_core_news_sm"}}).pii
    assert routed.languages == {"en": plain.model, "fr": "fr_core_news_sm"}
    assert routed.routed_models() == routed.languages
    # the default model may be named in either place; a dumped config reads back the same
    given = _cfg(tmp_path, {"languages": {"en": "my_model", "fr": "fr_core_news_sm"}}).pii
    assert given.model == "my_model" and given.languages["en"] == "my_model"
    assert type(given).model_validate(given.model_dump(mode="json")) == given


def test_the_ner_runs_in_float32_unless_int8_is_asked_for(tmp_path):
    assert _cfg(tmp_path, {}).pii.ner_precision == "float32"
    assert _cfg(tmp_path, {"ner_precision": "int8"}).pii.ner_precision == "int8"
