"""Detection only, over any supported input or a finished run: spans as offsets, never values.

Usage::

    summary = scan_paths(["runs/sample"], PiiConfig(), output=Path("spans.jsonl"))
    # spans.jsonl: {"record_id", "field", "entity_type", "start", "end", "score"} per line

A run directory (it holds `manifest.json`) is scanned through its shards, by record id, with
the text fields and PII settings of the run's own config unless others are given.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterator

import orjson

from pipeline.config import SourceConfig, UnitConfig
from pipeline.errors import ConfigError
from pipeline.pii.config import PiiConfig
from pipeline.pii.engine import PiiEngine
from pipeline.pii.redact import resolve
from pipeline.pii.router import PiiRouter
from pipeline.sources import reader_for

_BATCH = 2_000
WDS_TEXT = "txt"


def sources_for(paths: list[str], text_field: str, id_field: str | None) -> tuple[list[dict], list[str], PiiConfig | None]:
    """Source configs for the paths (formats inferred from names), the fields to scan, and the
    PII config of a run directory if one was given."""
    from pipeline.sources.inputs import sources_from_inputs

    sources: list[dict] = []
    fields = [text_field]
    run_pii = None
    plain = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir() and (p / "manifest.json").exists():
            manifest = json.loads((p / "manifest.json").read_text())
            srcs = manifest.get("config", {}).get("sources", [])
            # image_dir records have no text; a webdataset sample's text is its `txt` caption; an image-column
            # source's is its text_field (skipped where a shard lacks it).
            fields = list(dict.fromkeys([WDS_TEXT if s.get("kind") == "webdataset" else s.get("text_field", "text")
                                         for s in srcs if s.get("kind") != "image_dir"]))
            if manifest.get("config", {}).get("pii"):
                run_pii = PiiConfig.model_validate(manifest["config"]["pii"])
                fields = list(dict.fromkeys([*fields, *run_pii.fields]))
            if not (p / "shards").is_dir():
                raise ConfigError(f"{raw}: a run directory without shards/; nothing to scan")
            sources.append({"name": p.name or "run", "kind": "parquet", "paths": [str(p / "shards")],
                            "text_field": fields[0], "id_field": "record_id"})
        else:
            if not p.exists():
                raise ConfigError(f"{raw}: no such file or directory")
            plain.append(str(p))
    if plain:
        sources += sources_from_inputs(tuple(plain), {"text_field": text_field, "id_field": id_field})
    return sources, fields, run_pii


def _records(source: dict, fields: list[str]) -> Iterator[tuple[list[str], dict[str, list]]]:
    """(record ids, {field: values}) per batch of a source, in file order."""
    from pydantic import TypeAdapter

    src = TypeAdapter(SourceConfig).validate_python(source)
    reader = reader_for(src.kind)
    units_cfg = UnitConfig()
    inputs = [reader.describe(src, path, rel) for path, rel in reader.list_inputs(src)]
    with tempfile.TemporaryDirectory(prefix="hygiene-scan-") as work:
        for unit in reader.plan(src, inputs, units_cfg, work_dir=work):
            for batch in reader.read(unit, src, units_cfg):
                t = batch.table
                n = t.num_rows
                if src.id_field and src.id_field in t.column_names:
                    ids = [str(x) for x in t.column(src.id_field).to_pylist()]
                elif batch.relpaths is not None:
                    ids = [f"{src.name}/{p}" for p in batch.relpaths]
                else:
                    ids = [f"{src.name}/{unit.relpath}:{r}" for r in batch.rows.tolist()]
                cols = {}
                for f in fields:
                    if f in t.column_names and str(t.column(f).type) in ("string", "large_string"):
                        cols[f] = t.column(f).to_pylist()
                for lo in range(0, n, _BATCH):
                    yield ids[lo:lo + _BATCH], {f: v[lo:lo + _BATCH] for f, v in cols.items()}


def scan_paths(paths: list[str], cfg: PiiConfig | None = None, *, text_field: str = "text",
               id_field: str | None = None, output: Path | None = None) -> dict:
    """Detect PII in every record of the paths; write spans (JSONL) if asked; return the summary."""
    sources, fields, run_pii = sources_for(paths, text_field, id_field)
    cfg = cfg or run_pii or PiiConfig()
    router = PiiRouter(cfg) if cfg.route_by_language else None
    engine = PiiEngine(cfg).setup() if router is None else None
    by_language: dict[str, int] = {}
    by_entity: dict[str, dict[str, int]] = {}
    records = with_pii = spans_total = 0
    out = None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        out = open(output.with_name(output.name + ".tmp"), "wb")
    try:
        for source in sources:
            for ids, cols in _records(source, fields):
                hit = [False] * len(ids)
                keys = None
                if router is not None:   # each record by its language's engine (its first non-empty field's language)
                    first = [next((v[i] for v in cols.values() if v[i]), None) for i in range(len(ids))]
                    routes = router.routes(first)
                    keys = [r.engine for r in routes]
                    for r in routes:
                        by_language[f"{r.language}:{r.coverage}"] = by_language.get(f"{r.language}:{r.coverage}", 0) + 1
                for field, values in cols.items():
                    idx = [i for i, v in enumerate(values) if v]
                    texts = [values[i] for i in idx]
                    found = engine.detect(texts) if keys is None else router.detect(texts, [keys[i] for i in idx])
                    for i, spans in zip(idx, found):
                        entities_here = set()
                        for s in resolve(spans):
                            spans_total += 1
                            hit[i] = True
                            e = by_entity.setdefault(s.entity, {"spans": 0, "records": 0})
                            e["spans"] += 1
                            if s.entity not in entities_here:
                                e["records"] += 1
                                entities_here.add(s.entity)
                            if out is not None:
                                out.write(orjson.dumps({"record_id": ids[i], "field": field, "entity_type": s.entity,
                                                        "start": s.start, "end": s.end, "score": s.score}) + b"\n")
                records += len(ids)
                with_pii += sum(hit)
        if out is not None:
            out.close()
            output.with_name(output.name + ".tmp").replace(output)
            out = None
    finally:
        if out is not None:
            out.close()
            output.with_name(output.name + ".tmp").unlink(missing_ok=True)
    return {"records": records, "records_with_pii": with_pii, "spans": spans_total, "fields": fields,
            "by_entity": dict(sorted(by_entity.items())),
            "engine": engine.describe() if router is None else router.describe(),
            **({"records_by_language_coverage": dict(sorted(by_language.items()))} if router is not None else {}),
            "output": str(output) if output is not None else None}
