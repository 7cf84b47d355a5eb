"""A user's term list as one compiled regular expression: whole-word, case-insensitive, Unicode-aware counts.

Matching is on normalised text: NFKC (so full-width and compatibility forms match their plain
letters) then `str.casefold` (full Unicode case folding: "STRASSE" matches "straße"), with the
terms normalised the same way. A term matches only as a whole word: not preceded or followed by a
Unicode word character (`\\w`: letters, digits, underscore in any script). Inside a multi-word
term any run of whitespace matches any run of whitespace. Matches do not overlap; at one position
the longest term wins ("red fox" over "red").

The terms are compiled into one pattern shaped as a trie (terms sharing a prefix share its
branch), so the regex engine follows one path per position instead of trying every term:
with 1,000 terms it is about as fast as with 10 (bench/adult_content.py measures it).

Only counts leave this module. A term's *id* (`term_id`) is the first 10 hex digits of the
sha256 of its normalised form: stable when the list is edited or reordered, so the ledger can name
which terms matched without writing the terms themselves (a steward holding the list maps ids
back with `TermList.ids()`). It hides the word from a casual reader of the ledger, not from
someone who guesses it: the ledger is not where a list's confidentiality is defended.

Usage::

    terms = TermList.from_file("terms.txt")          # one term per line; '#' starts a comment line
    counts = terms.count("Zorblax and ZORBLAX, quuxfoo")   # {'zorblax': 2, 'quuxfoo': 1}
    terms.ids()                                      # {'zorblax': '3c2f...', ...}
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

from pipeline.errors import ConfigError

_SPACE = re.compile(r"\s+")
# After a term's first character: the character before it is not a word character. Checked
# there rather than in front of the pattern, so that the pattern starts with the terms' first
# characters and the engine skips ahead to them (more than twice as fast as a leading look-behind).
_WORD_START = r"(?<!\w.)"


def normalize(text: str) -> str:
    """NFKC, then full case folding (the form both the terms and the text are matched in)."""
    return unicodedata.normalize("NFKC", text).casefold()


def term_id(term: str) -> str:
    """A stable id for a term that does not spell it out: 10 hex digits of sha256(normalised term)."""
    return hashlib.sha256(_SPACE.sub(" ", normalize(term).strip()).encode("utf-8")).hexdigest()[:10]


def _trie_pattern(terms: list[str]) -> str:
    """An alternation shaped as a trie over the terms' characters (longer terms first at every
    branch), with the start-of-word check `(?<!\\w.)` right after each term's first character."""
    trie: dict = {}
    for t in terms:
        node = trie
        for ch in t:
            node = node.setdefault(ch, {})
        node[""] = {}                       # end of a term

    def render(node: dict, top: bool = False) -> str:
        branches = [_char(ch) + (_WORD_START if top else "") + render(child)
                    for ch, child in sorted((k, v) for k, v in node.items() if k)]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # A term ends here and a longer one goes on: the optional part is greedy, so the longer
        # term is tried first and the shorter one is the fall-back.
        return "(?:" + body + ")?" if "" in node else body

    return render(trie, top=True)


def _char(ch: str) -> str:
    return r"\s+" if ch == " " else re.escape(ch)


class TermList:
    """A compiled, normalised term list; `count(text)` gives matches per term."""

    def __init__(self, terms: list[str], origin: str = "<terms>") -> None:
        norm: dict[str, str] = {}
        for raw in terms:
            t = _SPACE.sub(" ", normalize(raw).strip())
            if t:
                norm.setdefault(t, raw.strip())
        if not norm:
            raise ConfigError(f"{origin}: the term list is empty; give at least one term")
        self.terms = tuple(sorted(norm))
        self.origin = origin
        self.digest = hashlib.sha256("\n".join(self.terms).encode("utf-8")).hexdigest()
        self._ids = {t: term_id(t) for t in self.terms}
        self._spaced = any(" " in t for t in self.terms)     # matches may hold other whitespace runs
        # (?!\w) ends a whole word in any script; the text is already case-folded, so no IGNORECASE.
        self.pattern = re.compile(_trie_pattern(list(self.terms)) + r"(?!\w)", re.DOTALL)

    @classmethod
    def from_file(cls, path: str | Path) -> "TermList":
        """One term per line (UTF-8); blank lines and lines starting with '#' are skipped."""
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError as e:
            raise ConfigError(f"{p}: term list not found; set `terms_file` to a file of one term per line") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: cannot read the term list ({e.__class__.__name__}); it must be UTF-8 text") from e
        return cls([ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")], str(p))

    def __len__(self) -> int:
        return len(self.terms)

    def ids(self) -> dict[str, str]:
        """{normalised term: id}, for a steward who holds the list and reads ids in the ledger."""
        return dict(self._ids)

    def count(self, text: str) -> dict[str, int]:
        """Non-overlapping whole-word matches per normalised term (empty when none)."""
        counts: dict[str, int] = {}
        if not text:
            return counts
        spaced = self._spaced
        for m in self.pattern.finditer(normalize(text)):
            t = _SPACE.sub(" ", m.group(0)) if spaced else m.group(0)
            counts[t] = counts.get(t, 0) + 1
        return counts

    def count_ids(self, text: str) -> dict[str, int]:
        """`count`, keyed by term id instead of the term."""
        return {self._ids[t]: n for t, n in self.count(text).items()}
