"""Quarantine: incident records for matched items (hashes, ids, locations; never content), owner-only.

Files: `_work/quarantine/uNNNNN.jsonl` per unit during the run, merged at publication into
`RUN/quarantine/incidents.jsonl` (directory 0700, file 0600). Each line: record id, source and
location (uri, row), every computed hash, list name/version/entry id, hash type, distance, which
variant of the image matched (`variant`: `image`, `stored_pixels`, `exif_orientation_6`,
`trimmed`, ...; `variant_hash`: that hash; `list_variant`: the list's own variant column), when,
and `human_viewed: false`.

Usage::

    write_incidents(path, incidents)
    merge_incidents(work_dir, run_dir)           # at publication
    summarize_incidents(run_dir)                 # for `hygiene incidents RUN`
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from pipeline.fileio import sha256_path

INCIDENTS = "quarantine/incidents.jsonl"


def incident(match, record_id: str, source: str, uri: str, location: str, row: int) -> dict:
    """One incident record: ids, location and hashes of a matched item; never its content."""
    return {
        "record_id": record_id, "source": source, "uri": uri, "location": location, "row": row,
        "hashes": match.hashes, "list": match.list, "list_version": match.version, "entry_id": match.entry_id,
        "hash_type": match.hash_type, "distance": match.distance, "matched_on": match.matched_on,
        "variant": getattr(match, "variant", None), "variant_hash": getattr(match, "variant_hash", None),
        "list_variant": getattr(match, "list_variant", None),
        "detected_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "human_viewed": False,
    }


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, lines: list[str]) -> None:
    """Write a file that only its owner can read (created 0600, renamed into place)."""
    _private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_incidents(path: Path, incidents: list[dict]) -> None:
    """One unit's incidents, owner-only."""
    _write_private(path, [json.dumps(i, sort_keys=True) + "\n" for i in incidents])


VARIANT_KINDS = ("exif_orientation", "dihedral", "border_trimmed", "list_variant")


def variant_kinds(rec: dict) -> list[str]:
    """Which kinds of variant an incident matched through (none: the image's own hash, a digest or text):
    `exif_orientation` (the stored pixels of a tagged file, or a tag the copy may have lost),
    `dihedral` (a rotation or flip as such), `border_trimmed` (the picture inside a uniform border),
    `list_variant` (the list's own row for a variant, e.g. the stored pixels of a listed photo)."""
    kinds = []
    for name in (rec.get("variant") or "").split("+"):
        kind = ("border_trimmed" if name == "trimmed" else
                "exif_orientation" if name == "stored_pixels" or name.startswith("exif_orientation_") else
                None if name in ("", "image") else "dihedral")
        if kind and kind not in kinds:
            kinds.append(kind)
    if rec.get("list_variant"):
        kinds.append("list_variant")
    return kinds


def count_variants(rows: list[dict]) -> dict:
    """Matches per variant name and per kind of variant (an incident can count in two kinds)."""
    by_variant: dict[str, int] = {}
    by_kind = {k: 0 for k in VARIANT_KINDS}
    for r in rows:
        name = r.get("variant") or ("image" if r.get("hash_type") in ("pdq", "phash") else r.get("hash_type") or "-")
        by_variant[name] = by_variant.get(name, 0) + 1
        for k in variant_kinds(r):
            by_kind[k] += 1
    return {"by_variant": dict(sorted(by_variant.items())), "variant_matches": by_kind}


def merge_incidents(work: Path, final: Path) -> dict | None:
    """Merge the units' incidents (in unit order) into final/quarantine/incidents.jsonl; its manifest
    entry: path, count, digest, and the matches per variant (no hashes, no ids)."""
    parts = sorted((work / "quarantine").glob("u*.jsonl")) if (work / "quarantine").exists() else []
    if not parts:
        return None
    lines = [line for p in parts for line in p.read_text().splitlines(keepends=True)]
    _write_private(final / INCIDENTS, lines)
    counts = count_variants([json.loads(line) for line in lines if line.strip()])
    return {"path": INCIDENTS, "count": len(lines), "sha256": sha256_path(final / INCIDENTS), **counts}


def add_confirmed(confirmed_list: str, run_dir: Path) -> int:
    """Append the sha256 of every matched item to the local "confirmed" list (refused at ingest next time)."""
    path = Path(run_dir) / INCIDENTS
    if not path.exists():
        return 0
    new = {json.loads(line)["hashes"]["sha256"] for line in path.read_text().splitlines() if line.strip()}
    target = Path(confirmed_list)
    old = set()
    if target.exists():
        old = {line.strip() for line in target.read_text().splitlines() if line.strip() and not line.startswith("#")}
    merged = sorted(old | new)
    _write_private(target, ["# type: sha256\n", "# provider: this pipeline (confirmed matches)\n"] + [h + "\n" for h in merged])
    return len(merged) - len(old)


def summarize_incidents(run_dir: Path) -> dict:
    """Counts per list, hash type and source, for the trust-and-safety team (no content, no hashes)."""
    path = Path(run_dir) / INCIDENTS
    if not path.exists():
        return {"count": 0, "by_list": {}, "by_type": {}, "by_source": {}, "human_viewed": 0, "path": None,
                **count_variants([])}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    def count(key):
        out: dict[str, int] = {}
        for r in rows:
            out[str(r[key])] = out.get(str(r[key]), 0) + 1
        return dict(sorted(out.items()))
    return {"count": len(rows), "by_list": count("list"), "by_type": count("hash_type"), "by_source": count("source"),
            **count_variants(rows),
            "human_viewed": sum(1 for r in rows if r.get("human_viewed")), "path": str(path),
            "records": [{k: r.get(k) for k in ("record_id", "source", "location", "row", "list", "entry_id", "hash_type",
                                                 "distance", "variant", "detected_at")} for r in rows]}
