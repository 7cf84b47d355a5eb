"""Redaction: overlapping spans resolved deterministically, then one action per entity type.

Usage::

    spans = resolve(engine.detect([text])[0])
    redactor = Redactor(cfg, key=hmac_key(cfg))
    clean = redactor.apply(text, spans)          # "Mail <EMAIL_ADDRESS> today"

Actions: `tag` replaces a span with `<TYPE>`; `mask` with `mask_char` repeated to the span's
length; `hash` with `<TYPE:...>`, 16 hex digits of HMAC-SHA256(key, type NUL value), so one value
maps to one token across the corpus and nobody without the key can test a guess; `drop` drops
the record. The values themselves are never stored.

Presidio's anonymizer is not used: its hash operator is an unkeyed digest (a guessable value's
token can be recomputed by anyone), and its conflict handling does not give the union rule
below; the three string operations are a few lines here.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.pii.config import PiiConfig
from pipeline.pii.spans import Span


def resolve(spans: Sequence[Span]) -> list[Span]:
    """Merge overlapping spans into their union, labelled by the strongest member.

    The strongest is the highest score, then the longest, then the entity name (alphabetical),
    so the result does not depend on the order spans were found in. Taking the union (not just
    the winner) means no character any recognizer flagged is left in clear text.
    """
    out: list[Span] = []
    group: list[Span] = []
    end = -1
    for s in sorted(spans, key=lambda s: (s.start, s.end, s.entity)):
        if group and s.start >= end:
            out.append(_merge(group))
            group = []
        end = max(end, s.end) if group else s.end
        group.append(s)
    if group:
        out.append(_merge(group))
    return out


def _merge(group: list[Span]) -> Span:
    best = min(group, key=lambda s: (-s.score, -(s.end - s.start), s.entity))
    return Span(best.entity, min(s.start for s in group), max(s.end for s in group), best.score)


def hmac_key(cfg: PiiConfig) -> bytes | None:
    """The key of the `hash` action (None when no entity uses it); a missing key is a ConfigError."""
    uses_hash = cfg.default_action == "hash" or "hash" in cfg.actions.values()
    if not uses_hash:
        return None
    if cfg.hmac_key.file:
        try:
            key = Path(cfg.hmac_key.file).read_bytes().strip()
        except OSError as e:
            raise ConfigError(f"pii.hmac_key.file: cannot read {cfg.hmac_key.file} ({e.__class__.__name__})") from e
    else:
        key = os.environ.get(cfg.hmac_key.env, "").encode()
    if len(key) < 16:
        raise ConfigError(
            f"pii: the `hash` action needs a secret key of at least 16 bytes in ${cfg.hmac_key.env} "
            "or pii.hmac_key.file (e.g. `openssl rand -hex 32`); keep it out of the config file")
    return key


def key_id(key: bytes | None) -> str | None:
    """A public fingerprint of the HMAC key, so runs hashed with the same key can be told apart."""
    return None if key is None else hashlib.sha256(b"hygiene-pii-hmac-key-id\0" + key).hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    """What the stage decided for one record: drop (with a reason) or keep, and the counts."""

    drop_reason: str | None
    counts: dict[str, int]
    redacted_chars: int


class Redactor:
    """Applies the configured action of each span's entity type to a text."""

    def __init__(self, cfg: PiiConfig, key: bytes | None):
        self.cfg = cfg
        self.key = key

    def token(self, entity: str, value: str) -> str:
        action = self.cfg.action_for(entity)
        if action == "mask":
            return self.cfg.mask_char * len(value)
        if action == "hash":
            if self.key is None:
                raise ConfigError("pii: the `hash` action needs a key; see pii.hmac_key")
            digest = hmac.new(self.key, entity.encode() + b"\0" + value.encode(), hashlib.sha256).hexdigest()[:16]
            return f"<{entity}:{digest}>"
        return f"<{entity}>"

    def apply(self, text: str, spans: Sequence[Span]) -> str:
        """The text with every (resolved, non-overlapping) span replaced."""
        return self.apply_with_positions(text, spans)[0]

    def apply_with_positions(self, text: str, spans: Sequence[Span]) -> tuple[str, list[tuple[int, int]]]:
        """The redacted text and where each inserted token sits in it."""
        parts, where, pos, out_len = [], [], 0, 0
        for s in spans:
            keep = text[pos:s.start]
            token = self.token(s.entity, text[s.start:s.end])
            parts += (keep, token)
            out_len += len(keep)
            where.append((out_len, out_len + len(token)))
            out_len += len(token)
            pos = s.end
        parts.append(text[pos:])
        return "".join(parts), where

    def verdict(self, spans: Sequence[Span], chars: int) -> Verdict:
        """Counts per entity type and whether the record is dropped (entity action or record rule)."""
        counts: dict[str, int] = {}
        for s in spans:
            counts[s.entity] = counts.get(s.entity, 0) + 1
        redacted = sum(s.end - s.start for s in spans)
        reason = None
        dropping = sorted(e for e in counts if self.cfg.action_for(e) == "drop")
        rule = self.cfg.record_rule
        if dropping:
            reason = f"contains {', '.join(dropping)} (action: drop)"
        elif rule.max_spans is not None and len(spans) > rule.max_spans:
            reason = f"{len(spans)} PII spans, more than record_rule.max_spans={rule.max_spans}"
        elif rule.max_redacted_fraction is not None and chars and redacted / chars > rule.max_redacted_fraction:
            reason = (f"{redacted / chars:.1%} of characters are PII, more than "
                      f"record_rule.max_redacted_fraction={rule.max_redacted_fraction}")
        return Verdict(reason, dict(sorted(counts.items())), redacted)


def second_pass(detect: Callable[[list[str]], list[list[Span]]], texts: Sequence[str],
                spans: list[list[Span]], window: tuple[int, int] | None = None,
                candidate: Callable[[str], bool] | None = None) -> list[list[Span]]:
    """Detect again in the texts with their spans replaced by type tags, and add what is new.

    Replacing "Questions to Hiro Sato at hiro@example.com" by "... at <EMAIL_ADDRESS>" changes
    the context the NER model sees, and it often then finds the name it missed: the residual
    scan of the output found exactly these. Only texts with a span go round again; new spans are
    mapped back to the original offsets (a span touching a tag grows to cover the tagged value).
    `window` = (reach, margin): only the words near each tag are read again (`_detect_tagged`);
    with `candidate` (a word -> bool test, e.g. "could be part of a name"), only the tags with such
    a word within reach: elsewhere the changed context has nothing new to find.
    """
    todo = [i for i, s in enumerate(spans) if s]
    if not todo:
        return spans
    tagged, maps = [], []
    for i in todo:
        parts, where, pos, out_len = [], [], 0, 0
        for s in spans[i]:
            keep, token = texts[i][pos:s.start], f"<{s.entity}>"
            parts += (keep, token)
            out_len += len(keep)
            where.append((out_len, out_len + len(token), s.start, s.end, s.entity))
            out_len += len(token)
            pos = s.end
        parts.append(texts[i][pos:])
        tagged.append("".join(parts))
        maps.append(where)
    extra: dict[int, list[Span]] = {}
    for k, found in enumerate(_detect_tagged(detect, tagged, maps, window, candidate)):
        if not found:
            continue
        where = maps[k]
        tag_ends = [w[1] for w in where]
        value_starts = [w[2] for w in where]
        for s in found:
            a, b = _to_original(s.start, where, tag_ends, False), _to_original(s.end, where, tag_ends, True)
            j = bisect.bisect_right(value_starts, a) - 1   # the last tagged value starting at or before a
            if j >= 0 and b <= where[j][3]:
                continue  # only a tag (or part of one) again
            extra.setdefault(k, []).append(Span(s.entity, a, b, s.score))
    out = list(spans)
    for k, more in extra.items():
        i = todo[k]
        out[i] = resolve([*spans[i], *more])
    return out


def _detect_tagged(detect, tagged: list[str], maps: list, window: tuple | None,
                   candidate: Callable[[str], bool] | None = None) -> list[list[Span]]:
    """Spans in the tagged texts: whole texts, or (`window` = (reach, margin) in words) only the
    pieces around the tags, keeping the spans that touch a tag's reach.

    A tag changes what the NER model sees only near it: each token's vector depends on a few
    tokens each side (4 for spaCy's small CNN models), and the decoder's state on the tokens just
    before. So each tag's piece is the tag with `reach` words each side, read with `margin` more
    words of context each side (so the vectors inside the reach are those of the whole text);
    pieces that overlap are merged, and only spans that overlap a reach are kept."""
    if window is None:
        return detect(tagged)
    reach, margin = window[0], window[1]
    around = window[2] if len(window) > 2 else None
    pieces: list[tuple[int, int, int, list[tuple[int, int]]]] = []   # (text, lo, hi, reaches)
    for k, text in enumerate(tagged):
        starts, ends = word_bounds(text)
        n = len(starts)
        spans = []
        for ts, te, _, _, entity in maps[k]:
            if around is not None and entity not in around:
                continue
            a = int(np.searchsorted(ends, ts, "right"))                # first word ending after the tag starts
            b = max(a, int(np.searchsorted(starts, te, "left")) - 1)   # last word starting before the tag ends
            r_lo, r_hi = max(0, a - reach), min(n - 1, b + reach)
            if candidate is not None and not any(candidate(text[starts[w]:ends[w]])
                                                 for w in range(r_lo, r_hi + 1) if not a <= w <= b):
                continue
            o_lo, o_hi = max(0, r_lo - margin), min(n - 1, r_hi + margin)
            spans.append((int(starts[o_lo]), int(ends[o_hi]), int(starts[r_lo]), int(ends[r_hi])))
        spans.sort()
        for lo, hi, rlo, rhi in spans:
            if pieces and pieces[-1][0] == k and lo <= pieces[-1][2]:
                _, plo, phi, reaches = pieces[-1]
                pieces[-1] = (k, plo, max(phi, hi), [*reaches, (rlo, rhi)])
            else:
                pieces.append((k, lo, hi, [(rlo, rhi)]))
    out: list[list[Span]] = [[] for _ in tagged]
    found = detect([tagged[k][lo:hi] for k, lo, hi, _ in pieces]) if pieces else []
    for (k, lo, _hi, reaches), spans in zip(pieces, found):
        for s in spans:
            a, b = s.start + lo, s.end + lo
            if any(a < rhi and rlo < b for rlo, rhi in reaches):
                out[k].append(Span(s.entity, a, b, s.score))
    return out


# Every character `str.isspace` (and the `\s` of `re`) calls white space: none lies above U+3000.
_SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def word_bounds(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive) of the words of a text: the runs of characters other than white
    space that `re.finditer(r"\\S+")` finds, as two arrays (a huge record has millions of words:
    arrays take 16 bytes a word, a list of (start, end) tuples about 110)."""
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    space = np.concatenate(([True], np.isin(codes, _SPACE_CODES), [True]))
    edges = np.flatnonzero(space[1:] != space[:-1])   # alternately a word's start and its end
    return edges[0::2], edges[1::2]


def _to_original(pos: int, where: list[tuple[int, int, int, int, str]], tag_ends: list[int], is_end: bool) -> int:
    """Map an offset in the tagged text back to the original text: inside a tag, to its value's
    start (or end, for an end offset); elsewhere shifted by the tags before it (`where` in text
    order, `tag_ends` its tags' ends; a binary search, as a huge record holds 10^5 tags)."""
    k = bisect.bisect_left(tag_ends, pos) if is_end else bisect.bisect_right(tag_ends, pos)
    if k < len(where) and (where[k][0] < pos if is_end else where[k][0] <= pos):
        return where[k][3] if is_end else where[k][2]
    return pos + (where[k - 1][3] - where[k - 1][1] if k else 0)
