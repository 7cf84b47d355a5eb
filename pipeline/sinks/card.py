"""Dataset-side metadata for a run's output: a Hugging Face dataset card and a Croissant JSON-LD file.

Both are written from the manifest (and the shard schema), so they say exactly what the audit
trail says: where the data came from, under which licences, what was removed and why.

Usage::

    files = write_metadata(final_dir, manifest, shard_schema)   # README.md, croissant.json
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import yaml

from pipeline.fileio import atomic_write_bytes, atomic_write_json, sha256_path

CARD = "README.md"
CROISSANT = "croissant.json"

_CROISSANT_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract",
    "field": "cr:field", "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath",
    "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "sc": "https://schema.org/", "separator": "cr:separator", "source": "cr:source", "subField": "cr:subField",
    "transform": "cr:transform",
}


def size_category(n: int) -> str:
    """Hugging Face's size_categories bucket for n records."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for limit, label in bounds:
        if n < limit:
            return label
    return "n>1T" if n >= 10**12 else "1B<n<10B" if n < 10**10 else "10B<n<100B" if n < 10**11 else "100B<n<1T"


def _licenses(manifest: dict) -> list[str]:
    return sorted({s["license"] for s in manifest["sources"] if s.get("license")})


def preprocessing_protocol(manifest: dict) -> str:
    """A plain-language account of what the run did, from the manifest's stages and totals."""
    o = manifest["conservation"]["overall"]
    cfg = manifest["config"]
    steps = [f"Read {o['input']:,} records from {len(manifest['inputs'])} input file(s) "
             f"({', '.join(s['name'] + ' (' + s['kind'] + ')' for s in manifest['sources'])}); "
             f"{o['rejected']:,} malformed or empty records were rejected with a reason."]
    st = manifest["stages"]
    if "exact_dedup" in st:
        n = cfg["dedup"]["exact"]["normalize"]
        steps.append(f"Exact duplicates removed ({st['exact_dedup']['dropped']:,}) on the sha256 of text normalised with "
                     f"Unicode {n['unicode']}, lowercase={n['lowercase']}, whitespace collapsed={n['collapse_whitespace']}; "
                     "the copy from the highest-priority source, then the lowest record id, was kept.")
    nd = manifest.get("near_dedup")
    if nd:
        steps.append(f"Near duplicates removed ({nd['dropped']:,}) with MinHash LSH: {nd['num_perm']} permutations, "
                     f"{'character' if nd['char_ngrams'] else 'word'} {nd['ngram']}-grams, Jaccard threshold {nd['threshold']}, "
                     f"{nd['bands']} bands x {nd['rows']} rows (probability {nd['candidate_probability_at_threshold']:.3f} of flagging "
                     "a pair at the threshold), candidates verified, clusters without chaining.")
    for stage in (manifest.get("pipeline") or {}).get("stages", []):
        if stage.get("origin") == "built-in" and stage["kind"] in ("safety", "exact_dedup", "near_dedup", "pii"):
            continue  # described above in their own words
        dropped = st.get(stage["kind"], {}).get("dropped", 0)
        steps.append(f"Stage {stage['kind']} ({stage.get('origin')}, {stage.get('runs')}): {stage.get('description') or 'no description'}; "
                     f"{dropped:,} record(s) removed by it.")
    if manifest.get("skipped_inputs"):
        steps.append(f"{len(manifest['skipped_inputs'])} input file(s) already processed by earlier runs were skipped.")
    steps.append(f"{o['kept']:,} records were kept. Every input record has one row in the ledger (ledger/*.parquet) "
                 "with its decision and the reason; manifest.json records every digest and the conservation totals.")
    return " ".join(steps)


def personal_information_statement(manifest: dict) -> str:
    """What is known about personal data in the output."""
    pii = manifest.get("pii")
    if not pii:
        return ("No PII detection or redaction was applied by this run: the records may contain personal data as "
                "present in the sources.")
    return (f"PII was detected with Presidio and handled per entity type ({pii.get('actions', {})}); "
            f"counts by entity type: {pii.get('by_entity', {})}.")


def _data_type(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "sc:Boolean"
    if pa.types.is_integer(t):
        return "sc:Integer"
    if pa.types.is_floating(t):
        return "sc:Float"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "sc:Date"
    return "sc:Text"


def card_text(manifest: dict, name: str) -> str:
    """The dataset card: YAML front matter Hugging Face reads, then a readable account."""
    licenses = [lic.lower() for lic in _licenses(manifest)]
    front = {
        "pretty_name": name,
        "license": licenses[0] if len(licenses) == 1 else (licenses or "unknown"),
        "size_categories": [size_category(manifest["conservation"]["overall"]["kept"])],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "shards/*.parquet"}]}],
        "tags": ["hygiene-pipeline", "deduplicated"],
    }
    o = manifest["conservation"]["overall"]
    rows = "\n".join(f"| {s['name']} | {s['kind']} | {s['license'] or '-'} | {manifest['conservation']['per_source'][s['name']]['input']:,} "
                     f"| {manifest['conservation']['per_source'][s['name']]['kept']:,} |" for s in manifest["sources"])
    return (
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n"
        f"# {name}\n\nCleaned by the hygiene pipeline, run `{manifest['run_id']}` "
        f"({manifest['started_at']} to {manifest['ended_at']}).\n\n"
        f"## Sources\n\n| source | format | licence | records in | records kept |\n|---|---|---|---|---|\n{rows}\n\n"
        f"## Processing\n\n{preprocessing_protocol(manifest)}\n\n"
        f"Totals: {o['input']:,} in = {o['kept']:,} kept + {o['dropped']:,} dropped + {o['quarantined']:,} quarantined "
        f"+ {o['rejected']:,} rejected.\n\n"
        f"## Personal and sensitive information\n\n{personal_information_statement(manifest)}\n\n"
        "## Verifying this data\n\n"
        "`manifest.json` lists the sha256 of every shard and ledger part and of the resolved configuration "
        f"(`{manifest['config_sha256']}`). Run `hygiene verify <this folder> --public-key <key.pub>` to check the digests, "
        "the signature, the conservation totals and the chain of earlier runs.\n"
    )


def croissant(manifest: dict, schema: pa.Schema, name: str) -> dict:
    """Croissant 1.0 JSON-LD with file digests and its responsible-AI fields filled from the manifest."""
    shards = manifest["outputs"]["shards"]
    files = [{"@type": "cr:FileObject", "@id": f["path"], "name": f["path"], "contentUrl": f["path"],
              "contentSize": f"{f['bytes']} B", "encodingFormat": "application/x-parquet", "sha256": f["sha256"]}
             for f in shards]
    fileset = {"@type": "cr:FileSet", "@id": "shards", "name": "shards", "includes": "shards/*.parquet",
               "encodingFormat": "application/x-parquet"}
    fields = [{"@type": "cr:Field", "@id": f"default/{f.name}", "name": f.name, "dataType": _data_type(f.type),
               "source": {"fileSet": {"@id": "shards"}, "extract": {"column": f.name}}} for f in schema]
    licenses = _licenses(manifest)
    return {
        "@context": _CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": name,
        "description": f"Cleaned by the hygiene pipeline, run {manifest['run_id']}.",
        "license": licenses if len(licenses) != 1 else licenses[0],
        "version": manifest["run_id"],
        "datePublished": manifest["ended_at"],
        "distribution": files + [fileset],
        "recordSet": [{"@type": "cr:RecordSet", "@id": "default", "name": "default", "field": fields}],
        "rai:dataPreprocessingProtocol": preprocessing_protocol(manifest),
        "rai:personalSensitiveInformation": personal_information_statement(manifest),
        "rai:dataCollection": "; ".join(f"{i['source']}: {i['relpath']} (sha256 {i['sha256']})" for i in manifest["inputs"]),
    }


def write_metadata(directory: Path, manifest: dict, schema: pa.Schema, name: str) -> list[dict]:
    """Write README.md and croissant.json into `directory`; return their output entries."""
    atomic_write_bytes(directory / CARD, card_text(manifest, name).encode())
    atomic_write_json(directory / CROISSANT, croissant(manifest, schema, name))
    return [{"path": p, "bytes": (directory / p).stat().st_size, "sha256": sha256_path(directory / p)} for p in (CARD, CROISSANT)]
