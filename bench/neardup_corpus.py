"""A seeded corpus with injected near duplicates and its ground truth, for near-dup benchmarks.

    python bench/neardup_corpus.py --docs 100000 --out /tmp/neardup-100k.jsonl

Originals are new documents composed of random sentences from the public-domain books in
../shared/data/dedup/nltk_gutenberg_throughput/ (or $HYGIENE_SHARED/data/dedup/...). A share of
the documents are copies of an original with one kind of edit:

    exact        an identical copy
    format       whitespace, case and punctuation changed
    boilerplate  a header or footer line added
    insert       one sentence inserted in the middle
    delete       one sentence deleted
    truncate     the last ~8% of the text cut off
    swap         a few pairs of adjacent words swapped

Each line is {"id", "text", "cluster", "edit"}: `cluster` is the id of the original a copy was
made from (an original's own id), so two documents are true duplicates when their clusters match.

"Sentences" longer than 60 words or 400 characters are left out (--max-sentence-words,
--max-sentence-chars; 0 turns a limit off). The books hold 1-6 KB runs of verse and dialogue
without a full stop; drawn twice, such a run made unrelated originals near-identical (at 20k
documents, 72 pairs of originals had word-5-gram Jaccard >= 0.7, up to 1.0), so the labels were
wrong. With the limits, the most similar pair of originals at 20k has Jaccard 0.32 and no two
documents of different clusters reach 0.34. The seed drives the same sequence of draws either
way: with both limits at 0 the output is byte-identical to the corpus of earlier versions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path

SHARED = Path(os.environ.get("HYGIENE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
GUTENBERG = SHARED / "data" / "dedup" / "nltk_gutenberg_throughput"
EDITS = ["exact", "format", "boilerplate", "insert", "delete", "truncate", "swap"]
MAX_SENTENCE_WORDS, MAX_SENTENCE_CHARS = 60, 400
BOILERPLATE = [
    "Share this article with your friends and colleagues.",
    "Subscribe to our newsletter for weekly updates.",
    "All rights reserved. Reproduced with permission.",
    "Click here to read more stories like this one.",
]


def load_sentences(min_words: int = 6, max_words: int = 0, max_chars: int = 0) -> list[str]:
    """Sentences of the Gutenberg selection, with the space-tokenised punctuation re-attached;
    with `max_words` / `max_chars` (0: no limit), longer "sentences" are left out."""
    out: list[str] = []
    for path in sorted(GUTENBERG.glob("*.txt")):
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8", errors="replace"))
        text = re.sub(r" ([,.;:!?'])", r"\1", text)
        for s in re.split(r"(?<=[.!?]) ", text):
            words = len(s.split())
            if words >= min_words and (not max_words or words <= max_words) and (not max_chars or len(s.strip()) <= max_chars):
                out.append(s.strip())
    if not out:
        raise SystemExit(f"no sentences under {GUTENBERG}: set HYGIENE_SHARED to the folder holding data/dedup/")
    return out


def original(rng: random.Random, sentences: list[str], target_chars: int) -> list[str]:
    parts, size = [], 0
    while size < target_chars:
        s = rng.choice(sentences)
        parts.append(s)
        size += len(s) + 1
    return parts


def edit(rng: random.Random, parts: list[str], kind: str, sentences: list[str]) -> str:
    text = " ".join(parts)
    if kind == "exact":
        return text
    if kind == "format":
        t = re.sub(r" ", lambda _m: rng.choice([" ", "  ", "\n", " \t"]) if rng.random() < 0.2 else " ", text)
        t = t.lower() if rng.random() < 0.5 else t.upper()
        return t.replace(",", "") if rng.random() < 0.5 else t.replace(".", "!")
    if kind == "boilerplate":
        b = rng.choice(BOILERPLATE)
        return f"{b} {text}" if rng.random() < 0.5 else f"{text} {b}"
    if kind == "insert":
        k = rng.randrange(1, max(2, len(parts)))
        return " ".join(parts[:k] + [rng.choice(sentences)] + parts[k:])
    if kind == "delete":
        if len(parts) < 3:
            return text
        k = rng.randrange(1, len(parts) - 1)
        return " ".join(parts[:k] + parts[k + 1:])
    if kind == "truncate":
        return text[: int(len(text) * 0.92)].rsplit(" ", 1)[0]
    if kind == "swap":
        words = text.split(" ")
        for _ in range(3):
            i = rng.randrange(0, max(1, len(words) - 1))
            words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)
    raise ValueError(kind)


def generate(n_docs: int, out: Path, seed: int = 20261122, dup_share: float = 0.3, target_chars: int = 1200,
             max_sentence_words: int = MAX_SENTENCE_WORDS, max_sentence_chars: int = MAX_SENTENCE_CHARS) -> dict:
    """Write the corpus; return counts by edit kind."""
    rng = random.Random(seed)
    sentences = load_sentences(max_words=max_sentence_words, max_chars=max_sentence_chars)
    originals: list[tuple[str, list[str]]] = []
    counts = {k: 0 for k in ["original", *EDITS]}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n_docs):
            doc_id = f"d{i:08d}"
            if originals and rng.random() < dup_share:
                src_id, parts = rng.choice(originals)
                kind = rng.choice(EDITS)
                rec = {"id": doc_id, "text": edit(rng, parts, kind, sentences), "cluster": src_id, "edit": kind}
            else:
                parts = original(rng, sentences, rng.randint(target_chars // 2, target_chars * 3 // 2))
                originals.append((doc_id, parts))
                kind = "original"
                rec = {"id": doc_id, "text": " ".join(parts), "cluster": doc_id, "edit": kind}
            counts[kind] += 1
            f.write(json.dumps(rec) + "\n")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--dup-share", type=float, default=0.3)
    ap.add_argument("--max-sentence-words", type=int, default=MAX_SENTENCE_WORDS, help="0: no limit")
    ap.add_argument("--max-sentence-chars", type=int, default=MAX_SENTENCE_CHARS, help="0: no limit")
    args = ap.parse_args()
    print(json.dumps(generate(args.docs, args.out, args.seed, args.dup_share,
                              max_sentence_words=args.max_sentence_words, max_sentence_chars=args.max_sentence_chars)))


if __name__ == "__main__":
    main()
