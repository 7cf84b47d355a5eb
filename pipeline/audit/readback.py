"""Read records of a finished run back from its inputs, by the ledger's source, location and row.

The run's own readers do the reading (the same parsing and validation as pass 1), and every
record read back is checked against the ledger's `content_sha256`: a record whose bytes changed
since the run is reported as changed and its content is never returned.

Quarantined records are never read back: a caller that asks for one gets an error before any
input is opened. Only the asked rows of a batch are turned into Python values; the other rows of
the same batch (a quarantined line of the same JSONL file, say) stay inside Arrow and are dropped.

Usage::

    got = read_back(manifest, [Wanted("web", "part-2.jsonl", 2, "ab12...")], refused=set())
    got[("web", "part-2.jsonl", 2)].text
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import pyarrow as pa
from pydantic import TypeAdapter, ValidationError

from pipeline.config import SourceConfig, UnitConfig
from pipeline.errors import PipelineError
from pipeline.sources import is_image_source, reader_for
from pipeline.sources.base import Unit
from pipeline.sources.parquet import IMAGE
from pipeline.sources.textdir import TextDirReader

Key = tuple[str, str, int]

OK = "ok"                      # read back and its sha256 matches the ledger
UNVERIFIED = "unverified"      # read back; the ledger has no digest to check it against
CHANGED = "input_changed"      # the input no longer holds these bytes at this place
MISSING = "input_missing"      # the input file is gone
UNREADABLE = "unreadable"      # the reader rejects it (as it did during the run) or cannot open the input


class ReadBackRefused(PipelineError):
    """A quarantined record was asked for: it is never read back."""


@dataclass(frozen=True)
class Wanted:
    """One record to read back: where the ledger says it is, and its digest (hex) if recorded."""

    source: str
    location: str
    row: int
    sha256: str | None

    @property
    def key(self) -> Key:
        """(source, location, row)."""
        return (self.source, self.location, self.row)


@dataclass
class ReadBack:
    """What was found: a status, and the text or image bytes when the status is ok or unverified."""

    status: str
    text: str | None = None
    image: bytes | None = None
    note: str = ""


def read_back(manifest: dict, wanted: list[Wanted], refused: set[Key]) -> dict[Key, ReadBack]:
    """Read each wanted record from the run's inputs; `refused` holds the quarantined records' keys."""
    bad = [w for w in wanted if w.key in refused]
    if bad:
        raise ReadBackRefused(f"{len(bad)} of the asked records are quarantined; they are never read back")
    out: dict[Key, ReadBack] = {}
    by_source: dict[str, list[Wanted]] = {}
    for w in wanted:
        by_source.setdefault(w.source, []).append(w)
    units_cfg = _units(manifest)
    for name, items in by_source.items():
        out.update(_read_source(manifest, name, items, units_cfg))
    return out


def _units(manifest: dict) -> UnitConfig:
    try:
        return UnitConfig.model_validate((manifest.get("config") or {}).get("units") or {})
    except ValidationError:
        return UnitConfig()


def source_config(manifest: dict, name: str):
    """The validated config of one source of the run (None when the manifest does not describe it)."""
    raw = next((s for s in (manifest.get("config") or {}).get("sources", []) if s.get("name") == name), None)
    if raw is None:
        return None
    try:
        return TypeAdapter(SourceConfig).validate_python(raw)
    except ValidationError:
        return None


def _read_source(manifest: dict, name: str, items: list[Wanted], units_cfg: UnitConfig) -> dict[Key, ReadBack]:
    src = source_config(manifest, name)
    if src is None:
        return {w.key: ReadBack(UNREADABLE, note=f"the manifest does not describe source '{name}'") for w in items}
    reader = reader_for(src.kind)
    inputs = [i for i in manifest.get("inputs", []) if i["source"] == name]
    out: dict[Key, ReadBack] = {}
    need: dict[Key, Wanted] = {w.key: w for w in items}
    if isinstance(reader, TextDirReader):       # one file per record: read just that file
        units = []
        for w in items:
            entry = next((i for i in inputs if i["relpath"] == w.location), None)
            if entry is None or not os.path.exists(entry["path"]):
                out[w.key] = ReadBack(MISSING, note=f"input {entry['path'] if entry else w.location} is gone")
                need.pop(w.key)
                continue
            units.append(Unit(unit_id=0, source=name, kind=src.kind, path=entry["path"], relpath=w.location, part=0,
                              start=0, stop=1, row_offset=w.row, files=(f"{entry['path']}\t{w.location}",)))
        _scan(reader, src, units, units_cfg, need, out, every_unit=True)
    else:
        locations = {w.location for w in items}
        # hf_load reads every file as one dataset whose location is its split: then plan over all inputs.
        chosen = [i for i in inputs if i["relpath"] in locations] or inputs
        gone = [i["path"] for i in chosen if not os.path.exists(i["path"])]
        if gone:
            return {**out, **{k: ReadBack(MISSING, note=f"input {gone[0]} is gone") for k in need}}
        try:
            files = [reader.describe(src, i["path"], i["relpath"], digest=False) for i in chosen]
            with tempfile.TemporaryDirectory(prefix="hygiene-sample-") as work:
                units = reader.plan_inputs(src, sorted(files, key=lambda f: (f.relpath, f.path)), units_cfg, work_dir=work, workers=1)
                _scan(reader, src, units, units_cfg, need, out, every_unit=False)
        except (PipelineError, OSError, pa.ArrowException) as e:
            # Our own errors name files, never content; a third-party message might quote a line: only its type.
            why = f"{e.__class__.__name__}: {e}" if isinstance(e, PipelineError) else e.__class__.__name__
            for k in list(need):
                out[k] = ReadBack(UNREADABLE, note=f"cannot read the input again ({why})")
            need.clear()
    for k in need:
        out[k] = ReadBack(CHANGED, note=f"row {k[2]} of {k[1]} is no longer in the input")
    return out


def _scan(reader, src, units: list[Unit], units_cfg: UnitConfig, need: dict[Key, Wanted], out: dict[Key, ReadBack],
          every_unit: bool) -> None:
    """Read the units in order, taking only the needed rows; stop as soon as every one is found."""
    image = is_image_source(src)
    for unit in units:
        if not need:
            return
        if not every_unit and unit.relpath not in {k[1] for k in need}:
            continue
        for batch in reader.read(reader.localized(unit), src, units_cfg):
            locs = batch.relpaths or [unit.relpath] * batch.table.num_rows
            rows = batch.rows.tolist()
            hits = [(i, (src.name, locs[i], rows[i])) for i in range(len(rows)) if (src.name, locs[i], rows[i]) in need]
            if hits:
                sub = batch.table.take(pa.array([i for i, _ in hits], pa.int64()))
                column = sub[IMAGE] if image else sub[src.text_field]
                for (_, key), value in zip(hits, column.to_pylist()):
                    out[key] = _checked(need.pop(key), value, image)
            for r in batch.rejects:
                key = (src.name, r.relpath or unit.relpath, r.row)
                if key in need:
                    need.pop(key)
                    out[key] = ReadBack(UNREADABLE, note=f"the reader rejects it: {r.reason}")
            if not need:
                return


def _checked(w: Wanted, value, image: bool) -> ReadBack:
    """The value if its digest matches the ledger's; otherwise only the fact that it changed."""
    data = (value or b"") if image else (value or "").encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if w.sha256 is not None and digest != w.sha256:
        return ReadBack(CHANGED, note="the input changed since the run (its sha256 no longer matches the ledger)")
    status = OK if w.sha256 is not None else UNVERIFIED
    return ReadBack(status, image=data, note="") if image else ReadBack(status, text=value or "")
