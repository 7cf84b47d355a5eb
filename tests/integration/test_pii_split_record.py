"""One record larger than a PII task is detected by several part tasks (a share of the engine's
chunks each, in rounds) and decided from their spans: the run publishes the same bytes, decisions,
spans and manifest as the same run with the record in one task."""

from __future__ import annotations

import hashlib
import json
import random

import polars as pl

from pipeline.executor import run_local
from tests.conftest import build_config

NAMES = ["Ann Lee", "Omar Haddad", "Mei Chen", "John Clark", "Hiro Sato", "Lena Berg", "Raj Patel", "Eva Novak"]
CITIES = ["Detroit", "Lyon", "Osaka", "Lagos", "Quito", "Perth"]
PLAIN = ["The committee talked about the budget for a long time and nothing was decided.",
         "It rained all week, and the river rose over the old stone bridge.",
         "the report was late again, as everyone had expected it to be."]
# Small chunks and tasks, so a few hundred KB of text make a record of many chunks and parts.
PII = {"chunk_chars": 2_000, "chunk_overlap": 200}
TASK_BYTES = 20_000


def prose(chars: int, seed: int) -> str:
    """Sentences with names, places, e-mail addresses and phone numbers (some next to a name, which
    the second pass looks at again), up to `chars` characters."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < chars:
        a, b = rng.sample(NAMES, 2)
        k = rng.randrange(6)
        if k == 0:
            s = f"{a} met {b} in {rng.choice(CITIES)} last spring."
        elif k == 1:
            s = f"Questions to {a} at {a.split()[0].lower()}{rng.randrange(99)}@example.com please."
        elif k == 2:
            s = f"Call {b} on 555-01{rng.randrange(10, 99)} after lunch."
        else:
            s = rng.choice(PLAIN)
        out.append(s)
        n += len(s) + 1
    return " ".join(out)


def _write(tmp_path, rows: list[dict]) -> list[dict]:
    d = tmp_path / "in"
    d.mkdir(exist_ok=True)
    (d / "one.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [{"name": "t", "kind": "jsonl", "paths": [str(d)], "id_field": "id"}]


def _outputs(out) -> dict:
    """Digests of the shards and the ledger, the decisions, the spans of every task (as one table,
    by unit and row) and the manifest without its times and paths."""
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted([*(out / "shards").glob("*.parquet"), *(out / "ledger").glob("*.parquet")])}
    m = json.loads((out / "manifest.json").read_text())
    for k in ("seconds", "cpu_seconds"):   # timings
        (m["pii"]["residual_scan"] or {}).pop(k, None)
    return {"digests": digest, **{k: m[k] for k in ("pii", "stages", "conservation", "ledger")},
            "outputs": [(s["path"].rsplit("/", 1)[-1], s["sha256"], s["rows"]) for s in m["outputs"]["shards"]]}


def _run(tmp_path, name: str, sources: list[dict], pii: dict, monkeypatch, split: bool, **sections):
    """(manifest, outputs) of a run; `split`: with small tasks, and the spans each part wrote per
    round counted into `WRITTEN` (round -> spans)."""
    import pipeline.run.tasks as tasks
    from pipeline.pii.parts import RecordParts

    if split:
        monkeypatch.setattr(tasks, "TASK_MIN_BYTES", TASK_BYTES)
        monkeypatch.setattr(tasks, "TASK_MAX_BYTES", TASK_BYTES)
        write = RecordParts.write
        WRITTEN.clear()

        def counted(self, task, round_, spans):
            WRITTEN[round_] = WRITTEN.get(round_, 0) + sum(map(len, spans))
            return write(self, task, round_, spans)

        monkeypatch.setattr(RecordParts, "write", counted)
    else:
        monkeypatch.undo()
    manifest = run_local(build_config(tmp_path / name, sources, pii={**PII, **pii}, runner={"max_workers": 2},
                                      **sections))
    return manifest, _outputs(tmp_path / name)


WRITTEN: dict[int, int] = {}


def _same_as_one_task(tmp_path, rows, pii, monkeypatch, **sections):
    """Run once with the tasks of today (the record in one task), once with small tasks (the record
    split); assert the outputs are equal; return the split run's manifest."""
    sources = _write(tmp_path, rows)
    whole, a = _run(tmp_path, "whole", sources, pii, monkeypatch, False, **sections)
    split, b = _run(tmp_path, "split", sources, pii, monkeypatch, True, **sections)
    assert a == b
    phases = {p["name"]: p for p in split["timings"]["phases"]}
    assert phases["pii-join"]["items"] >= 1 and phases["pii-round2"]["items"] > 2   # the record was split
    assert phases["pii-round2"]["items"] % 2 == 0            # parts of a record: a multiple of the 2 workers
    assert "pii-join" not in {p["name"] for p in whole["timings"]["phases"]}   # nothing split: not listed
    return split


def test_one_huge_record_split_into_parts_gives_what_one_task_gives(tmp_path, monkeypatch):
    rows = [{"id": "huge", "text": prose(120_000, 1)}]
    m = _same_as_one_task(tmp_path, rows, {"second_pass": True, "residual_scan": {"sample_fraction": 1.0}},
                          monkeypatch)
    assert set(WRITTEN) == {1, 2, 3} and WRITTEN[1] > 200 and WRITTEN[2] > 0   # detection, second pass, residual
    assert m["pii"]["records_by_action"] == {"redacted": 1}
    assert m["pii"]["by_entity"]["PERSON"] > 100 and m["pii"]["by_entity"]["EMAIL_ADDRESS"] > 100
    assert m["pii"]["residual_scan"]["records"] == 1 and m["pii"]["residual_scan"]["population"] == 1


def test_a_huge_record_among_small_ones_with_a_record_rule_gives_what_one_task_gives(tmp_path, monkeypatch):
    rows = [{"id": f"s{i}", "text": prose(300 + 40 * i, 10 + i)} for i in range(30)]
    rows.insert(11, {"id": "huge", "text": prose(90_000, 2)})
    rows.insert(20, {"id": "huge2", "text": prose(45_000, 3)})
    m = _same_as_one_task(tmp_path, rows, {"second_pass": True, "record_rule": {"max_spans": 1200},
                                           "residual_scan": {"sample_fraction": 1.0}}, monkeypatch)
    ledger = pl.read_parquet(str(tmp_path / "split" / "ledger" / "*.parquet"))
    decided = dict(zip(ledger["record_id"], ledger["decision"]))
    assert decided["huge"] == "dropped_pii" and decided["huge2"] == "kept_redacted"   # the rule saw every span
    assert m["pii"]["residual_scan"]["records"] == 31                               # 30 small + huge2


def test_a_split_record_with_two_text_fields_and_the_whole_text_second_pass(tmp_path, monkeypatch):
    rows = [{"id": "huge", "text": prose(60_000, 4), "notes": prose(50_000, 5)}, {"id": "small", "text": prose(500, 6)}]
    m = _same_as_one_task(tmp_path, rows, {"fields": ["notes"], "second_pass": True, "second_pass_window": None,
                                           "record_rule": {"max_redacted_fraction": 0.5},
                                           "residual_scan": {"sample_fraction": 1.0}}, monkeypatch)
    assert m["pii"]["records_by_action"] == {"redacted": 2}


def test_a_part_whose_detection_fails_leaves_the_record_to_one_task(tmp_path, monkeypatch):
    """A failure in a part's chunks is not a failed run: the join detects the record whole, which
    then gives what one task gives (here: the same spans, the flaky failure gone)."""
    from pipeline.pii.engine import PiiEngine

    real = PiiEngine.detect_chunks
    calls = []

    def flaky(self, texts, first, last):
        calls.append(first)
        if len(calls) == 2:
            raise RuntimeError("a transient fault")
        return real(self, texts, first, last)

    rows = [{"id": "huge", "text": prose(80_000, 7)}]
    sources = _write(tmp_path, rows)
    _, a = _run(tmp_path, "whole", sources, {"second_pass": True}, monkeypatch, False)
    monkeypatch.setattr(PiiEngine, "detect_chunks", flaky)
    _, b = _run(tmp_path, "split", sources, {"second_pass": True}, monkeypatch, True)
    assert a == b and len(calls) > 2


def test_split_records_routed_by_language_give_what_one_task_gives(tmp_path, monkeypatch):
    """Routing: a huge French record (the French model), a huge German one (the pattern
    recognizers only) and a small English one."""
    from tests.integration.test_pii_language import FRENCH, GERMAN, ROUTED

    def repeat(text, names, n):
        return " ".join(text.replace("Marie Dubois", names[i % len(names)]).replace("Hans Becker", names[i % len(names)])
                        for i in range(n))

    rows = [{"id": "fr", "text": repeat(FRENCH, ["Claire Lefèvre", "Paul Martin", "Inès Roux"], 200)},
            {"id": "de", "text": repeat(GERMAN, ["Jürgen Schulz", "Anna Weber"], 150)},
            {"id": "en", "text": prose(400, 8)}]
    m = _same_as_one_task(tmp_path, rows, {**ROUTED, "second_pass": True}, monkeypatch)
    assert m["pii"]["records_by_coverage"] == {"full": 2, "patterns_only": 1}
    assert m["pii"]["residual_scan"]["records"] == 3
