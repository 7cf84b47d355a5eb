"""PII detection routed by language: each record goes to the engine of its language's model.

With `pii.route_by_language`, a record's language is identified (CLD2 on a bounded sample of its
text, `pipeline.lang.detect`, tens of MB/s: noise beside NER) and the record is scanned by the
PII engine of that language (`pii.languages`: code -> spaCy model). A language without a model
gets the patterns-only engine (`pii.fallback: patterns`): e-mail, phone, card, IBAN, IP, crypto
and the like are still found, names and places are not searched, and the record's route says so
(`coverage`), so the ledger and the manifest show the gap. `unknown` (no letters, a script the
detector does not know, a guess below `route_min_confidence`) goes to the default language's
model, as every record does without routing.

Engines are built and loaded on first use, one per language per process: a run without a French
record never loads the French model.

Usage::

    router = PiiRouter(PiiConfig(route_by_language=True, languages={"fr": "fr_core_news_sm"}))
    routes = router.routes(["Écrivez à Marie Dubois", "Schreiben Sie an Hans"])
    # [Route("fr", "fr"), Route("de", "patterns")]; routes[1].coverage == "patterns_only"
    spans = router.detect_for_redaction(texts, [r.engine for r in routes])
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Sequence

from pipeline.lang.detect import UNKNOWN, detect_languages
from pipeline.pii.config import PATTERNS, PiiConfig
from pipeline.pii.engine import PiiEngine
from pipeline.pii.spans import Span

FULL = "full"
PATTERNS_ONLY = "patterns_only"


@dataclass(frozen=True)
class Route:
    """Where one record goes: its language (as detected, or `unknown`) and the engine's key (a
    language code of `pii.languages`, or `patterns`)."""

    language: str
    engine: str

    @property
    def coverage(self) -> str:
        """`full` when an NER model searched names and places; `patterns_only` when not."""
        return PATTERNS_ONLY if self.engine == PATTERNS else FULL


class PiiRouter:
    """One PiiEngine per language (and a patterns-only one), each loaded on first use."""

    def __init__(self, cfg: PiiConfig):
        self.cfg = cfg
        self._engines: dict[str, PiiEngine] = {}
        self._lock = threading.Lock()

    def engine(self, key: str) -> PiiEngine:
        """The set-up engine for a language code of `pii.languages`, or `patterns`."""
        with self._lock:
            if key not in self._engines:
                self._engines[key] = PiiEngine(self.cfg, key).setup()
            return self._engines[key]

    def route(self, language: str, confidence: float) -> Route:
        """The route of one detection (see the module doc)."""
        if language == UNKNOWN or confidence < self.cfg.route_min_confidence:
            return Route(UNKNOWN, self.cfg.language)
        if language in self.cfg.languages:
            return Route(language, language)
        return Route(language, PATTERNS)

    def routes(self, texts: Sequence[str | None]) -> list[Route]:
        """The route of each text, from its language."""
        return [self.route(code, conf) for code, conf in detect_languages(texts)]

    def _grouped(self, method: str, texts: Sequence[str], keys: Sequence[str],
                 detect: Callable | None = None) -> list[list[Span]]:
        """Each engine's texts in one call (their order kept), the results put back in place;
        `detect` answers the detection calls instead of the engine's own (`PiiEngine.detect_for_redaction`)."""
        if len(texts) != len(keys):
            raise ValueError(f"{len(texts)} texts but {len(keys)} engine keys")
        groups: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        out: list[list[Span]] = [[] for _ in texts]
        for key in sorted(groups):   # a stable engine order: loads and calls do not depend on the batch
            idx = groups[key]
            part = [texts[i] for i in idx]
            if detect is None:
                found = getattr(self.engine(key), method)(part)
            elif method == "detect":
                found = detect(part)
            else:
                found = self.engine(key).detect_for_redaction(part, detect)
            for i, spans in zip(idx, found):
                out[i] = spans
        return out

    def detect(self, texts: Sequence[str], keys: Sequence[str], detect: Callable | None = None) -> list[list[Span]]:
        """`PiiEngine.detect` of each text by the engine its key names."""
        return self._grouped("detect", texts, keys, detect)

    def detect_for_redaction(self, texts: Sequence[str], keys: Sequence[str],
                             detect: Callable | None = None) -> list[list[Span]]:
        """`PiiEngine.detect_for_redaction` of each text by the engine its key names."""
        return self._grouped("detect_for_redaction", texts, keys, detect)

    def describe(self) -> dict:
        """The routing for the manifest: the default engine in full; each other language's model
        from its metadata and the fallback's coverage, worked out without loading a model (the
        manifest does not depend on which engines a process happened to load)."""
        from pipeline.pii.engine import model_info, unsearched_entities

        default = self.engine(self.cfg.language).describe()
        languages = {}
        for code, model in sorted(self.cfg.languages.items()):
            info = default["model"] if code == self.cfg.language else model_info(model, f"pii.languages.{code}")
            entry = {"model": info, "coverage": FULL}
            missing = unsearched_entities(self.cfg, code)
            if missing:
                entry["not_searched"] = missing
            languages[code] = entry
        return {**default, "route_by_language": True, "route_min_confidence": self.cfg.route_min_confidence,
                "languages": languages, "fallback": self.cfg.fallback,
                "fallback_not_searched": unsearched_entities(self.cfg, PATTERNS)}
