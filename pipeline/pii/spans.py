"""A detected entity as offsets: what detection returns and redaction consumes (never the value)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """One detected entity: character offsets into the text (end exclusive) and a score."""

    entity: str
    start: int
    end: int
    score: float
