"""Pass 1, per unit: read, validate, digest, run the per-record stages (safety first), then write
the key rows of every record and the key material of the barrier stages (no content).

    pass1(work_dir, unit_id)   writes pass1/uNNNNN.parquet (one key row per input record),
                               pass1/uNNNNN.schema, quarantine/uNNNNN.jsonl and the spill
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.decisions import READ_STAGE, REJECTED
from pipeline.core.registry import decision_table, stages_at
from pipeline.core.runtime import stage_instance
from pipeline.core.stage import BatchContext, Placement
from pipeline.core.verdicts import run_batch
from pipeline.errors import SourceError
from pipeline.fileio import atomic_path, atomic_write_json
from pipeline.dedup.exact import exact_keys
from pipeline.plan import RunPlan
from pipeline.run.scratch import scratch_url
from pipeline.run.workdir import read_done, unit_name, write_schema
from pipeline.safety.quarantine import incident, write_incidents
from pipeline.schema_merge import merge_schemas
from pipeline.sources import Batch, Reject, is_image_source, reader_for
from pipeline.sources.base import string_digests
from pipeline.spill import SpillWriter
from pipeline.stages.safety import QUARANTINED, SafetyStage, match_reason

RECORD_ID = "record_id"
KEYS_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("record_id", pa.string()),
        ("location", pa.string()),
        ("decision", pa.string()),       # null: undecided (kept so far)
        ("stage", pa.string()),
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
        ("evidence", pa.string()),       # a user stage's evidence, compact JSON
    ]
)
_SAFETY_EVIDENCE = ("hash_list", "hash_entry", "hash_type", "hash_distance")


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


class KeyRows:
    """The one place that builds key rows (and through the barrier, ledger rows): columns of
    KEYS_SCHEMA filled per record, every column not given is null."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {f.name: [] for f in KEYS_SCHEMA}
        self.n = 0

    def add(self, **values) -> None:
        """One row."""
        for k, col in self.cols.items():
            col.append(values.get(k))
        self.n += 1

    def extend(self, n: int, **columns) -> None:
        """`n` rows; each given column is a list of `n` values, the others are null."""
        for k, col in self.cols.items():
            v = columns.get(k)
            col.extend(v if v is not None else [None] * n)
        self.n += n

    def take(self) -> pa.Table | None:
        """The rows so far, sorted by (row, location), and a fresh buffer."""
        if not self.n:
            return None
        table = pa.table(self.cols, schema=KEYS_SCHEMA).sort_by([("row", "ascending"), ("location", "ascending")])
        self.__init__()
        return table


class UnitReader:
    """Streams one unit's batches through validation, the per-record stages and keying, and its
    key rows to a Parquet writer, a batch at a time (bounded memory)."""

    def __init__(self, plan: RunPlan, unit, writer: pq.ParquetWriter, key_writers: list, spill: SpillWriter | None) -> None:
        self.plan, self.unit, self.writer, self.key_writers, self.spill = plan, unit, writer, key_writers, spill
        self.source = plan.source(unit.source)
        self.table = decision_table(plan.config)
        specs = stages_at(plan.config, Placement.RECORD)
        self.stages = [(s, stage_instance(s, plan)) for s in specs]
        self.safety = self.stages[0][1]
        self.incidents: list[dict] = []
        self.rows = KeyRows()
        self.schemas: list[pa.Schema] = []
        self.next_row = unit.row_offset
        self.records = self.valid = self.text_bytes = 0
        self.stage_seconds: dict[str, list[float]] = {}   # per record stage: [wall, thread CPU]
        self.stage_counts: dict[str, dict[str, int]] = {}   # per stage: the sum of its Verdicts.counts

    # -- per-record stages ---------------------------------------------------------------------

    def _run_stages(self, table: pa.Table, rows: np.ndarray, rids: list, extra: dict, text_field: str | None,
                    decided: KeyRows, common: dict) -> tuple[np.ndarray, list[str | None] | None]:
        """Run every record stage in order on the rows still kept; decided rows become key rows.
        Returns the boolean mask of rows still kept and, when a user's stage recorded evidence for
        kept rows (e.g. a detected language), that evidence per row as compact JSON."""
        keep = np.ones(table.num_rows, dtype=bool)
        kept_evidence: list[dict] | None = None
        for spec, stage in self.stages:
            idx = np.flatnonzero(keep)
            if idx.size == 0:
                break
            if stage is self.safety and not stage.active():
                continue
            sub = table if idx.size == table.num_rows else table.take(pa.array(idx))
            sub_extra = {k: ([v[i] for i in idx] if isinstance(v, list) and k != "incidents" else v)
                         for k, v in extra.items()}
            ctx = BatchContext(self.source.name, text_field, rows[idx], [rids[i] for i in idx], self.unit.unit_id,
                               self.plan.work_dir, sub_extra)
            t0, c0 = time.perf_counter(), time.thread_time()
            verdicts = run_batch(spec, stage, sub, ctx, self.table)
            spent = self.stage_seconds.setdefault(spec.kind, [0.0, 0.0])
            spent[0] += time.perf_counter() - t0
            spent[1] += time.thread_time() - c0
            if verdicts.counts:
                acc = self.stage_counts.setdefault(spec.kind, {})
                for k, v in verdicts.counts.items():
                    acc[k] = acc.get(k, 0) + int(v)
            for j, d in enumerate(verdicts.decision):
                if d is None:
                    if verdicts.evidence and stage is not self.safety:
                        ev = {k: v[j] for k, v in verdicts.evidence.items() if v[j] is not None}
                        if ev:
                            kept_evidence = kept_evidence or [{} for _ in range(table.num_rows)]
                            kept_evidence[int(idx[j])].update(ev)
                    continue
                i = int(idx[j])
                ev = {k: v[j] for k, v in verdicts.evidence.items() if v[j] is not None}
                if kept_evidence is not None:
                    ev = {**kept_evidence[i], **ev}
                typed = {k: ev.pop(k) for k in _SAFETY_EVIDENCE if k in ev} if stage is self.safety else {}
                decided.add(**{k: v[i] for k, v in common.items()}, decision=d, stage=spec.kind,
                            reason=verdicts.reason[j], **typed,
                            evidence=json.dumps(ev, sort_keys=True, separators=(",", ":"), default=str) if ev else None)
                keep[i] = False
        if kept_evidence is None:
            return keep, None
        return keep, [json.dumps(e, sort_keys=True, separators=(",", ":"), default=str) if e else None
                      for e in kept_evidence]

    # -- text ----------------------------------------------------------------------------------

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
            locs = batch.relpaths or [self.unit.relpath] * n
            uris = locs if batch.relpaths else [self.unit.path] * n
            # Safety first: a matched record goes no further than this point, not even into a signature.
            rows = batch.rows.tolist()
            common = {"row": rows, "record_id": rids, "location": locs, "content_sha256": digests,
                      "order_str": ostr, "order_int": oint}
            keep, evidence = self._run_stages(table, batch.rows, rids, {"digests": digests, "locations": locs,
                                                                        "uris": uris, "incidents": self.incidents},
                                              src.text_field, self.rows, common)
            if evidence is not None:
                evidence = [e for e, k in zip(evidence, keep) if k]
            if not keep.all():
                kept = np.flatnonzero(keep)
                table = table.filter(pa.array(keep))
                batch = Batch(table, batch.rows[keep], batch.rejects, [locs[i] for i in kept] if batch.relpaths else None)
                pick = lambda xs: [xs[i] for i in kept]  # noqa: E731
                text, digests, rids, ostr, oint, locs, rows = (table[src.text_field], pick(digests), pick(rids),
                                                               pick(ostr), pick(oint), pick(locs), pick(rows))
                n = table.num_rows
            keys = exact_keys(text, self.plan.config.dedup.exact.normalize, digests)
            self.rows.extend(n, row=rows, record_id=rids, location=locs, content_sha256=digests,
                             key=keys, text_bytes=pc.binary_length(text).to_pylist(), order_str=ostr, order_int=oint,
                             quality=self._quality(table), evidence=evidence)
            self.schemas.append(table.schema)
            if self.spill is not None:
                self.spill.add(table, batch.rows)
            if n:
                for w in self.key_writers:
                    w.add(text, batch.rows)
                self.next_row = max(self.next_row, int(batch.rows.max()) + 1)
        for r in batch.rejects:
            self.add_reject(r)

    def _quality(self, table: pa.Table) -> list:
        col = self.plan.config.dedup.survivor.quality_column
        if col is None or col not in table.column_names:
            return [None] * table.num_rows
        try:
            return pc.cast(table[col], pa.float64()).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return [None] * table.num_rows

    # -- images --------------------------------------------------------------------------------

    def _add_images(self, batch: Batch) -> None:
        """Image records: digests, safe decode, PDQ/pHash; undecodable ones are rejected, matches quarantined."""
        from pipeline.safety.imagehash_stage import hash_images

        src, table = self.source, batch.table
        blobs = table["image"].to_pylist()
        hashed = hash_images(blobs, dihedral=self.safety.dihedral)
        # image_dir: one file per record, ids from relpaths; webdataset: `tar#member`, ids `tar:row` or `id_field`;
        # an image column (Parquet, HF): `file:row` or `id_field`, incidents name the file and the row.
        ids = table[src.id_field].to_pylist() if src.id_field and self.unit.kind != "image_dir" else None
        rids, ostr, oint = _record_ids(self.unit, src, batch.rows, batch.relpaths, ids)
        rows = batch.rows.tolist()
        uri_of = dict(reversed(e.split("\t", 1)) for e in self.unit.files) if self.unit.kind == "image_dir" else {}
        members = table["path"].to_pylist() if self.unit.kind == "webdataset" else None
        ok = []
        for i, h in enumerate(hashed):
            loc = batch.relpaths[i] if batch.relpaths is not None else self.unit.relpath
            if h.rejected:
                rel = loc if batch.relpaths is not None else None  # webdataset, image column: `file:row`
                self.add_reject(Reject(rows[i], f"not a usable image: {h.rejected}", bytes.fromhex(h.sha256), rel, rids[i]))
            else:
                ok.append(i)
        if ok:
            idx = np.array(ok, dtype=np.int64)
            sub = table.take(pa.array(idx))
            locs = [batch.relpaths[i] if batch.relpaths is not None else self.unit.relpath for i in ok]
            if self.unit.kind == "image_dir":
                uris = [uri_of.get(loc, loc) for loc in locs]
                where = locs
            elif members is None:  # an image column: the file and the row
                uris, where = [self.unit.path] * len(ok), locs
            else:  # the location names the tar and the member
                uris = [f"{self.unit.path}#{members[i].split('#', 1)[1]}" for i in ok]
                where = [members[i] for i in ok]
            digests = [bytes.fromhex(hashed[i].sha256) for i in ok]
            sub_rids = [rids[i] for i in ok]
            common = {"row": [rows[i] for i in ok], "record_id": sub_rids, "location": locs, "content_sha256": digests,
                      "order_str": [ostr[i] for i in ok], "order_int": [oint[i] for i in ok],
                      "pdq_quality": [hashed[i].pdq_quality for i in ok]}
            keep, evidence = self._run_stages(sub, batch.rows[idx], sub_rids,
                                    {"image_hashes": [hashed[i] for i in ok], "digests": digests, "locations": where,
                                     "uris": uris, "incidents": self.incidents}, None, self.rows, common)
            for j in np.flatnonzero(keep):
                i = ok[j]
                h = hashed[i]
                self.rows.add(row=rows[i], record_id=rids[i], location=locs[j], content_sha256=digests[j],
                              reason=None if (h.pdq_quality or 0) >= 50 else f"pdq unhashable (quality {h.pdq_quality})",
                              key=digests[j], text_bytes=len(blobs[i]), order_str=ostr[i], order_int=oint[i],
                              phash=h.phash, pdq_quality=h.pdq_quality,
                              evidence=evidence[j] if evidence is not None else None)
        drop = getattr(src, "keep", "bytes") == "path"
        schema = table.schema.remove(table.schema.get_field_index("image")) if drop else table.schema
        self.schemas.append(schema)
        self.next_row = max(self.next_row, int(batch.rows.max()) + 1)
        for r in batch.rejects:
            self.add_reject(r)

    # -- rejects -------------------------------------------------------------------------------

    def add_reject(self, r: Reject) -> None:
        loc = r.relpath or self.unit.relpath
        rid = r.record_id or f"{self.source.name}/{loc}" + ("" if r.relpath else f":{r.row}")
        if r.images and self._quarantine_rejected(r, rid, loc):
            return
        self.rows.add(row=r.row, record_id=rid, location=loc, decision=REJECTED.name, stage=READ_STAGE, reason=r.reason,
                      content_sha256=r.raw_sha256, order_str=rid, order_int=r.row)
        self.next_row = max(self.next_row, r.row + 1)

    def _quarantine_rejected(self, r: Reject, rid: str, loc: str) -> bool:
        """Match the images of a record the reader rejected; a match quarantines it (safety wins)."""
        if not self.safety.active():
            return False
        from pipeline.safety.imagehash_stage import hash_images

        found = self.safety.match_rejected(hash_images(list(r.images), dihedral=self.safety.dihedral))
        if found is None:
            return False
        m, h = found
        self.rows.add(row=r.row, record_id=rid, location=loc, decision=QUARANTINED.name, stage=SafetyStage.kind,
                      reason=match_reason(m), content_sha256=bytes.fromhex(h.sha256), order_str=rid, order_int=r.row,
                      hash_list=m.list, hash_entry=m.entry_id, hash_type=m.hash_type, hash_distance=m.distance,
                      pdq_quality=h.pdq_quality)
        uri = f"{self.unit.path}#{r.member}" if r.member else self.unit.path
        where = f"{loc}#{r.member}" if r.member else loc
        self.incidents.append(incident(m, rid, self.source.name, uri, where, r.row))
        self.next_row = max(self.next_row, r.row + 1)
        return True

    def flush(self) -> None:
        """Write the rows collected so far (rows of later batches always come after earlier ones)."""
        table = self.rows.take()
        if table is None:
            return
        self.writer.write_table(table)
        self.records += table.num_rows
        self.valid += table.num_rows - (pc.sum(pc.equal(table["decision"], REJECTED.name)).as_py() or 0)
        self.text_bytes += pc.sum(table["text_bytes"]).as_py() or 0


def pass1(work_dir: str, unit_id: int) -> dict:
    """Read one unit, validate its records, run the per-record stages and compute the keys."""
    work = Path(work_dir)
    done = work / "pass1" / f"{unit_name(unit_id)}.json"
    if (cached := read_done(done)) is not None:
        return cached
    t0, c0 = time.perf_counter(), time.thread_time()
    plan = RunPlan.load(work)
    unit = plan.units[unit_id]
    file_error = None
    source = plan.source(unit.source)
    key_writers = [w for s in stages_at(plan.config, Placement.BARRIER)
                   if (w := stage_instance(s, plan).key_writer(unit_id, work)) is not None]
    spill = (SpillWriter(plan.spill_root, unit_id)
             if plan.config.units.spill and reader_for(unit.kind).spill and not is_image_source(source)
             and scratch_url(plan.config) is None else None)  # a shared scratch on a store: pass 2 reads again
    try:
        with atomic_path(work / "pass1" / f"{unit_name(unit_id)}.parquet") as tmp:
            # Scratch read whole by the barrier: no dictionaries or statistics (half the write time).
            with pq.ParquetWriter(tmp, KEYS_SCHEMA, compression="lz4", use_dictionary=False, write_statistics=False) as writer:
                reader = UnitReader(plan, unit, writer, key_writers, spill)
                try:
                    unit_reader = reader_for(unit.kind)
                    for batch in unit_reader.read(unit_reader.localized(unit), reader.source, plan.config.units):
                        reader.add_batch(batch)
                        reader.flush()
                except SourceError as e:
                    if plan.config.errors.on_file_error == "fail":
                        raise
                    file_error = str(e)
                    reader.add_reject(Reject(reader.next_row, f"unreadable input: {e}"))
                    reader.flush()
    except BaseException:
        for w in key_writers:
            w.abort()
        if spill is not None:
            spill.abort()
        raise
    for w in key_writers:
        w.close()
    if reader.incidents:
        write_incidents(work / "quarantine" / f"{unit_name(unit_id)}.jsonl", reader.incidents)
    write_schema(work / "pass1" / f"{unit_name(unit_id)}.schema", merge_schemas(reader.schemas))
    result = {
        "unit_id": unit_id,
        "records": reader.records,
        "valid": reader.valid,
        "rejected": reader.records - reader.valid,
        "text_bytes": reader.text_bytes,
        "file_error": file_error,
        "spilled": spill.batches if spill is not None else None,
        "seconds": round(time.perf_counter() - t0, 3),
        "cpu_seconds": round(time.thread_time() - c0, 3),
        "stage_seconds": {k: [round(w, 3), round(c, 3)] for k, (w, c) in reader.stage_seconds.items()},
    }
    if reader.stage_counts:  # the per-record stages' own counters (Verdicts.counts), for the manifest
        result["stage_counts"] = {k: dict(sorted(v.items())) for k, v in sorted(reader.stage_counts.items())}
    atomic_write_json(done, result)
    return result
