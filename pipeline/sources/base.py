"""What every reader shares: units of work, batches of parsed records, rejections."""

from __future__ import annotations

import glob as globlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import polars_hash as plh
import pyarrow as pa

from pipeline.config import UnitConfig
from pipeline.errors import SourceError
from pipeline.fileio import sha256_path
from pipeline.storage import is_remote, list_objects, local_copy, local_path_of, object_info


@dataclass(frozen=True)
class InputFile:
    """One input file (or dataset directory) of a source, with its digest."""

    source: str
    path: str
    relpath: str
    bytes: int
    sha256: str | None  # None until computed, when the planner deferred it (RunPlan.with_digests)
    mtime_ns: int
    etag: str | None = None  # an object on a store (s3://...): the version the run reads


@dataclass(frozen=True)
class Unit:
    """A slice of one input: the grain of parallel work.

    `start`/`stop` are byte offsets (splittable JSON Lines) or row offsets (Parquet, HF
    datasets); `row_offset` is the number of the unit's first row within its file, so that
    positional record ids do not depend on how a file was split.
    """

    unit_id: int
    source: str
    kind: str
    path: str
    relpath: str
    part: int
    start: int
    stop: int
    row_offset: int
    files: tuple[str, ...] = ()
    file_error: str | None = None
    etag: str | None = None  # an object on a store: the version planned (pipeline.storage.local_copy checks it)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        d = asdict(self)
        d["files"] = list(self.files)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Unit":
        """Inverse of `to_dict`."""
        return cls(**{**d, "files": tuple(d.get("files", ()))})


@dataclass(frozen=True)
class Reject:
    """A record that could not be read, with a reason (never its content)."""

    row: int
    reason: str
    raw_sha256: bytes | None = None
    relpath: str | None = None
    record_id: str | None = None  # the id field's value, when the record has a usable one
    # Images of a rejected record (e.g. a WebDataset sample with a broken sidecar): matched against
    # the hash lists all the same, so a listed image is quarantined, never merely rejected. Never stored.
    images: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    member: str | None = None  # where the image sits inside its file (a tar member name)


@dataclass
class Batch:
    """Parsed records of one unit: a table of valid rows plus the rows rejected while parsing.

    `rows` holds, for each table row, its row number within the file; `relpaths`, when set,
    overrides the unit's relpath per row (a directory of text files).
    """

    table: pa.Table
    rows: np.ndarray
    rejects: list[Reject] = field(default_factory=list)
    relpaths: list[str] | None = None


def expand_paths(patterns: tuple[str, ...], suffixes: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """Expand files, directories and globs into sorted (absolute path, relative path) pairs.

    A directory contributes its files (recursively) whose names end with one of `suffixes`;
    the relative path of a file is taken from the directory or glob root it was found under.
    A pattern that matches nothing is a SourceError: an input that silently vanishes is lost data.
    """
    out: dict[str, str] = {}
    for pattern in patterns:
        if is_remote(pattern):
            for url, rel in list_objects(pattern, suffixes):
                out.setdefault(url, rel)
            continue
        p = Path(local_path_of(pattern))
        pattern = str(p)
        if globlib.has_magic(pattern):
            root = Path(*[part for part in p.parts[: _first_magic(p.parts)]])
            matches = sorted(m for m in globlib.glob(pattern, recursive=True) if Path(m).is_file())
            if not matches:
                raise SourceError(f"{pattern}: the glob matches no file; check the path in the config or --input")
            for m in matches:
                out.setdefault(str(Path(m).resolve()), str(Path(m).relative_to(root)))
        elif p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.is_file() and (suffixes is None or q.name.endswith(suffixes))
            )
            if not found:
                raise SourceError(f"{pattern}: the directory holds no input file ({', '.join(suffixes or ())})")
            for q in found:
                out.setdefault(str(q.resolve()), str(q.relative_to(p)))
        elif p.is_file():
            out.setdefault(str(p.resolve()), p.name)
        else:
            raise SourceError(f"{pattern}: no such file or directory; check the path in the config or --input")
    return sorted(out.items(), key=lambda kv: (kv[1], kv[0]))


def require_unique_relpaths(
    pairs: list[tuple[str, str]], hint: str = "list their common parent directory or a glob instead"
) -> list[tuple[str, str]]:
    """`pairs` unchanged, or a SourceError if two inputs share a relative path.

    Positional record ids are `source/relpath:row`, so two files with the same relative path
    (`2023/part-0.jsonl` and `2024/part-0.jsonl` given as two directories) would give their
    records the same ids, and every record of the second file would be dropped as a repeat.
    """
    seen: dict[str, str] = {}
    for path, rel in pairs:
        if rel in seen:
            raise SourceError(
                f"{seen[rel]} and {path} have the same relative path '{rel}', so their record ids "
                f"would collide; {hint}"
            )
        seen[rel] = path
    return pairs


def _first_magic(parts: tuple[str, ...]) -> int:
    for i, part in enumerate(parts):
        if globlib.has_magic(part):
            return i
    return len(parts)


def describe_file(source: str, path: str, relpath: str, digest: bool = True) -> InputFile:
    """Stat (and digest, unless told not to) one input file, or one object on a store."""
    if is_remote(path):
        info = object_info(path)
        sha = sha256_path(local_copy(path, info.etag)) if digest else None
        return InputFile(source, path, relpath, info.size, sha, info.mtime_ns, etag=info.etag)
    try:
        st = os.stat(path)
        sha = sha256_path(path) if digest else None
    except OSError as e:
        raise SourceError(f"{path}: cannot read input file ({e.strerror})") from e
    return InputFile(source, path, relpath, st.st_size, sha, st.st_mtime_ns)


def string_digests(arr: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """sha256 of each value (UTF-8 bytes) of a string array; a null hashes as the empty string.

    Hashed in Rust over the whole column (polars-hash, the same SHA-256 as hashlib), so worker
    threads do not queue for the GIL once per record.
    """
    if len(arr) == 0:
        return []
    if not (pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type)):
        arr = arr.cast(pa.large_string())
    col = pl.Series("v", arr).fill_null("")
    hexes = col.to_frame().select(plh.col("v").chash.sha2_256().str.decode("hex")).to_series()
    return hexes.to_list()


class Reader:
    """Base of the readers: plans units over a source's inputs and reads one unit as batches."""

    kind: str = ""
    suffixes: tuple[str, ...] | None = None
    # Whether pass 1 keeps the parsed batches for pass 2 (parsing costs far more than reading them back).
    spill: bool = False

    def list_inputs(self, source) -> list[tuple[str, str]]:
        """(absolute path, relative path) of every input of the source; relative paths are unique."""
        return require_unique_relpaths(expand_paths(source.paths, self.suffixes))

    def plan(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "", workers: int = 1) -> list[Unit]:
        """Split the inputs into units; unit ids are assigned later by the planner."""
        raise NotImplementedError

    def read(self, unit: Unit, source, units: UnitConfig) -> Iterator[Batch]:
        """Yield batches of the unit's records, in file order."""
        raise NotImplementedError

    def plan_inputs(self, source, inputs: list[InputFile], units: UnitConfig, work_dir: str = "",
                    workers: int = 1) -> list[Unit]:
        """`plan` over inputs that may be objects on a store: those are planned from their local
        copies, and their units name the objects again."""
        local = {f.path: replace(f, path=local_copy(f.path, f.etag)) for f in inputs if f.etag is not None}
        if not local:
            return self.plan(source, inputs, units, work_dir=work_dir, workers=workers)
        back = {g.path: url for url, g in local.items()}
        planned = self.plan(source, [local.get(f.path, f) for f in inputs], units, work_dir=work_dir, workers=workers)
        return [replace(u, path=back.get(u.path, u.path),
                        files=tuple(_remote_member(m, back) for m in u.files)) for u in planned]

    def describe(self, source, path: str, relpath: str, digest: bool = True) -> InputFile:
        """Size, digest (unless `digest` is false: the planner may defer it) and modification time of one input."""
        return describe_file(source.name, path, relpath, digest)

    def _unit(self, source, f: InputFile, part: int, start: int, stop: int, row_offset: int, **kw) -> Unit:
        return Unit(
            unit_id=-1,
            source=source.name,
            kind=self.kind,
            path=f.path,
            relpath=f.relpath,
            part=part,
            start=start,
            stop=stop,
            row_offset=row_offset,
            etag=f.etag,
            **kw,
        )

    def localized(self, unit: Unit) -> Unit:
        """The unit with its input reachable as a local file (an object on a store is copied here
        first, and must still be the version the run planned with)."""
        if unit.etag is None and not unit.files:
            return unit
        files = tuple(_local_member(m) for m in unit.files)
        path = local_copy(unit.path, unit.etag) if unit.etag is not None else unit.path
        return replace(unit, path=path, files=files)


def _local_member(member: str) -> str:
    """A `path\trelpath` member of a unit of many files, with an object on a store copied here."""
    path, sep, rel = member.partition("\t")
    return f"{local_copy(path)}{sep}{rel}" if is_remote(path) else member


def _remote_member(member: str, back: dict[str, str]) -> str:
    path, sep, rel = member.partition("\t")
    return f"{back.get(path, path)}{sep}{rel}"
