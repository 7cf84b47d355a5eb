"""Regenerate the synthetic sample corpus (seeded; every person, address and e-mail is invented).

    python data_samples/make_samples.py

Writes web/part-0.jsonl, web/part-1.jsonl.gz, web/part-2.jsonl, forum.csv and notes/*.txt next to this file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(20261122)

FIRST = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena"]
LAST = ["Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Sato", "Tanaka", "Ueda", "Varga", "Weber", "Xu", "Yilmaz"]
TOPICS = ["solar panels", "sourdough bread", "trail running", "home networking", "watercolour painting",
          "urban beekeeping", "mechanical keyboards", "container gardening", "film photography", "bicycle repair"]
OPENERS = ["A short guide to", "Notes on", "What I learned about", "Common mistakes with", "Getting started with"]
SENTENCES = [
    "The first thing to check is whether the basics are in place before buying anything new.",
    "Most beginners spend too much on equipment and too little time practising.",
    "A good routine matters more than any single tool or trick.",
    "Write down what you tried, what happened, and what you would change next time.",
    "Local clubs and libraries are often the cheapest way to learn from experienced people.",
    "Small, regular improvements add up faster than occasional big efforts.",
    "Keep a spare of every part that wears out, because it always fails at a bad moment.",
    "Measure twice and change one variable at a time, or you will never know what helped.",
    "The manual is boring but it answers most of the questions people ask online.",
    "Patience is the cheapest upgrade you can make.",
]


def person() -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@example.com"


def article(i: int) -> str:
    topic = rng.choice(TOPICS)
    body = " ".join(rng.sample(SENTENCES, k=rng.randint(3, 6)))
    name, email = person()
    return f"{rng.choice(OPENERS)} {topic} (#{i}). {body} Questions to {name} at {email}."


def write_jsonl() -> None:
    (HERE / "web").mkdir(exist_ok=True)
    records = [{"id": f"web-{i:04d}", "text": article(i), "url": f"https://blog.example.com/post/{i}", "lang": "en"}
               for i in range(200)]
    lines = [json.dumps(r) for r in records]
    # Exact copies under new ids, and copies that differ only in whitespace.
    for j, src in enumerate(rng.sample(range(200), 20)):
        lines.append(json.dumps({**records[src], "id": f"web-copy-{j:02d}", "url": f"https://mirror.example.com/{src}"}))
    for j, src in enumerate(rng.sample(range(200), 8)):
        lines.append(json.dumps({**records[src], "id": f"web-ws-{j:02d}", "text": "  " + records[src]["text"].replace(". ", ".  \n")}))
    lines.insert(50, "")                                       # blank line: not a record
    lines.insert(60, '{"id": "web-broken-1", "text": "unterminated')  # malformed JSON
    lines.insert(70, '{"id": "web-notext", "body": "no text field here"}')
    lines.insert(80, '{"id": "web-num", "text": 12345}')
    lines.insert(90, '{"id": "web-empty", "text": "   "}')
    data = ("\n".join(lines) + "\n").encode()
    bad_utf8 = b'{"id": "web-latin1", "text": "caf\xe9 au lait"}\n'
    (HERE / "web" / "part-0.jsonl").write_bytes(data + bad_utf8)

    more = [{"id": f"web-{i:04d}", "text": article(i), "url": f"https://news.example.com/{i}", "lang": "en"}
            for i in range(200, 300)]
    more += [{**records[k], "id": f"web-late-{k:04d}"} for k in range(0, 200, 40)]  # copies of part-0
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(("\n".join(json.dumps(r) for r in more) + "\n").encode())
    (HERE / "web" / "part-1.jsonl.gz").write_bytes(buf.getvalue())


def long_article(i: int) -> str:
    topic = rng.choice(TOPICS)
    body = " ".join(rng.choice(SENTENCES) + f" ({topic}, part {k})" for k in range(14))
    return f"Field notes #{i} on {topic}. {body}"


def write_near_copies() -> None:
    """Longer articles and edited copies of them: the near-duplicates the demo removes."""
    originals = [{"id": f"long-{i:03d}", "text": long_article(i), "url": f"https://wiki.example.com/{i}", "lang": "en"}
                 for i in range(20)]
    edits = []
    for j, k in enumerate(range(0, 20, 2)):
        text = originals[k]["text"]
        words = text.split()
        kind = j % 4
        if kind == 0:     # one word swapped
            words[len(words) // 2] = "indeed"
            new = " ".join(words)
        elif kind == 1:   # boilerplate footer added
            new = text + " Subscribe to our newsletter for more posts like this one."
        elif kind == 2:   # case and punctuation changed
            new = text.upper().replace(".", "!")
        else:             # the last sentence cut off
            new = text.rsplit(".", 2)[0] + "."
        edits.append({"id": f"long-{k:03d}-edit", "text": new, "url": f"https://copy.example.com/{k}", "lang": "en"})
    lines = [json.dumps(r) for r in originals + edits]
    (HERE / "web" / "part-2.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv() -> None:
    rows = [[f"forum-{i:03d}", f"Re: {rng.choice(TOPICS)}", article(1000 + i)] for i in range(80)]
    rows.insert(10, rows[3][:1] + ["Re: duplicate"] + rows[3][2:])       # same text as row 3
    with open(HERE / "forum.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "text"])
        w.writerows(rows[:40])
        f.write("forum-bad,only two fields\n")                           # wrong field count
        w.writerows(rows[40:])


def write_notes() -> None:
    d = HERE / "notes"
    d.mkdir(exist_ok=True)
    for i in range(10):
        (d / f"note-{i:02d}.txt").write_text(article(2000 + i) + "\n", encoding="utf-8")
    (d / "note-10.txt").write_text((d / "note-03.txt").read_text(encoding="utf-8"), encoding="utf-8")


PLANTED_TEXT = ("PLANTED SAMPLE RECORD: this benign sentence stands in for known prohibited material; "
                "its sha256 is on the sample hash list, so the demo quarantines it.")


def write_planted_and_images() -> None:
    """Benign generated images (smooth colour fields), a planted text record, and a sample hash
    list naming one image's PDQ hash and the planted text's sha256: the demo shows quarantine."""
    import hashlib

    import numpy as np
    from PIL import Image

    d = HERE / "images"
    d.mkdir(exist_ok=True)

    def field(seed: int) -> Image.Image:
        r = np.random.default_rng(seed)
        return Image.fromarray((r.random((6, 6, 3)) * 255).astype(np.uint8)).resize((192, 192), Image.BICUBIC)

    for i in range(6):
        field(100 + i).save(d / f"field-{i}.png", optimize=False)
    field(101).resize((180, 180), Image.BICUBIC).save(d / "field-1-small.jpg", quality=92)  # near copy of field-1
    (d / "field-2-copy.png").write_bytes((d / "field-2.png").read_bytes())                # exact copy
    (d / "not-an-image.png").write_bytes(b"this file only pretends to be a PNG")
    with open(HERE / "web" / "part-0.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "web-planted", "text": PLANTED_TEXT, "url": "https://blog.example.com/planted", "lang": "en"}) + "\n")
    import sys

    sys.path.insert(0, str(HERE.parent))
    from pipeline.safety.imagehash_stage import hash_image

    pdq = hash_image((d / "field-4.png").read_bytes()).pdq
    (HERE / "hashlists").mkdir(exist_ok=True)
    (HERE / "hashlists" / "sample-list.csv").write_text(
        "hash,type,entry_id,list\n"
        f"{hashlib.sha256(PLANTED_TEXT.encode()).hexdigest()},sha256,SAMPLE-T1,sample\n"
        f"{pdq},pdq,SAMPLE-I1,sample\n"
    )


if __name__ == "__main__":
    write_jsonl()
    write_near_copies()
    write_csv()
    write_notes()
    write_planted_and_images()
