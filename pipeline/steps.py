"""The steps of a run, each a plain function over paths and ids, so any executor can schedule them.

    pass1(work_dir, unit_id)   read, validate, digest: writes pass1/uNNNNN.parquet (keys, no content)
    barrier(work_dir)          global decisions (record-id uniqueness, exact dedup): decisions/uNNNNN.parquet
    pass2(work_dir, shard_id)  write one output shard: read its units again, keep the rows assigned to it
    finalize(work_dir)         write the ledger in input order and the manifest, publish atomically

Output files depend only on the records and the config: shards are planned globally at the
barrier (rows and text bytes per shard), row groups have a fixed size, and the ledger is written
in input order, so neither the task runner nor the number of units changes a byte.

Each step's output is written atomically with a done-marker, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - makes pa.compute available
import pyarrow.parquet as pq

from pipeline.audit.ledger import KEPT, Decision, Stage
from pipeline.dedup.exact import exact_keys, resolve_exact
from pipeline.dedup.index import CorpusIndex
from pipeline.safety.matcher import Matcher
from pipeline.safety.quarantine import incident, matcher_for, write_incidents
from pipeline.dedup.near import EXTERNAL_PRIORITY, SignatureWriter, resolve_near
from pipeline.errors import RejectionsError, SourceError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.plan import RunPlan
from pipeline.schema_merge import cast_to_schema, merge_schemas
from pipeline.sinks.shards import ShardWriter, plan_shards
from pipeline.spill import SpillWriter, read_spill, spill_complete
from pipeline.sources import Batch, Reject, is_image_source, reader_for
from pipeline.sources.base import string_digests

log = logging.getLogger(__name__)

RECORD_ID = "record_id"
KEYS_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("record_id", pa.string()),
        ("location", pa.string()),
        ("ok", pa.bool_()),
        ("reason", pa.string()),
        ("content_sha256", pa.binary(32)),
        ("key", pa.binary(32)),
        ("text_bytes", pa.int64()),
        ("order_str", pa.string()),
        ("order_int", pa.int64()),
        ("quality", pa.float64()),
        ("hash_list", pa.string()),
        ("hash_entry", pa.string()),
        ("hash_type", pa.string()),
        ("hash_distance", pa.int64()),
        ("phash", pa.string()),
        ("pdq_quality", pa.int64()),
    ]
)


def _unit_name(unit_id: int) -> str:
    return f"u{unit_id:05d}"


def _read_done(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _record_ids(unit, source, batch_rows: np.ndarray, relpaths: list[str] | None, ids: list[str] | None):
    """Record ids plus the (order_str, order_int) pair that sorts them: positional ids by file then row."""
    if ids is not None:
        return ids, ids, [0] * len(ids)
    if relpaths is not None:
        rid = [f"{source.name}/{p}" for p in relpaths]
        return rid, rid, [0] * len(rid)
    prefix = f"{source.name}/{unit.relpath}"
    rows = batch_rows.tolist()
    return [f"{prefix}:{r}" for r in rows], [prefix] * len(rows), rows


class _KeyCollector:
    """Streams pass-1 key rows of one unit to a Parquet writer, a batch at a time (bounded memory)."""

    def __init__(self, plan: RunPlan, unit, writer: pq.ParquetWriter, signer: SignatureWriter | None,
                 matcher: Matcher | None = None, spill: SpillWriter | None = None) -> None:
        self.plan, self.unit, self.writer, self.signer, self.matcher = plan, unit, writer, signer, matcher
        self.spill = spill
        self.incidents: list[dict] = []
        self.source = plan.source(unit.source)
        self.cols: dict[str, list] = {f.name: [] for f in KEYS_SCHEMA}
        self.schemas: list[pa.Schema] = []
        self.next_row = unit.row_offset
        self.records = self.valid = self.text_bytes = 0

    def add_batch(self, batch: Batch) -> None:
        src, table = self.source, batch.table
        n = table.num_rows
        if n and RECORD_ID in table.column_names and src.id_field != RECORD_ID:
            raise SourceError(
                f"{self.unit.path}: the input has a column '{RECORD_ID}', which the output reserves; "
                f"set `id_field: {RECORD_ID}` in the source config or rename the column"
            )
        if n and is_image_source(src):
            self._add_images(batch)
            return
        if n:
            text = table[src.text_field]
            digests = string_digests(text)
            ids = table[src.id_field].to_pylist() if src.id_field else None
            rids, ostr, oint = _record_ids(self.unit, src, batch.rows, batch.relpaths, ids)
            if self.matcher is not None and self.matcher.active:
                # Safety first: a matched record goes no further than this point, not even into a signature.
                table, text, digests, rids, ostr, oint, batch = self._quarantine(table, text, digests, rids, ostr, oint, batch)
                n = table.num_rows
            keys = exact_keys(text, self.plan.config.dedup.exact.normalize, digests)
            c = self.cols
            c["row"].extend(batch.rows.tolist())
            c["record_id"].extend(rids)
            c["location"].extend(batch.relpaths or [self.unit.relpath] * n)
            c["ok"].extend([True] * n)
            c["reason"].extend([None] * n)
            c["content_sha256"].extend(digests)
            c["key"].extend(keys)
            c["text_bytes"].extend(pa.compute.binary_length(text).to_pylist())
            c["order_str"].extend(ostr)
            c["order_int"].extend(oint)
            c["quality"].extend(self._quality(table))
            for k in ("hash_list", "hash_entry", "hash_type", "hash_distance", "phash", "pdq_quality"):
                c[k].extend([None] * n)
            self.schemas.append(table.schema)
            if self.spill is not None:
                self.spill.add(table, batch.rows)
            if self.signer is not None and n:
                self.signer.add(text, batch.rows)
            if n:
                self.next_row = max(self.next_row, int(batch.rows.max()) + 1)
        for r in batch.rejects:
            self.add_reject(r)

    def _quarantine(self, table, text, digests, rids, ostr, oint, batch):
        """Move matched records out of the batch into the quarantine (hashes and ids only)."""
        src = self.source
        url_field = self.matcher.url_field
        urls = table[url_field].to_pylist() if url_field and url_field in table.column_names else None
        hits = self.matcher.match_text(text, digests, urls)
        hit_idx = [i for i, h in enumerate(hits) if h is not None]
        if not hit_idx:
            return table, text, digests, rids, ostr, oint, batch
        rows = batch.rows.tolist()
        locs = batch.relpaths or [self.unit.relpath] * table.num_rows
        c = self.cols
        for i in hit_idx:
            h = hits[i]
            c["row"].append(rows[i])
            c["record_id"].append(rids[i])
            c["location"].append(locs[i])
            c["ok"].append(True)
            c["reason"].append(f"matched hash list '{h.list}' ({h.hash_type}, {h.matched_on})")
            c["content_sha256"].append(digests[i])
            c["key"].append(None)
            c["text_bytes"].append(None)
            c["order_str"].append(ostr[i])
            c["order_int"].append(oint[i])
            c["quality"].append(None)
            c["hash_list"].append(h.list)
            c["hash_entry"].append(h.entry_id)
            c["hash_type"].append(h.hash_type)
            c["hash_distance"].append(h.distance)
            c["phash"].append(None)
            c["pdq_quality"].append(None)
            self.incidents.append(incident(h, rids[i], src.name, self.unit.path if not batch.relpaths else locs[i],
                                           locs[i], rows[i]))
        keep = np.ones(table.num_rows, dtype=bool)
        keep[hit_idx] = False
        kept = np.flatnonzero(keep)
        table = table.filter(pa.array(keep))
        batch = Batch(table, batch.rows[keep], batch.rejects, [locs[i] for i in kept] if batch.relpaths else None)
        pick = lambda xs: [xs[i] for i in kept]  # noqa: E731
        return table, table[src.text_field], pick(digests), pick(rids), pick(ostr), pick(oint), batch

    def _add_images(self, batch: Batch) -> None:
        """Image records: digests, safe decode, PDQ/pHash; undecodable ones are rejected, matches quarantined."""
        from pipeline.safety.imagehash_stage import hash_images

        src, table = self.source, batch.table
        blobs = table["image"].to_pylist()
        matcher = self.matcher if self.matcher is not None and self.matcher.active else None
        hashed = hash_images(blobs, dihedral=bool(matcher and matcher.dihedral))
        # image_dir: one file per record, ids from relpaths; webdataset: `tar#member`, ids `tar:row` or `id_field`;
        # an image column (Parquet, HF): `file:row` or `id_field`, incidents name the file and the row.
        ids = table[src.id_field].to_pylist() if src.id_field and self.unit.kind != "image_dir" else None
        rids, ostr, oint = _record_ids(self.unit, src, batch.rows, batch.relpaths, ids)
        rows = batch.rows.tolist()
        uri = dict(reversed(e.split("\t", 1)) for e in self.unit.files) if self.unit.kind == "image_dir" else {}
        members = table["path"].to_pylist() if self.unit.kind == "webdataset" else None
        keep = np.zeros(len(blobs), dtype=bool)
        c = self.cols
        for i, h in enumerate(hashed):
            digest = bytes.fromhex(h.sha256)
            loc = batch.relpaths[i] if batch.relpaths is not None else self.unit.relpath
            if h.rejected:
                rel = loc if batch.relpaths is not None else None  # webdataset, image column: `file:row`
                self.add_reject(Reject(rows[i], f"not a usable image: {h.rejected}", digest, rel, rids[i]))
                continue
            m = matcher.match_image(h) if matcher else None
            c["row"].append(rows[i])
            c["record_id"].append(rids[i])
            c["location"].append(loc)
            c["ok"].append(True)
            c["content_sha256"].append(digest)
            c["order_str"].append(ostr[i])
            c["order_int"].append(oint[i])
            c["quality"].append(None)
            if m is not None:
                # Quarantined: hashes, ids and the location only; the bytes go nowhere.
                c["reason"].append(f"matched hash list '{m.list}' ({m.hash_type}, {m.matched_on})")
                c["key"].append(None)
                c["text_bytes"].append(None)
                for k, v in (("hash_list", m.list), ("hash_entry", m.entry_id), ("hash_type", m.hash_type),
                             ("hash_distance", m.distance), ("phash", None), ("pdq_quality", h.pdq_quality)):
                    c[k].append(v)
                if self.unit.kind == "image_dir":
                    self.incidents.append(incident(m, rids[i], src.name, uri.get(loc, loc), loc, rows[i]))
                elif members is None:  # an image column: the file and the row
                    self.incidents.append(incident(m, rids[i], src.name, self.unit.path, loc, rows[i]))
                else:  # the location names the tar and the member
                    member = members[i].split("#", 1)[1]
                    uri_i = f"{self.unit.path}#{member}"
                    self.incidents.append(incident(m, rids[i], src.name, uri_i, members[i], rows[i]))
                continue
            keep[i] = True
            c["reason"].append(None if (h.pdq_quality or 0) >= 50 else f"pdq unhashable (quality {h.pdq_quality})")
            c["key"].append(digest)
            c["text_bytes"].append(len(blobs[i]))
            for k, v in (("hash_list", None), ("hash_entry", None), ("hash_type", None), ("hash_distance", None),
                         ("phash", h.phash), ("pdq_quality", h.pdq_quality)):
                c[k].append(v)
        drop = getattr(src, "keep", "bytes") == "path"
        schema = table.schema.remove(table.schema.get_field_index("image")) if drop else table.schema
        self.schemas.append(schema)
        self.next_row = max(self.next_row, int(batch.rows.max()) + 1)
        for r in batch.rejects:
            self.add_reject(r)

    def _quality(self, table: pa.Table) -> list:
        col = self.plan.config.dedup.survivor.quality_column
        if col is None or col not in table.column_names:
            return [None] * table.num_rows
        try:
            return pa.compute.cast(table[col], pa.float64()).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [None] * table.num_rows

    def add_reject(self, r: Reject) -> None:
        loc = r.relpath or self.unit.relpath
        rid = r.record_id or f"{self.source.name}/{loc}" + ("" if r.relpath else f":{r.row}")
        if r.images and self._quarantine_rejected(r, rid, loc):
            return
        c = self.cols
        c["row"].append(r.row)
        c["record_id"].append(rid)
        c["location"].append(loc)
        c["ok"].append(False)
        c["reason"].append(r.reason)
        c["content_sha256"].append(r.raw_sha256)
        c["key"].append(None)
        c["text_bytes"].append(None)
        c["order_str"].append(rid)
        c["order_int"].append(r.row)
        c["quality"].append(None)
        for k in ("hash_list", "hash_entry", "hash_type", "hash_distance", "phash", "pdq_quality"):
            c[k].append(None)
        self.next_row = max(self.next_row, r.row + 1)

    def _quarantine_rejected(self, r: Reject, rid: str, loc: str) -> bool:
        """Match the images of a record the reader rejected; a match quarantines it (safety wins)."""
        matcher = self.matcher if self.matcher is not None and self.matcher.active else None
        if matcher is None:
            return False
        from pipeline.safety.imagehash_stage import hash_images

        for h in hash_images(list(r.images), dihedral=matcher.dihedral):
            m = None if h.rejected else matcher.match_image(h)
            if m is None:
                continue
            c = self.cols
            for k, v in (("row", r.row), ("record_id", rid), ("location", loc), ("ok", True),
                         ("reason", f"matched hash list '{m.list}' ({m.hash_type}, {m.matched_on})"),
                         ("content_sha256", bytes.fromhex(h.sha256)), ("key", None), ("text_bytes", None),
                         ("order_str", rid), ("order_int", r.row), ("quality", None), ("hash_list", m.list),
                         ("hash_entry", m.entry_id), ("hash_type", m.hash_type), ("hash_distance", m.distance),
                         ("phash", None), ("pdq_quality", h.pdq_quality)):
                c[k].append(v)
            uri = f"{self.unit.path}#{r.member}" if r.member else self.unit.path
            where = f"{loc}#{r.member}" if r.member else loc
            self.incidents.append(incident(m, rid, self.source.name, uri, where, r.row))
            self.next_row = max(self.next_row, r.row + 1)
            return True
        return False

    def flush(self) -> None:
        """Write the rows collected so far (rows of later batches always come after earlier ones)."""
        if not self.cols["row"]:
            return
        table = pa.table(self.cols, schema=KEYS_SCHEMA).sort_by([("row", "ascending"), ("location", "ascending")])
        self.writer.write_table(table)
        self.records += table.num_rows
        self.valid += pa.compute.sum(table["ok"]).as_py() or 0
        self.text_bytes += pa.compute.sum(table["text_bytes"]).as_py() or 0
        self.cols = {f.name: [] for f in KEYS_SCHEMA}


def pass1(work_dir: str, unit_id: int) -> dict:
    """Read one unit, validate its records and compute their digests and exact-dedup keys."""
    work = Path(work_dir)
    done = work / "pass1" / f"{_unit_name(unit_id)}.json"
    if (cached := _read_done(done)) is not None:
        return cached
    t0 = time.perf_counter()
    plan = RunPlan.load(work)
    unit = plan.units[unit_id]
    file_error = None
    near = plan.config.dedup.near
    signer = SignatureWriter(work / "minhash", unit_id, near) if near.enabled else None
    source = plan.source(unit.source)
    spill = (SpillWriter(plan.spill_root, unit_id)
             if plan.config.units.spill and reader_for(unit.kind).spill and not is_image_source(source) else None)
    try:
        with atomic_path(work / "pass1" / f"{_unit_name(unit_id)}.parquet") as tmp:
            # Scratch read whole by the barrier: no dictionaries or statistics (half the write time).
            with pq.ParquetWriter(tmp, KEYS_SCHEMA, compression="lz4", use_dictionary=False, write_statistics=False) as writer:
                collector = _KeyCollector(plan, unit, writer, signer, matcher_for(plan), spill)
                try:
                    for batch in reader_for(unit.kind).read(unit, collector.source, plan.config.units):
                        collector.add_batch(batch)
                        collector.flush()
                except SourceError as e:
                    if plan.config.errors.on_file_error == "fail":
                        raise
                    file_error = str(e)
                    collector.add_reject(Reject(collector.next_row, f"unreadable input: {e}"))
                    collector.flush()
    except BaseException:
        if signer is not None:
            signer.abort()
        if spill is not None:
            spill.abort()
        raise
    if signer is not None:
        signer.close()
    if collector.incidents:
        write_incidents(work / "quarantine" / f"{_unit_name(unit_id)}.jsonl", collector.incidents)
    schema = merge_schemas(collector.schemas)
    with atomic_path(work / "pass1" / f"{_unit_name(unit_id)}.schema") as tmp:
        with pa.ipc.new_file(tmp, schema) as w:
            w.write_table(schema.empty_table())
    result = {
        "unit_id": unit_id,
        "records": collector.records,
        "valid": collector.valid,
        "rejected": collector.records - collector.valid,
        "text_bytes": collector.text_bytes,
        "file_error": file_error,
        "spilled": spill.batches if spill is not None else None,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    atomic_write_json(done, result)
    return result


def _read_schema(path: Path) -> pa.Schema:
    with pa.ipc.open_file(path) as r:
        return r.schema


def barrier(work_dir: str) -> dict:
    """Decide globally: reject repeated record ids, resolve exact duplicates, unify the output schema."""
    work = Path(work_dir)
    done = work / "barrier.json"
    if (cached := _read_done(done)) is not None:
        return cached
    plan = RunPlan.load(work)
    cfg = plan.config
    frames = []
    for u in plan.units:
        df = pl.read_parquet(work / "pass1" / f"{_unit_name(u.unit_id)}.parquet")
        frames.append(df.with_columns(unit=pl.lit(u.unit_id, pl.Int64), priority=pl.lit(plan.source(u.source).priority, pl.Int64)))
    records = pl.concat(frames) if frames else pl.DataFrame(schema={**pl.Schema(KEYS_SCHEMA), "unit": pl.Int64, "priority": pl.Int64})
    n = records.height
    order = records.select(pl.arg_sort_by(["unit", "row", "location"], maintain_order=True)).to_series()
    if not order.equals(pl.int_range(n, dtype=order.dtype, eager=True), check_names=False):
        records = records[order]  # pass 1 writes each unit in this order: a safeguard, not a step
    # `_i` is each record's position in input order (unit, row): decisions are scattered into it
    # rather than joined back onto the whole (wide) frame.
    records = records.with_row_index("_i")
    quarantined = pl.col("hash_list").is_not_null()
    records = records.with_columns(
        decision=pl.when(~pl.col("ok")).then(pl.lit(Decision.REJECTED.value))
        .when(quarantined).then(pl.lit(Decision.QUARANTINED.value)).otherwise(pl.lit(None, pl.String)),
        stage=pl.when(~pl.col("ok")).then(pl.lit(Stage.READ.value))
        .when(quarantined).then(pl.lit(Stage.SAFETY.value)).otherwise(pl.lit(None, pl.String)),
        duplicate_of=pl.lit(None, pl.String),
    )

    # Record ids must be unique: later copies of an id (in unit, row order) are rejected.
    # The frame is in input order (unit, row): a first occurrence is a first distinct value.
    repeated = ~records["record_id"].is_first_distinct() & records["decision"].is_null()
    records = records.with_columns(
        decision=pl.when(repeated & pl.col("ok")).then(pl.lit(Decision.REJECTED.value)).otherwise(pl.col("decision")),
        stage=pl.when(repeated & pl.col("ok")).then(pl.lit(Stage.IDENTITY.value)).otherwise(pl.col("stage")),
        reason=pl.when(repeated & pl.col("ok")).then(pl.lit("duplicate record_id")).otherwise(pl.col("reason")),
    )

    index = CorpusIndex.open(cfg.state.dir, cfg) if cfg.state is not None else None
    exact_dropped = 0
    if cfg.dedup.exact.enabled:
        live = records.filter(pl.col("decision").is_null()).select(
            "_i", "unit", "row", "record_id", "key", "priority", "order_str", "order_int")
        if index is not None:
            published = index.exact_keys()
            live = pl.concat([live, published.select(
                pl.lit(None, pl.UInt32).alias("_i"),
                pl.lit(-1, pl.Int64).alias("unit"), pl.int_range(pl.len(), dtype=pl.Int64).alias("row"), "record_id",
                "key", pl.lit(EXTERNAL_PRIORITY, pl.Int64).alias("priority"), pl.col("record_id").alias("order_str"),
                pl.lit(0, pl.Int64).alias("order_int"))])
        dups = resolve_exact(live, keep=("_i",)).filter(pl.col("unit") >= 0)
        published_ids = live.filter(pl.col("unit") < 0)["record_id"]
        dups = dups.with_columns(pl.col("duplicate_of").is_in(published_ids.implode()).alias("_published"))
        exact_dropped = dups.height
        at = dups["_i"]
        records = records.with_columns(
            pl.repeat(None, n, dtype=pl.String, eager=True).alias("_dup").scatter(at, dups["duplicate_of"]),
            pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("_published").scatter(at, dups["_published"]),
        )
        hit = pl.col("_dup").is_not_null()
        records = records.with_columns(
            decision=pl.when(hit).then(pl.lit(Decision.DROPPED_DUPLICATE.value)).otherwise(pl.col("decision")),
            stage=pl.when(hit).then(pl.lit(Stage.EXACT_DEDUP.value)).otherwise(pl.col("stage")),
            reason=pl.when(hit & pl.col("_published")).then(pl.lit("exact duplicate of a published record"))
            .when(hit & pl.col("phash").is_not_null()).then(pl.lit("exact duplicate (identical image bytes)"))
            .when(hit).then(pl.lit("exact duplicate after normalisation")).otherwise(pl.col("reason")),
            duplicate_of=pl.col("_dup"),
        ).drop("_dup", "_published")

    records = records.with_columns(cluster_id=pl.lit(None, pl.Int64), similarity=pl.lit(None, pl.Float64))
    near_stats = None
    if cfg.dedup.near.enabled:
        live = records.filter(pl.col("decision").is_null()).select(
            "unit", "row", "record_id", "priority", "text_bytes", "quality", "order_str", "order_int")
        near, near_stats = resolve_near(live, work, cfg.dedup.near, cfg.dedup.survivor.near_prefer,
                                        index.near_parts() if index is not None else [])
        records = _apply_near(records, near, "near duplicate (MinHash LSH, verified on signatures)")

    if near_stats is not None:
        records = _follow_to_survivor(records)

    image_stats = None
    if cfg.dedup.near.enabled and records["phash"].is_not_null().any():
        from pipeline.dedup.image_near import resolve_image_near

        live = records.filter(pl.col("decision").is_null() & pl.col("phash").is_not_null()).select(
            "unit", "row", "record_id", "priority", "text_bytes", "order_str", "order_int", "phash")
        first = int(records["cluster_id"].max() or -1) + 1 if records["cluster_id"].is_not_null().any() else 0
        near_img, image_stats = resolve_image_near(live, cfg.dedup.near.image_phash_distance, first)
        records = _apply_near(records, near_img, "near-duplicate image (pHash within the configured distance)")
        if near_stats is not None:
            near_stats["images"] = image_stats

    if near_stats is not None or image_stats is not None:
        records = records.sort("_i")  # the near-dup joins do not keep the order
    records = records.with_columns(
        stage=pl.coalesce(pl.col("stage"), pl.lit(Stage.OUTPUT.value)),
        decision=pl.coalesce(pl.col("decision"), pl.lit(Decision.KEPT.value)),
    )
    assignment, shards = _plan_output(records, cfg)
    records = records.with_columns(
        pl.repeat(None, n, dtype=pl.Int64, eager=True).alias("shard").scatter(assignment["_i"], assignment["shard"]))
    atomic_write_json(work / "shards.json", shards)
    (work / "decisions").mkdir(exist_ok=True)
    cols = ["row", "record_id", "location", "content_sha256", "decision", "stage", "reason", "duplicate_of",
            "cluster_id", "similarity", "text_bytes", "hash_list", "hash_entry", "hash_type", "hash_distance", "shard"]
    units = records["unit"]
    for u in plan.units:
        first, last = units.search_sorted(u.unit_id, "left"), units.search_sorted(u.unit_id, "right")
        part = records.slice(first, last - first).select(cols)
        with atomic_path(work / "decisions" / f"{_unit_name(u.unit_id)}.parquet") as tmp:
            part.write_parquet(tmp, compression="lz4", statistics=False)  # scratch: fast, not small

    schemas = [_read_schema(work / "pass1" / f"{_unit_name(u.unit_id)}.schema") for u in plan.units]
    out_schema = merge_schemas(schemas)
    if RECORD_ID in out_schema.names:
        out_schema = out_schema.remove(out_schema.get_field_index(RECORD_ID))
    out_schema = out_schema.insert(0, pa.field(RECORD_ID, pa.string(), nullable=False))
    with atomic_path(work / "output.schema") as tmp:
        with pa.ipc.new_file(tmp, out_schema) as w:
            w.write_table(out_schema.empty_table())

    is_rejected = pl.col("decision") == Decision.REJECTED.value
    n_rejected = int(records.select(is_rejected.sum()).item())
    result = {"records": records.height, "rejected": n_rejected, "exact_dropped": exact_dropped,
              "near_dedup": near_stats, "shards": len(shards),
              "corpus_index": index.summary() if index is not None else None}
    if cfg.errors.fail_on_reject and n_rejected:
        report = work / "rejections.parquet"
        records.select("record_id", "location", "row", "stage", "reason", "decision").filter(is_rejected).drop(
            "decision").write_parquet(report)
        raise RejectionsError(
            f"{n_rejected} record(s) rejected and fail_on_reject is set; nothing was published. "
            f"Record ids and reasons: {report}"
        )
    atomic_write_json(done, result)
    return result


def pass2(work_dir: str, shard_id: int) -> dict:
    """Write one output shard: read its units again and keep the rows the barrier assigned to it."""
    work = Path(work_dir)
    done = work / "pass2" / f"s{shard_id:05d}.json"
    if (cached := _read_done(done)) is not None:
        return cached
    t0 = time.perf_counter()
    plan = RunPlan.load(work)
    cfg = plan.config
    meta = json.loads((work / "shards.json").read_text())[shard_id]
    schema = _read_schema(work / "output.schema")
    name = f"part-{shard_id:05d}.parquet"
    writer = ShardWriter(work / "shards", schema, max_rows=meta["rows"] + 1, name=lambda _k: name,
                         row_group_rows=cfg.output.row_group_rows, compression=cfg.output.compression,
                         compression_level=cfg.output.compression_level,
                         plain_columns=frozenset(s.text_field for s in cfg.sources if not is_image_source(s)))
    residual = None
    if cfg.pii is not None and cfg.pii.enabled and cfg.pii.residual_scan.enabled:
        from pipeline.pii.step import ResidualScan

        residual = ResidualScan(cfg.pii)
    with writer:
        for unit_id in range(meta["first_unit"], meta["last_unit"] + 1):
            _write_unit_rows(plan, work, unit_id, shard_id, schema, writer, residual)
    written = sum(f.rows for f in writer.files)
    if written != meta["rows"]:
        raise SourceError(
            f"shard {shard_id}: {meta['rows']} records were decided but {written} re-read; "
            "an input changed during the run; run again"
        )
    (f,) = writer.files
    result = {"shard_id": shard_id, "shard": f.to_dict(), "kept": written, "seconds": round(time.perf_counter() - t0, 3),
              "residual_pii": residual.to_dict() if residual is not None else None}
    atomic_write_json(done, result)
    return result


def iter_unit_rows(plan: RunPlan, unit_id: int, keep_rows: np.ndarray):
    """The rows in `keep_rows` (sorted) of a unit as (table, rows), in row order: from the batches
    pass 1 spilled when it did, else by reading the unit again."""
    unit = plan.units[unit_id]
    cfg = plan.config
    if keep_rows.size == 0:
        return
    last = keep_rows[-1]
    spilled = (_read_done(plan.work_dir / "pass1" / f"{_unit_name(unit_id)}.json") or {}).get("spilled")
    if spilled is not None and spill_complete(plan.spill_root, unit_id, spilled):
        batches = read_spill(plan.spill_root, unit_id, spilled)
    else:
        batches = ((b.table, b.rows) for b in reader_for(unit.kind).read(unit, plan.source(unit.source), cfg.units))
    try:
        for table, rows in batches:
            if rows.size == 0:
                continue
            if rows[0] > last:
                break
            mask = np.isin(rows, keep_rows)
            if not mask.any():
                continue
            yield table.filter(pa.array(mask)), rows[mask]
    except SourceError:
        if cfg.errors.on_file_error == "fail":
            raise


def _write_unit_rows(plan: RunPlan, work: Path, unit_id: int, shard_id: int, schema: pa.Schema, writer: ShardWriter,
                     residual=None) -> None:
    """Append the rows of one unit that belong to `shard_id`, in row order, redacted when the PII stage ran."""
    unit = plan.units[unit_id]
    mine = (
        pl.read_parquet(work / "decisions" / f"{_unit_name(unit_id)}.parquet", columns=["row", "record_id", "shard"])
        .filter(pl.col("shard") == shard_id)
        .sort("row")
    )
    if mine.height == 0:
        return
    keep_rows = mine["row"].to_numpy()
    keep_ids = mine["record_id"].to_arrow()
    redaction = None
    if plan.config.pii is not None and plan.config.pii.enabled:
        from pipeline.pii.step import UnitRedaction

        redaction = UnitRedaction.load(work, plan, unit_id, keep_rows)
    for table, rows in iter_unit_rows(plan, unit_id, keep_rows):
        source = plan.source(unit.source)
        if is_image_source(source) and getattr(source, "keep", "bytes") == "path":
            table = table.drop_columns(["image"])
        # Rows are unique within a unit, so the kept rows locate their record ids directly.
        rids = keep_ids.take(pa.array(np.searchsorted(keep_rows, rows)))
        if redaction is not None:
            table = redaction.apply(table, rows, rids, residual)
        if RECORD_ID in table.column_names:
            table = table.drop_columns([RECORD_ID])
        writer.write(cast_to_schema(table.add_column(0, RECORD_ID, rids), schema))


def _apply_near(records: pl.DataFrame, near: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Merge near-duplicate decisions (drops and cluster survivors) into the records.

    Text and image near-dup touch disjoint records, so earlier cluster evidence is kept as is.
    """
    if "via" not in near.columns:
        near = near.with_columns(pl.lit(None, pl.String).alias("via"))
    records = records.join(near.rename({"duplicate_of": "_ndup", "cluster_id": "_cid", "similarity": "_sim", "via": "_via"}),
                           on=["unit", "row"], how="left")
    hit = pl.col("_ndup").is_not_null()
    # A second-hop drop names the record it was reached through (similarity stays the one to the survivor).
    why = pl.when(pl.col("_via").is_not_null()).then(
        pl.concat_str(pl.lit(reason + ", second hop via "), pl.col("_via"))).otherwise(pl.lit(reason))
    return records.with_columns(
        decision=pl.when(hit).then(pl.lit(Decision.DROPPED_NEAR_DUPLICATE.value)).otherwise(pl.col("decision")),
        stage=pl.when(hit).then(pl.lit(Stage.NEAR_DEDUP.value)).otherwise(pl.col("stage")),
        reason=pl.when(hit).then(why).otherwise(pl.col("reason")),
        duplicate_of=pl.coalesce(pl.col("duplicate_of"), pl.col("_ndup")),
        cluster_id=pl.coalesce(pl.col("cluster_id"), pl.col("_cid")),
        similarity=pl.coalesce(pl.col("similarity"), pl.col("_sim")),
    ).drop("_ndup", "_cid", "_sim", "_via")


def _follow_to_survivor(records: pl.DataFrame) -> pl.DataFrame:
    """An exact copy whose exact survivor was itself dropped as a near duplicate points at the
    record that was finally kept, so `duplicate_of` always names a survivor."""
    moved = records.filter(pl.col("decision") == Decision.DROPPED_NEAR_DUPLICATE.value).select(
        pl.col("record_id").alias("duplicate_of"), pl.col("duplicate_of").alias("_final"))
    if moved.height == 0:
        return records
    return (records.join(moved.unique("duplicate_of", keep="first"), on="duplicate_of", how="left")
            .with_columns(duplicate_of=pl.when(pl.col("decision") == Decision.DROPPED_DUPLICATE.value)
                          .then(pl.coalesce(pl.col("_final"), pl.col("duplicate_of"))).otherwise(pl.col("duplicate_of")))
            .drop("_final"))


def _plan_output(records: pl.DataFrame, cfg) -> tuple[pl.DataFrame, list[dict]]:
    """Assign every kept record (in unit, row order) to a shard; describe each shard."""
    kept = (records.filter(pl.col("decision").is_in(list(KEPT))).select("_i", "unit", "row", "text_bytes")
            .sort("unit", "row", maintain_order=True))
    shard = plan_shards(kept["text_bytes"].to_numpy(), cfg.output.shard_max_rows, cfg.output.shard_max_bytes)
    kept = kept.with_columns(pl.Series("shard", shard, dtype=pl.Int64))
    meta = (
        kept.group_by("shard", maintain_order=True)
        .agg(pl.col("unit").min().alias("first_unit"), pl.col("unit").max().alias("last_unit"), pl.len().alias("rows"))
        .sort("shard")
    )
    return kept.select("_i", "unit", "row", "shard"), meta.to_dicts()


def shard_ids(work_dir: str) -> list[int]:
    """Ids of the output shards the barrier planned."""
    return list(range(len(json.loads((Path(work_dir) / "shards.json").read_text()))))


def cleanup_tmp(work_dir: str) -> None:
    """Remove temporary files a killed attempt left behind (never finished outputs)."""
    for p in Path(work_dir).rglob(".*.tmp*"):
        if p.is_file():
            p.unlink(missing_ok=True)




def index_additions(work: Path, plan: RunPlan) -> tuple[pl.DataFrame, pa.Table | None, np.ndarray | None, pl.DataFrame]:
    """What a published run adds to the corpus index: exact keys, band keys and signatures of its
    kept records, and the inputs it processed."""
    kept_frames, exact_frames = [], []
    for u in plan.units:
        name = _unit_name(u.unit_id)
        kept = (pl.read_parquet(work / "decisions" / f"{name}.parquet", columns=["row", "record_id", "decision"])
                .filter(pl.col("decision").is_in(list(KEPT))).select("row", "record_id"))
        keys = pl.read_parquet(work / "pass1" / f"{name}.parquet", columns=["row", "key"])
        exact_frames.append(kept.join(keys, on="row", how="inner").select("key", "record_id"))
        kept_frames.append(kept.with_columns(pl.lit(u.unit_id, pl.Int64).alias("unit")))
    exact = pl.concat(exact_frames) if exact_frames else pl.DataFrame(schema={"key": pl.Binary, "record_id": pl.String})
    inputs = pl.DataFrame([{"source": f.source, "path": f.path, "sha256": f.sha256} for f in plan.inputs],
                          schema={"source": pl.String, "path": pl.String, "sha256": pl.String})
    near_cfg = plan.config.dedup.near
    if not near_cfg.enabled:
        return exact, None, None, inputs
    from pipeline.dedup.near import SignatureStore

    band_frames = []
    for u in plan.units:
        path = work / "minhash" / f"{_unit_name(u.unit_id)}.parquet"
        band_frames.append(pl.read_parquet(path).with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("sig_idx")))
    kept = pl.concat(kept_frames) if kept_frames else pl.DataFrame(schema={"row": pl.Int64, "record_id": pl.String, "unit": pl.Int64})
    bands = pl.concat(band_frames) if band_frames else None
    if bands is None or kept.height == 0:
        return exact, None, None, inputs
    signed = kept.join(bands, on=["unit", "row"], how="inner").filter(pl.col("shingles") > 0).sort("unit", "row")
    store = SignatureStore({u.unit_id: work / "minhash" / f"{_unit_name(u.unit_id)}.sig" for u in plan.units}, near_cfg.num_perm)
    sig = store.gather(signed["unit"].to_numpy(), signed["sig_idx"].to_numpy())
    band_cols = [c for c in signed.columns if c.startswith("b") and c[1:].isdigit()]
    return exact, signed.select(["record_id", *band_cols]).to_arrow(), sig, inputs
