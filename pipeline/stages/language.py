"""The language stage: records each text record's language and confidence, and keeps, drops or
only tags records by configured languages and a minimum confidence.

Evidence on every text record it sees, kept or dropped: `language` (an ISO 639-1 code, or
`unknown`), `language_confidence` (two decimals), and `language_guess` when the model's answer
was below `min_confidence` (the record then counts as `unknown`). The manifest counts records
per language, overall and per source, under `stages.language.counts`. Image records are kept
without evidence.

`unknown` (no letters, a script the model does not know, or a confidence below the minimum) is
treated as one more language: `mode: keep` drops it unless `unknown` is listed, `mode: drop`
keeps it unless `unknown` is listed.

Config (under the stage's entry in `stages:`)::

    - kind: language
      config:
        mode: keep               # tag | keep (only the listed languages) | drop (the listed ones)
        languages: [en, fr]
        min_confidence: 0.5
        backend: cld2            # cld2 | fasttext
        sample_chars: 2000       # at most this many characters of a record are scored ...
        window_chars: 500        # ... as windows of this size spread over it (majority wins)
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.core.decisions import Category, DecisionKind
from pipeline.core.stage import RecordStage, Verdicts
from pipeline.lang.detect import (BACKENDS, DEFAULT_BACKEND, DEFAULT_SAMPLE_CHARS, DEFAULT_WINDOW_CHARS, UNKNOWN,
                                  LanguageDetector, normalize_code)

DROPPED_LANGUAGE = DecisionKind("dropped_language", Category.DROPPED,
                                "its language (or `unknown`) is not among the kept languages, or is among the dropped ones")
_CODE = re.compile(r"^[a-z]{2,3}(-[a-z]{2,4})?$")


class LanguageConfig(BaseModel):
    """Options of the language stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["tag", "keep", "drop"] = "tag"
    languages: tuple[str, ...] = ()
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    backend: Literal[BACKENDS] = DEFAULT_BACKEND  # type: ignore[valid-type]
    sample_chars: int = Field(DEFAULT_SAMPLE_CHARS, ge=1, le=10_000_000)
    window_chars: int = Field(DEFAULT_WINDOW_CHARS, ge=1)

    @field_validator("languages")
    @classmethod
    def _codes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for code in v:
            c = normalize_code(code)
            if c != UNKNOWN and not _CODE.match(c):
                raise ValueError(f"'{code}' is not a language code: use ISO 639-1 codes (en, fr, zh) or 'unknown'")
            if c not in out:
                out.append(c)
        return tuple(out)

    @model_validator(mode="after")
    def _consistent(self) -> "LanguageConfig":
        if self.mode != "tag" and not self.languages:
            raise ValueError(f"mode '{self.mode}' needs `languages` (the languages to {self.mode})")
        if self.window_chars > self.sample_chars:
            raise ValueError(f"window_chars ({self.window_chars}) must not exceed sample_chars ({self.sample_chars})")
        return self


class LanguageStage(RecordStage):
    """Per record, pass 1: language identification; tags, or keeps/drops by language."""

    kind = "language"
    description = "identifies each text record's language; tags it, or keeps/drops records by language"
    decisions = (DROPPED_LANGUAGE,)
    Config = LanguageConfig

    def __init__(self, config: LanguageConfig, run_config=None) -> None:
        super().__init__(config, run_config)
        self.detector: LanguageDetector | None = None

    def setup(self) -> "LanguageStage":
        c = self.config
        self.detector = LanguageDetector(c.backend, c.sample_chars, c.window_chars)
        return self

    def summary(self) -> dict:
        """The model and the rule, for the manifest."""
        c = self.config
        info = (self.detector or LanguageDetector(c.backend, c.sample_chars, c.window_chars)).info
        return {"model": info.to_dict(), "mode": c.mode, "languages": list(c.languages),
                "min_confidence": c.min_confidence, "sample_chars": c.sample_chars, "window_chars": c.window_chars}

    def _listed(self) -> str:
        return "[" + ", ".join(self.config.languages) + "]"

    def rule(self, code: str, confidence: float) -> tuple[str, dict, str | None]:
        """(the language the rule uses, evidence, drop reason or None) for one detection."""
        c = self.config
        evidence: dict = {"language": code, "language_confidence": confidence}
        shown = f"{code} ({confidence:.2f})"
        if code == UNKNOWN:
            shown = "unknown (no language found)"
        elif confidence < c.min_confidence:
            evidence = {"language": UNKNOWN, "language_confidence": confidence, "language_guess": code}
            shown = f"unknown ({code} {confidence:.2f} < min_confidence {c.min_confidence:g})"
            code = UNKNOWN
        listed = code in c.languages
        if c.mode == "keep" and not listed:
            return code, evidence, f"language {shown} not in {self._listed()}"
        if c.mode == "drop" and listed:
            return code, evidence, f"language {shown} in dropped {self._listed()}"
        return code, evidence, None

    def process(self, table, ctx) -> Verdicts:
        n = table.num_rows
        if ctx.text_field is None:  # image records: no text to identify
            return Verdicts.keep_all(n)
        if self.detector is None:
            self.setup()
        found = self.detector.detect(table[ctx.text_field].to_pylist())
        decision: list[str | None] = [None] * n
        reason: list[str | None] = [None] * n
        evidence: dict[str, list] = {"language": [None] * n, "language_confidence": [None] * n,
                                     "language_guess": [None] * n}
        counts: dict[str, int] = {}
        for i, (code, conf) in enumerate(found):
            lang, ev, why = self.rule(code, conf)
            for k, v in ev.items():
                evidence[k][i] = v
            counts[lang] = counts.get(lang, 0) + 1
            if why is not None:
                decision[i], reason[i] = DROPPED_LANGUAGE.name, why
        if not any(v is not None for v in evidence["language_guess"]):
            del evidence["language_guess"]
        return Verdicts(decision, reason, evidence, counts)
