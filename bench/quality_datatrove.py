"""Run datatrove 0.10.1's quality filters on a JSONL file; run with the peer's Python (it needs datatrove,
not this project): `/tmp/peers-quality/bin/python bench/quality_datatrove.py IN.jsonl OUT.json [--repeats N]`.

Writes, per filter: keep (bool), the reason datatrove gives, the C4 output text of kept documents,
and the CPU seconds of this process for each repeat (filter calls only; CPU time, not wall time, because the machine is shared).
A filter that raises on a document is recorded with the exception class (datatrove crashes there).
"""

from __future__ import annotations

import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)


def run(filt, texts: list[str]) -> tuple[list, list, list, float]:
    keep, reason, out = [], [], []
    t0 = time.process_time()
    for i, t in enumerate(texts):
        doc = Document(text=t, id=str(i))
        try:
            r = filt.filter(doc)
        except Exception as e:  # noqa: BLE001 - recorded: where datatrove itself crashes
            keep.append(None)
            reason.append(f"raised {e.__class__.__name__}")
            out.append(None)
            continue
        ok = r if isinstance(r, bool) else r[0]
        keep.append(bool(ok))
        reason.append(None if isinstance(r, bool) else r[1])
        out.append(doc.text if ok else None)
    return keep, reason, out, time.process_time() - t0


def main() -> None:
    src, dst = sys.argv[1], sys.argv[2]
    repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 1
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else None
    texts = [json.loads(line)["text"] for line in open(src, encoding="utf-8")]
    filters = {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
               "c4_quality": C4QualityFilter, "fineweb_quality": FineWebQualityFilter}
    result = {}
    # Warm up the tokenizer (spaCy load) outside the clock.
    GopherQualityFilter().filter(Document(text="warm up the tokenizer. " * 60, id="w"))
    C4QualityFilter().filter(Document(text="Warm up the sentence splitter now.\n" * 6, id="w"))
    for name, cls in filters.items():
        if only and name not in only:
            continue
        secs = []
        for _ in range(repeats):
            keep, reason, out, s = run(cls(), texts)
            secs.append(s)
        result[name] = {"keep": keep, "reason": reason, "seconds": secs,
                        "text": out if name == "c4_quality" else None}
    json.dump(result, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


if __name__ == "__main__":
    main()
