"""What the filters removed, shown to a steward: a deterministic sample of the records of one
decision (or reason), read back from the inputs, with their evidence, personal data masked and,
for duplicates, the survivor beside them with the differences marked.

Any decision of the run's decision table can be sampled (a user's filter's too); quarantined
records never: asking for one, by decision or by id, is refused before any input is opened, and
the refusal names the incident file.

Usage::

    s = sample_records(Path("runs/sample"), reason="dropped_near_duplicate", n=5, seed=0)
    for r in s["records"]:
        print(r["record_id"], r["content"]["text"], r.get("diff"))
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import polars as pl
import polars_hash as plh

from pipeline.audit.inspect import RecordNotFound, ledger_frame
from pipeline.audit.readback import OK, UNVERIFIED, ReadBack, Wanted, read_back
from pipeline.audit.verify import load_manifest
from pipeline.core.decisions import Category
from pipeline.core.registry import manifest_decisions
from pipeline.errors import ConfigError, PipelineError
from pipeline.safety.quarantine import INCIDENTS

DEFAULT_MAX_CHARS = 2000
# Masking a text cut at exactly max_chars could leave the first half of a value (a card number
# with spaces) undetected at the cut: mask a longer prefix, then cut the masked text.
_MASK_MARGIN = 500
# A duplicate and its survivor are compared over more than is printed (an edit near the end of a long
# near duplicate is what a steward looks for); the diff prints only the changes and their context.
DIFF_CHARS = 10_000
_EVIDENCE_COLUMNS = ("duplicate_of", "cluster_id", "similarity", "pii_action", "pii_language", "pii_coverage")


class UnknownReasonError(PipelineError):
    """No decision or reason of the run matches what was asked."""


class QuarantinedRecordError(PipelineError):
    """A quarantined record was asked for: it is never shown or read back."""


def _refusal(run_dir: Path, what: str) -> QuarantinedRecordError:
    return QuarantinedRecordError(
        f"{what}: quarantined records are never shown or read back, not even their text. The incident file "
        f"{Path(run_dir) / INCIDENTS} (owner-only) holds their hashes, list entries and locations; "
        f"`hygiene incidents {run_dir}` summarises it for the trust-and-safety team")


def _quarantine_keys(run_dir: Path) -> tuple[set[str], set[tuple[str, str, int]]]:
    """Record ids and (source, location, row) of the incident file: a second guard beside the ledger."""
    path = Path(run_dir) / INCIDENTS
    ids: set[str] = set()
    keys: set[tuple[str, str, int]] = set()
    try:
        lines = path.read_text().splitlines() if path.exists() else []
    except OSError:
        return ids, keys   # owner-only and not ours: the ledger's quarantined category still guards
    for line in lines:
        if line.strip():
            r = json.loads(line)
            ids.add(r["record_id"])
            keys.add((r["source"], r["location"], int(r["row"])))
    return ids, keys


def decision_counts(ledger: pl.LazyFrame, table) -> list[dict]:
    """Every decision of the run (its table's, in order) with its category and ledger count."""
    counts = dict(ledger.group_by("decision").agg(pl.len().alias("n")).collect().iter_rows())
    names = [k.name for k in table.kinds()] + sorted(set(counts) - {k.name for k in table.kinds()})
    return [{"decision": d, "category": table.category(d).value if d in table else None, "records": int(counts.get(d, 0))}
            for d in names]


def _select(ledger: pl.LazyFrame, table, reason: str | None, record_ids: tuple[str, ...], run_dir: Path,
            run_id: str) -> tuple[pl.LazyFrame, str]:
    """The ledger rows asked for, and how they were matched (decision, decision prefix, reason prefix, ids)."""
    quarantined = list(table.names(Category.QUARANTINED))
    if record_ids:
        rows = ledger.filter(pl.col("record_id").is_in(list(record_ids)))
        found = rows.select("record_id", "decision").collect()
        missing = sorted(set(record_ids) - set(found["record_id"].to_list()))
        if missing:
            raise RecordNotFound(f"{', '.join(repr(m) for m in missing)} not in the ledger of run {run_id}")
        q_ids, _ = _quarantine_keys(run_dir)
        bad = sorted({r for r, d in found.iter_rows() if d in quarantined} | (set(record_ids) & q_ids))
        if bad:
            raise _refusal(run_dir, f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} quarantined")
        return rows, "record id"
    if reason in table:
        if table.category(reason) == Category.QUARANTINED:
            raise _refusal(run_dir, f"'{reason}' is the quarantine decision")
        return ledger.filter(pl.col("decision") == reason), "decision"
    by_prefix = [d for d in dict.fromkeys(ledger.select("decision").unique().collect()["decision"].to_list())
                 if d.startswith(reason)]
    if by_prefix:
        if all(d in quarantined for d in by_prefix):
            raise _refusal(run_dir, f"'{reason}' matches only the quarantine decision")
        return ledger.filter(pl.col("decision").is_in(by_prefix)), "decision prefix"
    rows = ledger.filter(pl.col("reason").str.starts_with(reason))
    matched = rows.select("decision").unique().collect()["decision"].to_list()
    if matched:
        if all(d in quarantined for d in matched):
            raise _refusal(run_dir, f"'{reason}' matches only quarantined records")
        return rows, "reason prefix"
    listing = "; ".join(f"{c['decision']} ({c['category'] or 'unknown category'}) {c['records']:,}"
                        for c in decision_counts(ledger, table))
    raise UnknownReasonError(f"no decision or reason '{reason}' in run {run_id}; its decisions: {listing}. "
                             "Give a decision name, a prefix of one, or the start of a reason string")


def _pick(rows: pl.LazyFrame, n: int, seed: int) -> pl.DataFrame:
    """n rows chosen by seed: ordered by sha256(seed, id, source, location, row), whatever the ledger's part order."""
    key = pl.concat_str([pl.lit(str(seed)), pl.col("record_id"), pl.col("source"), pl.col("location"),
                         pl.col("row").cast(pl.String)], separator="\x1f")
    return (rows.with_columns(key.alias("_k")).with_columns(plh.col("_k").chash.sha2_256().alias("_k"))
            .sort("_k", "record_id", "row").head(n).drop("_k").collect())


class Masker:
    """Masks personal data in printed text as the run's PII policy would, with the PII engine.

    A `drop` action masks as a tag (the text is shown, the value is not); a `hash` action without
    its key at hand masks as a tag too. A run without a PII stage is masked with the default
    recognizers.
    """

    def __init__(self, manifest: dict):
        from pipeline.pii.config import PiiConfig
        from pipeline.pii.redact import Redactor, hmac_key

        from pydantic import ValidationError

        raw = (manifest.get("config") or {}).get("pii")
        notes = []
        try:
            cfg = PiiConfig.model_validate(raw) if raw and raw.get("enabled", True) else None
        except ValidationError:
            cfg = None   # a PII section this version cannot read: still mask, with the defaults
            notes.append("the run's PII settings are not readable by this version")
        if cfg is None:
            cfg = PiiConfig()
            self.mode = "default"
            why = notes.pop() if notes else "the run had no PII stage"
            notes.append(f"{why}: masked with the default recognizers, as <TYPE> tags")
        else:
            self.mode = "run policy"
            notes.append("masked as the run's PII policy would")
        show = {e: ("tag" if cfg.action_for(e) == "drop" else cfg.action_for(e)) for e in cfg.all_entities()}
        key = None
        if "hash" in show.values():
            try:
                key = hmac_key(cfg)
            except ConfigError:
                show = {e: ("tag" if a == "hash" else a) for e, a in show.items()}
                notes.append("the `hash` action's key is not set here: hashed types are shown as tags")
        if any(a == "drop" for a in (cfg.action_for(e) for e in cfg.all_entities())):
            notes.append("types the run drops a record for are shown as tags")
        default = "tag" if cfg.default_action == "drop" or (cfg.default_action == "hash" and key is None) else cfg.default_action
        self.config = cfg.model_copy(update={"actions": show, "default_action": default})
        self.note = "; ".join(notes)
        self._engine = None
        self._redactor = Redactor(self.config, key)

    def mask(self, texts: list[str]) -> tuple[list[str], list[int]]:
        """The masked texts and the number of spans masked in each."""
        if not texts:
            return [], []
        if self._engine is None:
            self._engine = _engine(self.config)
        if self.config.route_by_language:   # each text by its language's engine, as the run scanned it
            spans = self._engine.detect_for_redaction(texts, [r.engine for r in self._engine.routes(texts)])
        else:
            spans = self._engine.detect_for_redaction(texts)
        return [self._redactor.apply(t, s) for t, s in zip(texts, spans)], [len(s) for s in spans]


_ENGINES: dict = {}


def _engine(cfg):
    """One set-up PII engine per config in this process (loading spaCy takes seconds): `hygiene report
    --samples` masks every decision's sample with one engine."""
    from pipeline.pii.engine import PiiEngine
    from pipeline.pii.router import PiiRouter

    key = cfg.model_dump_json()
    if key not in _ENGINES:
        _ENGINES[key] = PiiRouter(cfg) if cfg.route_by_language else PiiEngine(cfg).setup()
    return _ENGINES[key]


def word_diff(a: str, b: str) -> list[list[str]]:
    """[op, text] pieces turning `a` into `b`, word by word: "=" same, "-" only in a, "+" only in b."""
    ta, tb = re.findall(r"\s+|\S+", a), re.findall(r"\s+|\S+", b)
    out: list[list[str]] = []

    def add(op: str, toks: list[str]) -> None:
        if not toks:
            return
        if out and out[-1][0] == op:
            out[-1][1] += "".join(toks)
        else:
            out.append([op, "".join(toks)])

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if tag == "equal":
            add("=", ta[i1:i2])
        else:
            add("-", ta[i1:i2])
            add("+", tb[j1:j2])
    return out


def plain_diff(pieces: list[list[str]]) -> str:
    """The word diff with plain markers: [-only in the survivor-]{+only in this record+}."""
    marks = {"=": ("", ""), "-": ("[-", "-]"), "+": ("{+", "+}")}
    return "".join(marks[op][0] + text + marks[op][1] for op, text in pieces)


_VISIBLE = str.maketrans({" ": "·", "\t": "→", "\n": "↵\n", "\r": "␍"})


def visible(pieces: list[list[str]]) -> list[list[str]]:
    """Changed pieces that are only whitespace, drawn visibly (· for a space, ↵ for a line break)."""
    return [[op, t.translate(_VISIBLE) if op != "=" and not t.strip() else t] for op, t in pieces]


def condensed(pieces: list[list[str]], context: int = 120) -> list[list[str]]:
    """The diff with long unchanged stretches cut to `context` characters around each change."""
    out = []
    for i, (op, text) in enumerate(pieces):
        if op == "=" and len(text) > 2 * context + 5:
            head = text[:context] if i > 0 else ""
            tail = text[-context:] if i < len(pieces) - 1 else ""
            text = (head + " … " + tail) if head or tail else " … "
        out.append([op, text])
    return out


def _image_info(data: bytes) -> dict:
    """Metadata of an image (never its bytes): size, digests, dimensions, perceptual hashes."""
    import hashlib

    from pipeline.safety.images import ImageRejected, decode_image_info
    from pipeline.safety.imagehash_stage import hash_image

    info = {"kind": "image", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        rgb = decode_image_info(data).rgb
        info.update(width=int(rgb.shape[1]), height=int(rgb.shape[0]))
    except ImageRejected as e:
        info["not_decodable"] = str(e)
        return info
    h = hash_image(data, variants=False)
    info.update(pdq=h.pdq, pdq_quality=h.pdq_quality, phash=h.phash)
    return info


def _content(got: ReadBack | None, masked: str | None, spans: int | None, max_chars: int, full_chars: int | None) -> dict:
    if got is None:
        return {"status": "not_read", "note": "not read back"}
    c = {"status": got.status, "note": got.note}
    if got.status not in (OK, UNVERIFIED):
        return c
    if got.image is not None:
        return {**c, **_image_info(got.image)}
    text = masked if masked is not None else printable(got.text)
    c.update(kind="text", chars=full_chars, text=text[:max_chars], truncated=len(text) > max_chars or full_chars > max_chars,
             masked_spans=spans)
    return c


_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """The text with control characters (a terminal escape, say) and bidirectional overrides written as
    escapes (\\x1b, \\u202e), so that printing a record cannot drive the terminal or reorder what is shown."""
    text = text.replace("\r\n", "\n")
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) <= 0xFF else f"\\u{ord(m.group()):04x}", text)


def _evidence(row: dict) -> dict:
    ev = {k: row[k] for k in _EVIDENCE_COLUMNS if row.get(k) is not None}
    if row.get("pii_counts"):
        ev["pii_counts"] = json.loads(row["pii_counts"])
    if row.get("evidence"):
        ev.update(json.loads(row["evidence"]))
    return ev


def sample_records(run_dir: Path, reason: str | None = None, *, record_ids: tuple[str, ...] = (), n: int = 5,
                   seed: int = 0, max_chars: int = DEFAULT_MAX_CHARS, mask: bool = True,
                   masker: Masker | None = None) -> dict:
    """A deterministic sample of the records of one decision (or decision prefix, or reason prefix),
    or the records named by id, each read back from the inputs, masked, with its survivor and a diff."""
    run_dir = Path(run_dir)
    if not reason and not record_ids:
        raise UnknownReasonError("name a decision (--reason) or record ids to sample")
    manifest = load_manifest(run_dir)
    table = manifest_decisions(manifest)
    ledger = ledger_frame(run_dir, manifest)
    rows, matched_by = _select(ledger, table, reason, record_ids, run_dir, manifest["run_id"])
    quarantined = list(table.names(Category.QUARANTINED))
    q_ids, q_keys = _quarantine_keys(run_dir)
    is_q = (pl.col("decision").is_in(quarantined) | pl.col("record_id").is_in(list(q_ids))
            | pl.concat_str([pl.col("source"), pl.col("location"), pl.col("row").cast(pl.String)], separator="\x1f")
            .is_in(["\x1f".join(map(str, k)) for k in q_keys]))
    tally = rows.select(pl.len().alias("all"), is_q.sum().alias("q")).collect().row(0, named=True)
    excluded, matching = int(tally["q"]), int(tally["all"] - tally["q"])
    if record_ids and excluded:
        raise _refusal(run_dir, "a record asked for is listed in the incident file")
    candidates = rows.filter(~is_q)
    chosen = candidates.collect() if record_ids else _pick(candidates, n, seed)
    picked = chosen.to_dicts()
    survivors = _survivors(ledger, table, picked, quarantined, q_ids, q_keys)
    wanted = [Wanted(r["source"], r["location"], r["row"], r.get("content_sha256")) for r in picked]
    wanted += [Wanted(s["source"], s["location"], s["row"], s.get("content_sha256")) for s in survivors.values()
               if s is not _QUARANTINED]
    # Every quarantined place of the run (not only of this selection): the reader refuses to return any of them.
    refused = {tuple(k) for k in ledger.filter(is_q).select("source", "location", "row").collect().iter_rows()} | q_keys
    got = read_back(manifest, list({w.key: w for w in wanted}.values()), refused)

    if not mask:
        masker = None
    elif masker is None:
        masker = Masker(manifest)
    texts = {k: g.text for k, g in got.items() if g.text is not None and g.status in (OK, UNVERIFIED)}
    masked, spans = {}, {}
    compare = max(max_chars, DIFF_CHARS)
    if texts:
        keys = list(texts)
        pair_keys = {(r["source"], r["location"], r["row"]) for r in picked if r.get("duplicate_of")}
        pair_keys |= {(v["source"], v["location"], v["row"]) for v in survivors.values() if v is not _QUARANTINED}
        cut = [texts[k][:(compare if k in pair_keys else max_chars) + max(_MASK_MARGIN, max_chars)] for k in keys]
        if masker is not None:
            out, counts = masker.mask(cut)
        else:
            out, counts = cut, [None] * len(cut)
        masked = {k: printable(m) for k, m in zip(keys, out)}
        spans = dict(zip(keys, counts))

    def content(row: dict) -> dict:
        k = (row["source"], row["location"], row["row"])
        return _content(got.get(k), masked.get(k), spans.get(k), max_chars, len(texts[k]) if k in texts else None)

    records = []
    for r in picked:
        item = {k: r.get(k) for k in ("record_id", "source", "location", "row", "decision", "stage", "reason")}
        item["category"] = table.category(r["decision"]).value if r["decision"] in table else None
        item["evidence"] = _evidence(r)
        item["content"] = content(r)
        dup = r.get("duplicate_of")
        if dup:
            s = survivors.get(dup)
            if s is _QUARANTINED:
                item["survivor"] = {"record_id": dup, "in_this_run": True,
                                    "content": {"status": "quarantined", "note": "quarantined: never read back"}}
            elif s is None:
                item["survivor"] = {"record_id": dup, "in_this_run": False,
                                    "content": {"status": "not_read", "note": "published by an earlier run (corpus index)"}}
            else:
                item["survivor"] = {"record_id": dup, "in_this_run": True, "source": s["source"], "location": s["location"],
                                    "row": s["row"], "decision": s["decision"], "content": content(s)}
                a, b = item["survivor"]["content"], item["content"]
                if a.get("kind") == "text" and b.get("kind") == "text":
                    ka = (s["source"], s["location"], s["row"])
                    kb = (r["source"], r["location"], r["row"])
                    item["diff"] = word_diff(masked.get(ka, a["text"])[:compare], masked.get(kb, b["text"])[:compare])
                    item["diff_chars"] = compare if max(a["chars"], b["chars"]) > compare else None
                elif a.get("kind") == "image" and b.get("kind") == "image" and a.get("phash") and b.get("phash"):
                    item["phash_distance"] = bin(int(a["phash"], 16) ^ int(b["phash"], 16)).count("1")
        records.append(item)
    return {
        "run_id": manifest["run_id"], "run_dir": str(run_dir), "asked": reason or list(record_ids),
        "matched_by": matched_by, "matching": matching, "quarantined_excluded": excluded,
        "incident_file": str(run_dir / INCIDENTS) if excluded else None, "seed": seed, "n": n, "max_chars": max_chars,
        "masking": {"mode": masker.mode if masker else "off",
                    "note": masker.note if masker else "NOT masked (--no-mask): personal data is shown in clear"},
        "records": records,
    }


_QUARANTINED: dict = {"quarantined": True}


def _survivors(ledger: pl.LazyFrame, table, picked: list[dict], quarantined: list[str], q_ids: set[str],
               q_keys: set) -> dict[str, dict]:
    """The ledger row of each `duplicate_of` survivor found in this run (a kept row first); `_QUARANTINED`
    for a quarantined one, which is never read back."""
    ids = sorted({r["duplicate_of"] for r in picked if r.get("duplicate_of")})
    if not ids:
        return {}
    kept = list(table.names(Category.KEPT))
    found = (ledger.filter(pl.col("record_id").is_in(ids))
             .with_columns(pl.col("decision").is_in(kept).alias("_kept")).sort("_kept", "row", descending=[True, False])
             .collect())
    out: dict[str, dict] = {}
    for row in found.to_dicts():
        rid = row["record_id"]
        if rid in out:
            continue
        safe = (row["decision"] not in quarantined and rid not in q_ids
                and (row["source"], row["location"], row["row"]) not in q_keys)
        out[rid] = row if safe else _QUARANTINED
    return out
