"""Hash lists of known prohibited material: hash types, file formats, validation, freshness.

What a hash *is* lives here (each `HashType` validates and normalises its strings); how it is
*looked up* lives in `pipeline.safety.matcher` and `pipeline.safety.index`.

Formats (the type may be declared per file, per column or per line):

    text    one hash per line; `# key: value` header lines (type, name, version, provider,
            updated); a line `-HASH` is a tombstone (the entry was withdrawn by the list owner)
    csv     header with `hash` and optional `type`, `entry_id`, `list`, `deleted`, `variant`
    jsonl   {"hash": ..., "type": ..., "entry_id": ..., "deleted": false, "variant": ...}

`variant` (optional, free text such as `stored_pixels` or `trimmed`) says which form of the listed
file a hash was computed from when one entry has several (see `hygiene hashlist build`); incidents
repeat it.

Usage::

    hl = load_hash_list(HashListConfig(name="demo", path="lists/demo.txt", type="sha256"))
    hl.entries["sha256"]    # {normalised hash: entry id}
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pipeline.errors import PipelineError
from pipeline.fileio import sha256_path


class HashListError(PipelineError):
    """A hash list is missing, malformed, stale or otherwise unusable: the run stops (fail closed)."""


class HashType:
    """A kind of hash: its name, how to validate and normalise a value, a harmless example."""

    name = ""
    pattern = re.compile("")
    example = ""

    def normalise(self, value: str) -> str:
        """The canonical form of a value, or HashListError-free ValueError if it is not one."""
        v = value.strip().lower()
        if not self.pattern.fullmatch(v):
            raise ValueError(f"not a {self.name} hash")
        return v


class _Hex(HashType):
    def __init__(self, name: str, hex_chars: int, example: str) -> None:
        self.name, self.pattern, self.example = name, re.compile(f"[0-9a-f]{{{hex_chars}}}"), example


class UrlType(HashType):
    """A URL (normalised: lower-case scheme and host, no fragment, no default port) or its sha256."""

    name = "url"
    example = "https://example.com/some/page"

    def normalise(self, value: str) -> str:
        v = value.strip()
        if re.fullmatch(r"[0-9a-fA-F]{64}", v):
            return v.lower()
        if "://" not in v:
            raise ValueError("not a URL or the sha256 of one")
        return normalise_url(v)


def normalise_url(url: str) -> str:
    """Lower-case scheme and host, drop the fragment and a default port, keep path and query."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), host, parts.path or "/", parts.query, ""))


HASH_TYPES: dict[str, HashType] = {
    t.name: t for t in (
        _Hex("md5", 32, "d41d8cd98f00b204e9800998ecf8427e"),
        _Hex("sha1", 40, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        _Hex("sha256", 64, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        _Hex("pdq", 64, "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"),
        _Hex("phash", 16, "c3c3c3c33c3c3c3c"),
        UrlType(),
    )
}
PERCEPTUAL = ("pdq", "phash")


@dataclass
class HashList:
    """A loaded, validated list."""

    name: str
    path: str
    sha256: str
    provider: str | None
    version: str | None
    updated_at: str | None
    entries: dict[str, dict[str, str]] = field(default_factory=dict)   # type -> {hash: entry id}
    variants: dict[str, dict[str, str]] = field(default_factory=dict)  # type -> {hash: variant}, where given
    tombstones: int = 0
    lines: int = 0

    def count(self) -> dict[str, int]:
        """Entries per hash type."""
        return {t: len(v) for t, v in sorted(self.entries.items())}

    def summary(self, max_age_days: int | None, waived: str | None) -> dict:
        """What the manifest records about the list (never the hashes themselves)."""
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "provider": self.provider,
                "version": self.version, "updated_at": self.updated_at, "entries": self.count(),
                "tombstones": self.tombstones, "max_age_days": max_age_days, "waived": waived}


def _detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "text"


def _records(path: Path, fmt: str, default_type: str | None):
    """Yield (line number, hash, type, entry id, deleted, variant) and collect header metadata."""
    meta: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise HashListError(f"{path}: hash list not found; fix the path or waive the list explicitly in the config") from e
    except UnicodeDecodeError as e:
        raise HashListError(f"{path}: not UTF-8 text") from e
    out = []
    if fmt == "text":
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.match(r"#\s*([A-Za-z_]+)\s*:\s*(.+)$", line)
                if m:
                    meta[m.group(1).lower()] = m.group(2).strip()
                continue
            deleted = line.startswith("-")
            value = line[1:].strip() if deleted else line
            out.append((n, value, meta.get("type", default_type), None, deleted, None))
    elif fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "hash" not in reader.fieldnames:
            raise HashListError(f"{path}: a CSV hash list needs a header with a `hash` column")
        for n, row in enumerate(reader, 2):
            deleted = str(row.get("deleted") or "").strip().lower() in ("1", "true", "yes", "deleted")
            out.append((n, row["hash"] or "", row.get("type") or default_type, row.get("entry_id") or None, deleted,
                        row.get("variant") or None))
    elif fmt == "jsonl":
        for n, raw in enumerate(text.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                out.append((n, None, None, None, False, None))
                continue
            if not isinstance(obj, dict) or "hash" not in obj:
                out.append((n, None, None, None, False, None))
                continue
            variant = obj.get("variant")
            out.append((n, str(obj["hash"]), obj.get("type") or default_type, obj.get("entry_id"), bool(obj.get("deleted")),
                        str(variant) if variant else None))
    else:
        raise HashListError(f"{path}: unknown hash list format {fmt!r} (text, csv or jsonl)")
    return out, meta


def load_hash_list(cfg) -> HashList:
    """Load and validate one configured list; any malformed line stops the run, naming its line numbers."""
    from pipeline.storage import local_copy

    path = Path(local_copy(cfg.path))  # a list on a store (s3://...) is read from its local copy
    fmt = _detect_format(path, cfg.format)
    records, meta = _records(path, fmt, cfg.type)
    entries: dict[str, dict[str, str]] = {}
    variants: dict[str, dict[str, str]] = {}
    removed: dict[str, set[str]] = {}
    problems: list[str] = []
    for n, value, typ, entry_id, deleted, variant in records:
        if value is None:
            problems.append(f"line {n}: not a JSON object with a `hash`")
            continue
        if typ is None:
            problems.append(f"line {n}: no hash type (declare `# type: ...`, a `type` column, or `type:` in the config)")
            continue
        if typ not in HASH_TYPES:
            problems.append(f"line {n}: unknown hash type {typ!r} (one of {', '.join(HASH_TYPES)})")
            continue
        try:
            h = HASH_TYPES[typ].normalise(value)
        except ValueError as e:
            problems.append(f"line {n}: {e}")
            continue
        # Operations apply in file order: a tombstone withdraws an entry, a later line may re-add it.
        if deleted:
            removed.setdefault(typ, set()).add(h)
            entries.get(typ, {}).pop(h, None)
            variants.get(typ, {}).pop(h, None)
        else:
            removed.get(typ, set()).discard(h)
            entries.setdefault(typ, {})[h] = entry_id or f"{cfg.name}:{n}"
            if variant:
                variants.setdefault(typ, {})[h] = variant
            else:
                variants.get(typ, {}).pop(h, None)
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise HashListError(f"{path}: {len(problems)} malformed line(s): {shown}. Fix the list; the run did not start")
    updated = getattr(cfg, "updated", None) or meta.get("updated")
    return HashList(
        name=cfg.name, path=str(path), sha256=sha256_path(path), provider=cfg.provider or meta.get("provider"),
        version=cfg.version or meta.get("version"), updated_at=_iso(updated, path),
        entries=entries, variants=variants, tombstones=sum(len(v) for v in removed.values()), lines=len(records),
    )


def _iso(updated: str | None, path: Path) -> str:
    """The list's last update as ISO 8601 (declared in the list or config, else the file's mtime)."""
    if updated:
        try:
            d = datetime.fromisoformat(str(updated))
        except ValueError as e:
            raise HashListError(f"{path}: `updated: {updated}` is not an ISO date (YYYY-MM-DD)") from e
        if d.tzinfo is None:
            d = d.replace(tzinfo=timezone.utc)
        return d.isoformat(timespec="seconds")
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")


def age_days(updated_at: str, today: date | None = None) -> int:
    """Whole days since the list was updated."""
    now = datetime.now(timezone.utc) if today is None else datetime.combine(today, datetime.min.time(), timezone.utc)
    return (now - datetime.fromisoformat(updated_at)).days
